"""pathway.md version 2, sections 1 and 3, rule by rule at the pure level (fixed now): episodes and their
windows, dates in every form, orders on record, dexamethasone, deterioration, populations; and the
decisions and `explain` they lead to, including the cases that must stay silent."""
import datetime as dt

import pytest

from service.clinical.facts import EPISODE_LEAD, EPISODE_LEAD_RECORDED_ONLY, instant, shift
from service.clinical.pathway import decide_chart, explain
from tests.fhir_records import (CPT, ICD10CM, LOCAL, LOINC, NOW, RXNORM, SNOMED, ago, compression, concept, condition,
                                    day, decompression, dexamethasone, facts_of, hemangioma, in_pathway, motor,
                                    observation, patient, procedure, report, service_request, walking)

PRE_OP = {"surgical-decompression", "corticosteroids", "spine-mri", "preop-cta", "preop-embolization"}


def topics(facts):
    decisions, unchecked = decide_chart(facts)
    return {d.topic for d in decisions} | {"data-unavailable" for _ in unchecked[:1]}


def fired(facts):
    return {o.topic for o in explain(facts) if o.fired}


def reason(facts, topic):
    (outcome,) = [o for o in explain(facts) if o.topic == topic]
    return outcome.reason


# --- the episode and its window ------------------------------------------------------------------------

def test_the_latest_active_compression_is_the_episode():
    old = compression(onset=day(900), clinical="resolved")
    new = compression(onset=day(5))
    facts = facts_of(hemangioma(onset=day(900)), old, new)
    assert facts.compression.ref == f"Condition/{new['id']}" and facts.window_start == (NOW - dt.timedelta(35)).date()


def test_window_is_start_minus_30_days_or_365_from_a_recorded_date_alone():
    assert EPISODE_LEAD == dt.timedelta(days=30) and EPISODE_LEAD_RECORDED_ONLY == dt.timedelta(days=365)
    recorded_only = compression(recordedDate=day(10))
    facts = facts_of(hemangioma(), recorded_only, decompression(day(300)))
    assert facts.episode_start_from == "recordedDate" and facts.operated          # 300 days < 10 + 365
    assert not facts_of(hemangioma(), recorded_only, decompression(day(376))).operated


def test_unknown_episode_start_holds_everything():
    facts = facts_of(hemangioma(), compression(), decompression("2012-03-01"))
    assert facts.window_start is None and facts.operated


@pytest.mark.parametrize("onset, operated", [
    ({"onsetAge": {"value": 54, "unit": "a", "system": "http://unitsofmeasure.org", "code": "a"}}, False),
    ({"onsetPeriod": {"start": day(20)}}, False),
    ({"onsetString": day(20)}, False),
    ({"onsetString": "last spring"}, True),        # not ISO: unknown start, the window holds everything
])
def test_every_onset_form_dates_the_episode(onset, operated):
    """Born 1972-05-20, the compression began at 54 (2026): a laminectomy of 2019 is not this episode's."""
    facts = facts_of(patient("1972-05-20"), hemangioma(), compression(**onset), decompression("2019-03-01"))
    assert facts.operated is operated


@pytest.mark.parametrize("performed", [
    {"performedDateTime": day(3)}, {"performedPeriod": {"start": day(3)}}, {"performedString": day(3)},
    {"performedAge": {"value": 56, "unit": "a", "system": "http://unitsofmeasure.org", "code": "a"}},
    {"performedRange": {"low": {"value": 56, "unit": "a", "system": "http://unitsofmeasure.org", "code": "a"}}},
])
def test_every_performed_form_dates_a_procedure(performed):
    operation = {**decompression(None), **performed}
    facts = facts_of(patient("1970-10-20"), hemangioma(onset=day(30)), compression(onset=day(10)), operation)
    assert facts.operated


def test_undated_decompression_never_makes_operated_and_the_card_names_it():
    facts = in_pathway(decompression(None))
    assert not facts.operated and facts.earlier_operation is None and facts.undated_decompression is not None
    assert topics(facts) == PRE_OP
    assert not facts.recurrence


def _card(facts, topic):
    from tests.fixture_cards import ENGINE
    (found,) = [c for c in ENGINE.cards(*decide_chart(facts), facts, "http://x/p") if c["source"]["topic"]["code"] == topic]
    return found


@pytest.mark.parametrize("earlier", [None, "2015-01-01"], ids=["recurrent-status", "dated-earlier-operation"])
def test_an_undated_decompression_is_named_on_the_recurrence_radiotherapy_card(earlier):
    """Section 3: an undated decompression never counts as an earlier operation; 'the cards that would change
    name it'. Dated, it could be the earlier operation the recurrence radiotherapy card counts from."""
    undated = decompression(None, id="dec-undated")
    operation = [decompression(earlier, id="dec-old")] if earlier else []
    facts = facts_of(hemangioma(onset=day(30)), compression(onset=day(5), clinical="recurrence"), undated, *operation)
    assert facts.recurrence and facts.undated_decompression is not None
    card = _card(facts, "adjuvant-radiotherapy")
    assert "A decompression without a date is on record" in card["detail"] and "Procedure/dec-undated" in card["detail"]
    assert "postoperative" not in card["detail"].lower() and "wound has healed" not in card["detail"]
    # without one, the card says nothing of it
    plain = facts_of(hemangioma(onset=day(30)), compression(onset=day(5), clinical="recurrence"), *operation)
    assert "without a date" not in _card(plain, "adjuvant-radiotherapy")["detail"]


def test_an_undated_decompression_is_not_named_on_the_post_operative_radiotherapy_card():
    """A dated operation in the episode is the one the post-operative reminder counts from: nothing changes."""
    facts = in_pathway(decompression(day(3), id="dec-now"), decompression(None, id="dec-undated"))
    assert facts.post_operative
    assert "without a date" not in _card(facts, "adjuvant-radiotherapy")["detail"]


def test_dates_at_the_ends_of_the_calendar_never_overflow():
    assert instant("0001-01-01T00:00:00+14:00").year == 1 and instant("9999-12-31T23:59:59-14:00").year == 9999
    assert shift(instant("0001-01-01"), -dt.timedelta(days=30)).year == 1
    facts = facts_of(hemangioma(onset="0001-01-01"), compression(onset="0001-01-01"), decompression("9999-12-31"),
                     dexamethasone("9999-12-31"), walking("ambulatory", "0001-01-01T00:00:00+14:00"))
    assert facts.operated and topics(facts) >= {"adjuvant-radiotherapy"}


# --- operated wins, post-operative, recurrence -------------------------------------------------------

def test_post_operative_whatever_the_compression_or_hemangioma_status():
    facts = facts_of(hemangioma(onset=day(400), clinical="resolved"), compression(onset=day(400), clinical="resolved"),
                     decompression(day(390)))
    assert facts.post_operative and topics(facts) == {"adjuvant-radiotherapy", "posterior-fixation"}


def test_operated_wins_over_recurrence():
    facts = in_pathway(decompression("2015-01-01"), decompression(day(2)))
    assert facts.post_operative and not facts.recurrence


def test_new_compression_after_an_old_operation_is_a_recurrence():
    facts = in_pathway(decompression("2015-01-01"), procedure(CPT, "22842", "2015-01-01"))
    assert facts.recurrence and facts.pre_operative and facts.earlier_operation.when == dt.date(2015, 1, 1)
    assert topics(facts) == PRE_OP | {"adjuvant-radiotherapy"}
    assert "posterior-fixation" not in topics(facts)


def test_recurrence_by_status_with_a_resolved_hemangioma():
    facts = facts_of(hemangioma(clinical="resolved"), compression(onset=day(5), clinical="recurrence"))
    assert facts.recurrence and topics(facts) == PRE_OP | {"adjuvant-radiotherapy"}
    # with any radiotherapy ever on record (no dated earlier operation), the reminder is silent
    with_rt = facts_of(hemangioma(clinical="resolved"), compression(onset=day(5), clinical="recurrence"),
                       procedure(SNOMED, "33195004", "2010-05-01"))
    assert "adjuvant-radiotherapy" not in topics(with_rt)


def test_radiotherapy_before_the_operation_does_not_count_but_an_order_in_the_episode_does():
    facts = in_pathway(procedure(SNOMED, "33195004", day(20)), decompression(day(3)), procedure(CPT, "22842", day(3)))
    assert "adjuvant-radiotherapy" in topics(facts)
    planned = in_pathway(service_request(CPT, "77427", day(20)), decompression(day(3)), procedure(CPT, "22842", day(3)))
    assert topics(planned) == set()


def test_resolved_hemangioma_without_recurrence_or_operation_is_silent():
    assert topics(facts_of(hemangioma(clinical="resolved"), compression(onset=day(3)))) == set()


def test_fixation_of_another_episode_does_not_count():
    facts = in_pathway(decompression(day(3)), procedure(CPT, "22842", "2015-01-01"))
    assert "posterior-fixation" in topics(facts)
    assert "no posterior instrumentation" in reason(facts, "posterior-fixation")


# --- scope narrowed -------------------------------------------------------------------------------------

def test_deceased_patient_gets_nothing():
    assert topics(in_pathway(patient() | {"deceasedBoolean": True})) == set()
    assert topics(in_pathway(patient() | {"deceasedDateTime": day(1)})) == set()
    assert topics(in_pathway(patient() | {"deceasedBoolean": False})) == PRE_OP


@pytest.mark.parametrize("hours_ago, silent", [(2, True), (47, True), (49, False)])
def test_surgery_under_way_silences_pre_operative_cards(hours_ago, silent):
    facts = in_pathway(decompression(ago(hours=hours_ago), status="in-progress"))
    assert (topics(facts) == set()) is silent
    if silent:
        assert reason(facts, "surgical-decompression").startswith("surgery under way")


def test_competing_cause_leaves_only_the_differential_card():
    disc = condition(concept(ICD10CM, "M51.04", "Disc disorder with myelopathy, thoracic"), onset=day(5))
    facts = in_pathway(disc)
    assert topics(facts) == {"differential-diagnosis"}
    assert "competing cause" in reason(facts, "spine-mri")
    # a resolved or refuted competing condition does not compete
    assert topics(in_pathway(condition(concept(ICD10CM, "M51.04"), clinical="resolved"))) == PRE_OP
    assert topics(in_pathway(condition(concept(SNOMED, "94222008"), verification="refuted"))) == PRE_OP


def test_competing_cause_narrows_an_operated_patient_too():
    """Section 1: with an active competing cause only the differential card fires; being post-operative
    (operated wins over recurrence and statuses) does not bring back the radiotherapy or fixation card."""
    metastasis = condition(concept(ICD10CM, "C79.51", "Secondary malignant neoplasm of bone"), onset=day(40))
    facts = in_pathway(decompression(day(3)), metastasis)
    assert facts.post_operative and topics(facts) == {"differential-diagnosis"}
    assert "competing cause" in reason(facts, "adjuvant-radiotherapy")
    assert topics(in_pathway(decompression(day(3)), {**metastasis, "id": "c-old", "clinicalStatus": concept(
        "http://terminology.hl7.org/CodeSystem/condition-clinical", "resolved")})) == {
        "adjuvant-radiotherapy", "posterior-fixation"}


def test_unconfirmed_compression_only_steroids_mri_and_differential():
    facts = facts_of(hemangioma(onset=day(10)), compression(onset=day(2), verification="provisional"))
    assert topics(facts) == {"corticosteroids", "spine-mri", "differential-diagnosis"}


@pytest.mark.parametrize("compression_site, in_scope", [("T9", True), ("T7", True), ("T11", False), (None, True)])
def test_same_lesion_within_one_level(compression_site, in_scope):
    sites = {"T9": "82687006", "T7": "62487009", "T11": "12989004"}
    kw = {"sites": [concept(SNOMED, sites[compression_site])]} if compression_site else {}
    facts = facts_of(hemangioma(onset=day(10)), compression(onset=day(3), **kw))   # hemangioma at T8
    assert facts.in_pathway is in_scope
    if not in_scope:
        assert "more than one level apart" in facts.scope_reason


# --- orders on record -------------------------------------------------------------------------------------

@pytest.mark.parametrize("extra, silenced", [
    ({}, True),
    ({"status": "on-hold"}, True),
    ({"status": "draft"}, False),
    ({"status": "revoked"}, False),
    ({"intent": "proposal"}, False),
    ({"intent": "filler-order"}, True),
    ({"doNotPerform": True}, False),
])
def test_an_mri_order_on_record_silences_spine_mri(extra, silenced):
    order = {**service_request(LOINC, "36067-7", day(1)), **extra}
    assert ("spine-mri" not in topics(in_pathway(order))) is silenced


def test_an_mri_from_an_earlier_episode_does_not_count():
    assert "spine-mri" in topics(in_pathway(report(LOINC, "36067-7", "2018-01-01")))
    assert "preop-embolization" in topics(in_pathway(procedure(CPT, "37243", "2018-01-01")))


def test_catheter_angiography_maps_the_vessels():
    facts = in_pathway(report(LOINC, "24925-0", day(1)))
    assert "preop-cta" not in topics(facts) and "vessels mapped" in reason(facts, "preop-cta")


def test_a_decompression_ordered_is_said_and_not_suggested_again():
    facts = in_pathway(service_request(CPT, "63046", day(1)))
    assert facts.decompression_ordered is not None and "surgical-decompression" in topics(facts)


# --- dexamethasone ------------------------------------------------------------------------------------

def med(status="active", when=None, **medication):
    res = {"resourceType": "MedicationRequest", "id": f"mr-{status}-{len(str(medication))}", "status": status,
           "intent": "order", "subject": {"reference": "Patient/unit-1"}, "authoredOn": when or day(2)}
    return {**res, **(medication or {"medicationCodeableConcept": concept(RXNORM, "1116927")})}


def named(text):
    """A medication given by its free text alone (no coding)."""
    return {"medicationCodeableConcept": {"text": text}}


@pytest.mark.parametrize("medication, counts", [
    ({"medicationCodeableConcept": concept(RXNORM, "999999", "Dexamethasone 4 mg tablet")}, True),   # text fallback
    ({"medicationCodeableConcept": concept(RXNORM, "999998", "dexamethasone 4 MG/ML Injectable Solution")}, True),
    (named("dexamethasone 1 MG/ML / tobramycin 3 MG/ML Ophthalmic Suspension"), False),
    ({"medicationCodeableConcept": concept(RXNORM, "3264", "dexamethasone"),
      "dosageInstruction": [{"route": {"coding": [{"system": SNOMED, "code": "447694001",
                                                   "display": "Respiratory tract route"}]}}]}, False),
    (named("dexamethasone 0.1% eye drops"), False),
    (named("Dexamethasone / tobramycin ophthalmic"), False),
    (named("neomycin and dexamethasone"), False),
    # a second ingredient after an unspaced slash, as EHRs write combinations; a unit's slash is none
    (named("dexamethasone/neomycin"), False),
    (named("Neomycin/Polymyxin B/Dexamethasone suspension"), False),
    (named("tobramycin/dexamethasone"), False),
    # a hyphen attached to dexamethasone joins a second ingredient, as EHRs and US generic names write combinations
    (named("neomycin-polymyxin-dexamethasone"), False),
    (named("neomycin-polymyxin B-dexamethasone"), False),
    (named("tobramycin-dexamethasone"), False),
    (named("dexamethasone-tobramycin"), False),
    (named("ciprofloxacin-dexamethasone"), False),
    (named("dexamethasone-neomycin"), False),
    (named("Neomycin-Dexamethasone Sodium Phosphate"), False),
    (named("Tobramycin\u2013Dexamethasone 0.3 %-0.1 %"), False),          # an en dash
    (named("neomycin-" * 10_000 + "dexamethasone"), False),               # 90 KB, one pass
    # a dash after dexamethasone's salt or strength, a spaced dash, an em dash (review11)
    (named("Dexamethasone Sodium Phosphate-Neomycin Sulfate"), False),
    (named("dexamethasone 0.1%-tobramycin 0.3%"), False),
    (named("tobramycin 0.3%-dexamethasone 0.1%"), False),
    (named("dexamethasone 1 mg/mL-tobramycin 3 mg/mL"), False),
    (named("Neomycin - Polymyxin B - Dexamethasone"), False),
    (named("dexamethasone - tobramycin"), False),
    (named("tobramycin\u2014dexamethasone"), False),                      # an em dash
    (named("Sulfacetamide Sodium-Dexamethasone"), False),                 # another ingredient's salt before it
    (named("dexamethasone 0.1%" + "-%" * 50_000 + "-tobramycin"), False),  # 100 KB
    # eye, ear and skin forms as drug databases and sigs abbreviate them (review11)
    (named("DEXAMETHASONE 0.1% OPHTH SUSP"), False),
    (named("dexamethasone 0.1% ophth soln"), False),
    (named("dexamethasone OPH susp"), False),
    (named("dexamethasone 0.05% top oint"), False),
    (named("dexamethasone 1 gtt OU qid"), False),
    (named("dexamethasone 0.1% 2 gtts AU tid"), False),
    (named("Ozurdex (dexamethasone) 0.7 mg implant"), False),
    ({**named("dexamethasone 0.1% 1 drop"), "dosageInstruction": [{"route": {"text": "Both eyes"}}]}, False),
    # ... but not a hyphen in a dose or a word of dexamethasone's own product (its salt, brand form, dose, route)
    (named("dexamethasone"), True),
    (named("dexamethasone 4 mg tablet"), True),
    (named("dexamethasone 4-mg tablet"), True),
    (named("dexamethasone sodium phosphate 4 mg/mL injection"), True),
    (named("high-dose dexamethasone"), True),
    (named("high-dose-dexamethasone"), True),
    (named("dexamethasone (pre-op)"), True),
    (named("dexamethasone 10 mg IV once, then 4 mg q6h"), True),
    (named("Dexamethasone Intensol"), True),
    (named("Dexamethasone-Intensol 1 mg/mL"), True),
    (named("dexamethasone-sodium phosphate"), True),
    (named("IV-dexamethasone 10 mg"), True),
    (named("dexamethasone-oral 4 mg"), True),
    (named("dexamethasone - 4 mg tablet"), True),                         # a spaced dash before a dose
    # a dash joining a form, route, preservative or known labeller to dexamethasone (review11)
    (named("Inj-Dexamethasone 8 mg"), True),
    (named("dexamethasone-IVPB 10 mg"), True),
    (named("dexamethasone-preservative free 10 mg/mL"), True),
    (named("PMS-Dexamethasone 4 mg tablet"), True),
    (named("APO-Dexamethasone 0.5 mg"), True),
    (named("DEXAMETHASONE-OMEGA 4 mg/mL"), True),
    (named("Inj-" * 25_000 + "dexamethasone"), True),                    # 100 KB
    (named("high-" * 20_000 + "dexamethasone"), True),                    # 100 KB
    (named("dexamethasone 10 mg/mL injection"), True),
    (named("Dexamethasone 0.5 mg/5 mL oral solution"), True),
    (named("dexamethasone sodium phosphate 4 MCG/ML"), True),
    (named("dexamethasone 4 mg tablets/day"), True),
    (named("dexamethasone sodium phosphate 4 mg/mL solution/injection"), True),
    (named("Dexamethasone 1 mg/mL oral soln/elixir"), True),
    (named("Dexamethasone cream"), False),
    ({"medicationCodeableConcept": concept(RXNORM, "197582"),
      "dosageInstruction": [{"route": {"text": "Ophthalmic"}}]}, False),
    ({"contained": [{"resourceType": "Medication", "id": "m", "code": concept(RXNORM, "1116927")}],
      "medicationReference": {"reference": "#m"}}, True),
    ({"medicationReference": {"reference": "Medication/dex-1"}}, True),        # the Medication is sent too
    ({"medicationReference": {"reference": "Medication/unknown"}}, False),
])
def test_dexamethasone_forms(medication, counts):
    sent = {"resourceType": "Medication", "id": "dex-1", "code": concept(RXNORM, "1812194")}
    facts = in_pathway(med(**medication), sent)
    assert (facts.dexamethasone is not None) is counts
    assert ("corticosteroids" in topics(facts)) is not counts


@pytest.mark.parametrize("status, counted, ongoing", [("active", True, True), ("on-hold", True, True),
                                                      ("completed", True, False), ("stopped", True, False),
                                                      ("cancelled", False, False), ("draft", False, False)])
def test_dexamethasone_statuses(status, counted, ongoing):
    facts = in_pathway(med(status))
    assert (facts.dexamethasone is not None) is counted and facts.dexamethasone_ongoing is ongoing


def test_dexamethasone_administration_counts_as_given():
    given = {"resourceType": "MedicationAdministration", "id": "ma-1", "status": "completed",
             "subject": {"reference": "Patient/unit-1"}, "medicationCodeableConcept": concept(RXNORM, "1116927"),
             "effectiveDateTime": ago(1)}
    facts = in_pathway(given)
    assert facts.dexamethasone is not None and not facts.dexamethasone_ongoing
    assert "corticosteroids" not in topics(facts)


def test_dexamethasone_of_an_earlier_episode_does_not_count():
    assert "corticosteroids" in topics(in_pathway(med("completed", "2019-01-01")))


def dosed(mg, frequency=1, start=20):
    dosage = {"timing": {"repeat": {"frequency": frequency, "period": 1, "periodUnit": "d",
                                    "boundsPeriod": {"start": day(start)}}},
              "doseAndRate": [{"doseQuantity": {"value": mg, "unit": "mg", "system": "http://unitsofmeasure.org",
                                                "code": "mg"}}]}
    return med(dosageInstruction=[dosage], medicationCodeableConcept=concept(RXNORM, "1116927"))


@pytest.mark.parametrize("order, fires", [(dosed(16), False), (dosed(8, 4), True), (dosed(96), True),
                                          (med(when=day(20)), True)])          # no structured dose: unknown
def test_steroid_duration_only_for_high_or_unknown_dose(order, fires):
    facts = in_pathway(order)
    assert facts.dexamethasone_days == 20
    assert ("steroid-duration" in topics(facts)) is fires


@pytest.mark.parametrize("started, fires", [(13, False), (14, True)])
def test_course_days_count_from_the_course_start(started, fires):
    facts = in_pathway(med(when=day(started)))
    assert facts.dexamethasone_days == started and ("steroid-duration" in topics(facts)) is fires


# --- deterioration --------------------------------------------------------------------------------------

def test_rapid_only_while_the_worsening_is_the_latest_of_its_series():
    worse = (walking("ambulatory", ago(3)), walking("non-ambulatory", ago(2)))
    assert in_pathway(*worse).rapid_deterioration
    recovered = in_pathway(*worse, walking("ambulatory", ago(1)))
    assert not recovered.rapid_deterioration and not recovered.deterioration_lapsed


def test_a_later_false_flag_clears_a_true_one():
    flag = "rapidly-progressive-neurologic-deficit"
    assert in_pathway(observation(flag, ago(2), valueBoolean=True)).rapid_deterioration
    assert not in_pathway(observation(flag, ago(2), valueBoolean=True),
                          observation(flag, ago(1), valueBoolean=False)).rapid_deterioration


def test_a_stale_or_abated_rapid_condition_does_not_count():
    code = concept(LOCAL, "rapidly-progressive-neurologic-deficit")
    assert not in_pathway(condition(code, onset=ago(20))).rapid_deterioration
    assert not in_pathway(condition(code, onset=ago(1), abatementDateTime=ago(0))).rapid_deterioration
    assert not in_pathway(condition(code, onset=ago(1), clinical="resolved")).rapid_deterioration


def test_lapsed_deterioration_withholds_the_stable_suggestions():
    facts = in_pathway(walking("ambulatory", ago(21)), walking("non-ambulatory", ago(20)))
    assert facts.deterioration_lapsed and not facts.rapid_deterioration
    assert topics(facts) == PRE_OP
    assert "embolization-deferred" not in topics(facts)


def test_motor_score_components_and_ranges():
    parts = [{"code": concept(LOCAL, "x"), "valueInteger": 20}, {"code": concept(LOCAL, "y"), "valueInteger": 20}]
    summed = observation("lower-extremity-motor-score", ago(1), component=parts)
    assert in_pathway(motor(46, ago(2)), summed).rapid_deterioration                 # 46 -> 40
    assert not in_pathway(motor(99, ago(2)), motor(40, ago(1))).rapid_deterioration  # 99 is out of range


def test_rapid_deterioration_cost_is_linear_in_the_readings():
    """Counting work, not time: the worsening search looks at each reading a bounded number of times."""
    from service.clinical import facts as module
    calls = []

    def counted(best, later):
        calls.append(1)
        return best - later >= 5
    for n in (1000, 16000):
        calls.clear()
        series = [(instant(ago(hours=n - i)), None, float(40 + (i % 3))) for i in range(n)]
        module.worsenings(series, counted)
        assert n - 1 <= len(calls) <= n       # one comparison per reading after the first


# --- populations -------------------------------------------------------------------------------------------

def test_age_unknown_without_a_birth_date():
    facts = facts_of(hemangioma(onset=day(10)), compression(onset=day(3)), {"resourceType": "Patient", "id": "unit-1"})
    assert facts.age is None and facts.age_unknown


def test_multilevel_thoracic_needs_two_levels_between_t5_and_t10():
    two = hemangioma(sites=[concept(SNOMED, "56401006"), concept(SNOMED, "7610001")])
    assert facts_of(two, compression()).multilevel_thoracic
    assert not facts_of(hemangioma(sites=[concept(SNOMED, "56401006"), concept(SNOMED, "12989004")]),
                        compression()).multilevel_thoracic


def pregnancy_status(answer, when):
    return {"resourceType": "Observation", "id": f"ps-{answer}-{when}", "status": "final",
            "subject": {"reference": "Patient/unit-1"}, "code": concept(LOINC, "82810-3"),
            "effectiveDateTime": when, "valueCodeableConcept": concept(LOINC, answer)}


def test_pregnancy_by_condition_within_294_days_unless_a_later_status_says_otherwise():
    pregnant = condition(concept(ICD10CM, "Z33.1"), onset=day(100))
    assert in_pathway(pregnant).pregnancy is not None
    assert in_pathway(pregnant, pregnancy_status("LA26683-5", day(10))).pregnancy is None      # not pregnant
    assert in_pathway(pregnancy_status("LA15173-0", day(30))).pregnancy is not None
    assert in_pathway(pregnancy_status("LA15173-0", day(300))).pregnancy is None


@pytest.mark.parametrize("injured, trauma", [(10, True), (14, True), (15, False), (None, False)])
def test_minor_trauma_in_the_14_days_before_the_episode(injured, trauma):
    fall = condition(concept(ICD10CM, "W19.XXXA"), onset=day(injured) if injured else None)
    facts = facts_of(hemangioma(onset=day(20)), compression(onset=day(0)), fall)
    assert (facts.injury is not None) is trauma


# --- explain -------------------------------------------------------------------------------------------------

def test_explain_gives_every_topic_one_reason_and_agrees_with_the_decisions():
    facts = in_pathway(report(LOINC, "36067-7", day(4)))
    outcomes = explain(facts)
    assert [o.topic for o in outcomes][:3] == ["surgical-decompression", "corticosteroids", "spine-mri"]
    assert fired(facts) == topics(facts)
    mri = reason(facts, "spine-mri")
    assert mri.startswith("MRI of the entire spine in this episode: ") and "DiagnosticReport/" in mri
    assert day(4) in mri


def test_explain_out_of_scope_says_why():
    facts = facts_of(hemangioma())
    assert all(o.reason == "out of scope: no spinal cord compression on record" for o in explain(facts))


def test_fact_lines_print_the_facts_behind_the_decisions():
    from service.clinical.pathway import fact_lines
    facts = in_pathway(walking("ambulatory", ago(2)), walking("non-ambulatory", ago(1)), med(when=day(3)))
    lines = dict(fact_lines(facts))
    assert lines["scope"] == "pre-operative"
    assert "cannot walk" in lines["rapid deterioration"] and "Observation/" in lines["rapid deterioration"]
    assert lines["dexamethasone"].startswith(f"ongoing, started {day(3)}, day 3, daily dose unknown")
    assert dict(fact_lines(facts_of(hemangioma())))["scope"] == "out of scope: no spinal cord compression on record"


def test_recurrence_by_status_without_an_earlier_operation_is_worded_so():
    from service.clinical.cards import template_variables
    from service.clinical.pathway import patient_flags
    facts = facts_of(hemangioma(clinical="recurrence"), compression(onset=day(3)))
    assert facts.recurrence and "earlier_operation" not in patient_flags(facts)
    assert template_variables(facts)["earlier_date"] == "an unknown date"
    from tests.fixture_cards import ENGINE
    (rt,) = [c for c in ENGINE.cards(*decide_chart(facts), facts, "http://x/p")
             if c["source"]["topic"]["code"] == "adjuvant-radiotherapy"]
    assert rt["summary"].startswith("Recurrent AVH at T8, no radiotherapy on record")
    assert "earlier operation" not in rt["detail"] and "operated" not in rt["summary"].lower()


def test_every_fact_derivation_is_linear_in_the_chart(monkeypatch):
    """Counting work, not time: the dates read while deriving the facts of N and 16 N same-code readings."""
    from service.clinical import facts as module
    calls = []
    original = module.instant

    def counted(value):
        calls.append(1)
        return original(value)
    monkeypatch.setattr(module, "instant", counted)
    work = []
    for n in (200, 3200):
        readings = [walking(("ambulatory", "non-ambulatory")[i % 2], ago(hours=i)) for i in range(n)]
        readings += [motor(40 + i % 7, ago(hours=i)) for i in range(n)]
        calls.clear()
        in_pathway(*readings)
        work.append(len(calls))
    assert work[1] <= 16 * work[0] * 1.1


def test_an_unreadable_patient_is_named_on_the_cards_that_read_age():
    from service.clinical.cards import left_out_notes
    facts = in_pathway({"resourceType": "Patient", "id": "unit-1", "birthDate": "1970-13-45"})
    assert facts.age is None
    decisions, _ = decide_chart(facts)
    named = {d.topic for d in decisions if any("Patient/unit-1" in n for n in left_out_notes(d, facts))}
    assert {"surgical-decompression", "corticosteroids"} <= named and "spine-mri" not in named


def test_a_coded_site_outside_the_spine_excludes_a_d18_hemangioma_whatever_its_text_says():
    liver = condition(concept(ICD10CM, "D18.09", "Hemangioma, spine and liver"), onset=day(10),
                      sites=[concept(SNOMED, "10200004", "Liver structure")])
    assert not facts_of(liver, compression(onset=day(3))).in_pathway
    text_site = condition(concept(ICD10CM, "D18.09"), onset=day(10), bodySite=[{"text": "T9 vertebral body"}])
    assert facts_of(text_site, compression(onset=day(3))).in_pathway
