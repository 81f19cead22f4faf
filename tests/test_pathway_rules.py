"""pathway.md section 4 at the pure level: facts -> decisions, and every fixture through the engine."""
import json
import random

import pytest

from service.clinical.cards import template_variables
from service.clinical.orders import decide_discharge
from service.clinical.pathway import decide_chart
from service.fastjson import encode
from service.fhir.prefetch import Prefetched
from tests.deployment_support import without_uuids
from tests.fhir_records import (COMPRESSION_ICD, CPT, HEMANGIOMA_T7_AGGRESSIVE, ICD10CM, LOCAL, LOINC, NOW, PATIENT_ID,
                                 SNOMED, T7, ago, compression, concept, condition, day, decompression, dexamethasone,
                                 facts_of, hemangioma, in_pathway, patient, procedure, report, service_request, walking)
from tests.fixture_cards import ENGINE, all_fixtures, chart_cards, fixture

PRE_OP_ALL = {"surgical-decompression", "corticosteroids", "spine-mri", "preop-cta", "preop-embolization"}


def decided(facts):
    decisions, unchecked = decide_chart(facts)
    assert unchecked == []
    return {d.topic for d in decisions}


@pytest.mark.parametrize("fx", all_fixtures(), ids=lambda f: f.name)
def test_fixture_bundle_as_a_whole_gives_its_expected_cards(fx):
    """The whole bundle (vitals, labs, unrelated problems included) at a fixed now: selection works."""
    assert {c["source"]["topic"]["code"] for c in chart_cards(fx)} == fx.expected_topics


@pytest.mark.parametrize("fx", all_fixtures(), ids=lambda f: f.name)
def test_resource_order_never_changes_the_cards(fx):
    resources = fx.resources()
    for order in (resources[::-1], random.Random(fx.name).sample(resources, len(resources))):
        answer = ENGINE.chart_answer(Prefetched(resources=order), fx.patient_id, NOW, "http://x/p")
        assert {c["source"]["topic"]["code"] for c in answer.cards} == fx.expected_topics


@pytest.mark.parametrize("fx", [f for f in all_fixtures() if f.expected_topics], ids=lambda f: f.name)
def test_every_summary_variant_fits_for_every_patient(fx):
    """No summary template, under any flag, overflows 140 characters with this patient's facts."""
    facts = ENGINE.facts(Prefetched(resources=fx.resources()), fx.patient_id, NOW)
    variables = template_variables(facts)
    for topic, definition in ENGINE.library.definitions.items():
        for variant in definition.data["summary"]:
            text = variant["text"].format_map(variables)
            assert len(text) < 140, (topic, text)


def test_pre_operative_patient_with_nothing_on_record_gets_the_whole_workup():
    assert decided(in_pathway()) == PRE_OP_ALL


def test_each_workup_item_on_record_silences_its_own_card_only():
    assert decided(in_pathway(dexamethasone(day(1)))) == PRE_OP_ALL - {"corticosteroids"}
    assert decided(in_pathway(report(LOINC, "36400-0", day(1)))) == PRE_OP_ALL - {"spine-mri"}
    assert decided(in_pathway(report(LOCAL, "ct-angiography-spine", day(1)))) == PRE_OP_ALL - {"preop-cta"}
    assert decided(in_pathway(procedure(CPT, "61624", day(1)))) == PRE_OP_ALL - {"preop-embolization"}


def test_combined_dexamethasone_drops_get_the_cards_of_a_patient_with_no_dexamethasone():
    """Eye or ear drops named "neomycin-polymyxin-dexamethasone" (no form named) are no systemic dexamethasone: the
    cards do not read as if steroids were already given to a patient whose aggressive hemangioma compresses the cord."""
    chart = [patient("1970-05-01"), condition(HEMANGIOMA_T7_AGGRESSIVE, onset=day(10), sites=[concept(*T7)]),
             condition(COMPRESSION_ICD, onset=day(10))]

    def cards(*medications):
        answer = ENGINE.chart_answer(Prefetched(resources=chart + list(medications)), PATIENT_ID, NOW, "http://x/p")
        return without_uuids(answer.cards)

    no_dexamethasone = cards()
    assert "corticosteroids" in {c["source"]["topic"]["code"] for c in no_dexamethasone}
    assert cards(dexamethasone(day(2), code={"text": "neomycin-polymyxin-dexamethasone drops"})) == no_dexamethasone
    given = cards(dexamethasone(day(2), code={"text": "dexamethasone 4-mg tablet"}))
    assert "corticosteroids" not in {c["source"]["topic"]["code"] for c in given}


def test_rapid_deterioration_swaps_embolization_for_going_straight_to_surgery():
    rapid = in_pathway(walking("ambulatory", ago(2)), walking("non-ambulatory", ago(1)))
    assert decided(rapid) == PRE_OP_ALL - {"preop-embolization"} | {"embolization-deferred"}
    # an embolization already done does not change the advice not to wait for one
    assert "embolization-deferred" in decided(
        in_pathway(walking("ambulatory", ago(2)), walking("non-ambulatory", ago(1)), procedure(CPT, "37243", ago(1))))


def test_operated_patient_gets_only_post_operative_cards():
    assert decided(in_pathway(decompression(day(3)))) == {"adjuvant-radiotherapy", "posterior-fixation"}
    assert decided(in_pathway(decompression(day(3)), procedure(CPT, "22842", day(3)))) == {"adjuvant-radiotherapy"}
    # fusion alone is not fixation (pathway.md v2 section 2)
    assert decided(in_pathway(decompression(day(3)), procedure(SNOMED, "55705006", day(3)))) == {
        "adjuvant-radiotherapy", "posterior-fixation"}
    done = in_pathway(decompression(day(3)), procedure(CPT, "22843", day(3)), procedure(CPT, "77412", day(1)))
    assert decided(done) == set()


def test_planned_radiotherapy_counts_but_a_draft_does_not():
    fixed = (decompression(day(3)), procedure(CPT, "22840", day(3)))
    assert decided(in_pathway(*fixed, service_request(CPT, "77385", day(1)))) == set()
    assert decided(in_pathway(*fixed, service_request(CPT, "77385", day(1), status="draft"))) == {"adjuvant-radiotherapy"}


def test_steroid_duration_fires_before_or_after_surgery():
    assert "steroid-duration" in decided(in_pathway(dexamethasone(day(14))))
    assert decided(in_pathway(dexamethasone(day(14)), decompression(day(3)), procedure(CPT, "22842", day(3)),
                              procedure(CPT, "77427", day(1)))) == {"steroid-duration"}


def test_unconfirmed_diagnosis_adds_the_differential_card():
    for status in ("provisional", "differential", "unconfirmed"):
        facts = facts_of(hemangioma(verification=status, onset=day(3)), compression())
        assert decided(facts) == PRE_OP_ALL | {"differential-diagnosis"}


def test_out_of_scope_patient_is_silent_whatever_else_is_on_record():
    metastasis = condition(concept(SNOMED, "94222008"))
    facts = facts_of(metastasis, compression(), dexamethasone(day(20)), decompression(day(2)))
    assert decide_chart(facts) == ([], [])


def test_missing_procedures_withhold_every_stage_card_instead_of_guessing():
    facts = in_pathway(unavailable={"Procedure"})
    decisions, unchecked = decide_chart(facts)
    assert {d.topic for d in decisions} == set()
    assert {u.topic for u in unchecked} >= {"surgical-decompression", "adjuvant-radiotherapy"}


VERTEBRA = {"T1": "64864005", "T3": "1626008", "T4": "73071006", "T5": "56401006", "T6": "45296009",
            "T7": "62487009", "T9": "82687006", "T11": "12989004", "T12": "23215003"}


def _summaries(facts):
    variables = template_variables(facts)
    return [v["text"].format_map(variables) for d in ENGINE.library.definitions.values() for v in d.data["summary"]]


@pytest.mark.parametrize("levels, text", [
    (("T5",), "T5"),
    (("T3", "T4", "T5", "T6"), "T3-T6"),
    (("T3", "T4", "T5", "T9"), "T3-T5, T9"),
    (("T1", "T3", "T5", "T7"), "4 levels, T1 to T7"),
])
def test_levels_are_named_briefly(levels, text):
    sites = [concept(SNOMED, VERTEBRA[lv]) for lv in levels]
    facts = facts_of(hemangioma(sites=sites), compression())
    assert template_variables(facts)["level"] == text
    assert all(len(s) < 140 for s in _summaries(facts))


def test_many_levels_named_in_text_still_fit_every_summary():
    """Eight lesions named in the code text would overflow the summaries (and be cut mid-word) if listed."""
    text = "Multiple vertebral hemangiomas C3, C5, T2, T4, T8, T10, L1, L3"
    facts = facts_of(hemangioma(code=concept(SNOMED, "448232005", text), sites=[]), compression())
    assert template_variables(facts)["level"] == "8 levels, C3 to L3"
    assert all(len(s) < 140 for s in _summaries(facts))


def _radiotherapy_card(*resources, discharge=False):
    facts = facts_of(*resources)
    decisions, unchecked = decide_discharge(facts) if discharge else decide_chart(facts)
    (c,) = [c for c in ENGINE.cards(decisions, unchecked, facts, "http://x/p")
            if c["source"]["topic"]["code"] == "adjuvant-radiotherapy"]
    return json.loads(encode(c))        # as the answer writes it (a created resource is JSON already)


@pytest.mark.parametrize("discharge", [False, True])
@pytest.mark.parametrize("who, reason", [
    (patient("2018-01-01"), "under 18 or of unknown age (age: 8)"),
    ({"resourceType": "Patient", "id": "unit-1"}, "under 18 or of unknown age (age: unknown)"),
    (patient("1990-01-01", gender="female"), "does not address radiotherapy in pregnancy"),
])
def test_radiotherapy_summary_gives_no_adult_dose_when_the_referral_carries_none(who, reason, discharge):
    """pathway.md section 4, special populations: a child's, an unknown age's or a pregnant patient's
    radiotherapy card never says "30 Gy/10 fx" in its summary while the referral carries no dose (or
    there is no referral at all); the detail says why in one sentence."""
    pregnancy = [condition(concept(ICD10CM, "Z34.00"), onset=day(100))] if "pregnancy" in reason else []
    c = _radiotherapy_card(who, hemangioma(onset=day(30)), compression(onset=day(10)), decompression(day(3)),
                           procedure(CPT, "22842", day(3)), *pregnancy, discharge=discharge)
    assert "Gy" not in c["summary"] and reason in c["detail"]
    assert "Gy" not in json.dumps(c.get("suggestions", []))
    assert ("pregnancy" in c["summary"]) == bool(pregnancy)


def test_adult_radiotherapy_summary_keeps_the_regimen():
    c = _radiotherapy_card(hemangioma(onset=day(30)), compression(onset=day(10)), decompression(day(3)),
                           procedure(CPT, "22842", day(3)))
    assert "30 Gy/10 fx" in c["summary"] and "carries no dose" not in c["detail"]


@pytest.mark.parametrize("prefix, priority", [("03", "stat"), ("04", "stat"), ("24", "stat"), ("01", "urgent"),
                                              ("36", "urgent")])
def test_mri_and_cta_orders_are_stat_when_the_deficit_progresses_rapidly(prefix, priority):
    """pathway.md section 4: spine-mri and preop-cta suggest their order with priority `stat` when rapid
    (a lapsed deterioration, fixture 36, is not rapid)."""
    cards = [c for c in chart_cards(fixture(prefix)) if c["source"]["topic"]["code"] in ("spine-mri", "preop-cta")]
    assert cards
    for c in cards:
        (s,) = c["suggestions"]
        assert [a["resource"]["priority"] for a in s["actions"]] == [priority], (prefix, c["source"]["topic"])


def test_a_childs_recurrence_referral_is_not_called_postoperative_or_adjuvant():
    """pathway.md section 4: in recurrence never "postoperative" or "after the wound has healed"; a child's
    referral (no dose) must not call the radiotherapy of a recurrence adjuvant either."""
    c = _radiotherapy_card(patient("2015-01-01"), hemangioma(onset=day(30)), compression(onset=day(10)),
                           decompression(day(730)), procedure(CPT, "22842", day(730)))
    (s,) = c["suggestions"]
    words = (c["summary"] + c["detail"] + json.dumps(s)).lower()
    assert "recurren" in c["summary"].lower() and "Gy" not in json.dumps(s)
    assert not any(w in words for w in ("postoperative", "after the wound has healed", "adjuvant"))
