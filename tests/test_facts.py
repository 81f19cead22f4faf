"""Edge cases of pathway.md section 3, at the pure-function level (fixed now, no server)."""
import dataclasses
import datetime as dt

import pytest

from service.clinical.facts import Evidence

from tests.fhir_records import (CPT, ICD10CM, LOCAL, LOINC, SNOMED, ago, compression, concept, condition, day,
                                 decompression, dexamethasone, facts_of, hemangioma, in_pathway, motor, observation,
                                 patient, procedure, report, service_request, walking)

# --- rapid deterioration ----------------------------------------------------------------------


@pytest.mark.parametrize("hours_apart, rapid", [(71, True), (72, True), (73, False), (120, False)])
def test_ambulatory_loss_counts_only_within_72_hours(hours_apart, rapid):
    facts = in_pathway(walking("ambulatory", ago(days=1, hours=hours_apart)), walking("non-ambulatory", ago(days=1)))
    assert facts.rapid_deterioration is rapid


@pytest.mark.parametrize("days_ago, rapid", [(6, True), (8, False)])
def test_ambulatory_loss_counts_only_when_the_later_is_within_7_days(days_ago, rapid):
    facts = in_pathway(walking("ambulatory", ago(days=days_ago, hours=24)), walking("non-ambulatory", ago(days=days_ago)))
    assert facts.rapid_deterioration is rapid


def test_loss_from_walking_with_assistance_counts_and_staying_non_ambulatory_does_not():
    assert in_pathway(walking("ambulatory-with-assistance", ago(2)), walking("non-ambulatory", ago(1))).rapid_deterioration
    assert not in_pathway(walking("non-ambulatory", ago(2)), walking("non-ambulatory", ago(1))).rapid_deterioration
    assert not in_pathway(walking("non-ambulatory", ago(2)), walking("ambulatory", ago(1))).rapid_deterioration


@pytest.mark.parametrize("drop, rapid", [(4, False), (5, True), (9, True)])
def test_motor_score_must_fall_by_5_or_more(drop, rapid):
    facts = in_pathway(motor(40, ago(days=2)), motor(40 - drop, ago(days=1)))
    assert facts.rapid_deterioration is rapid


def test_motor_drop_spread_over_more_than_72_hours_does_not_count():
    assert not in_pathway(motor(40, ago(days=5)), motor(30, ago(days=1))).rapid_deterioration


def test_motor_drop_older_than_7_days_does_not_count():
    assert not in_pathway(motor(40, ago(days=9)), motor(30, ago(days=8))).rapid_deterioration


def test_entered_in_error_observation_does_not_make_a_worsening():
    facts = in_pathway(walking("ambulatory", ago(2)),
                       {**walking("non-ambulatory", ago(1)), "status": "entered-in-error"})
    assert not facts.rapid_deterioration


def test_local_assertion_as_condition_or_true_observation_is_rapid():
    rapid_code = concept(LOCAL, "rapidly-progressive-neurologic-deficit")
    assert in_pathway(condition(rapid_code, onset=ago(1))).rapid_deterioration
    assert in_pathway(observation("rapidly-progressive-neurologic-deficit", ago(1), valueBoolean=True)).rapid_deterioration
    assert not in_pathway(observation("rapidly-progressive-neurologic-deficit", ago(1), valueBoolean=False)).rapid_deterioration
    assert not in_pathway(condition(rapid_code, verification="refuted")).rapid_deterioration


# --- ambulatory status ------------------------------------------------------------------------

def test_latest_ambulatory_observation_gives_the_status():
    assert in_pathway(walking("non-ambulatory", ago(9)), walking("ambulatory", ago(1))).ambulatory_status == "ambulatory"


def test_non_ambulatory_deficit_condition_means_non_ambulatory():
    # v2: the latest ambulatory-status observation decides; a complete paraplegia only without one
    facts = in_pathway(walking("ambulatory", ago(1)), condition(concept(ICD10CM, "G82.21"), onset=day(2)))
    assert facts.ambulatory_status == "ambulatory"
    assert in_pathway(condition(concept(ICD10CM, "G82.21"), onset=day(2))).ambulatory_status == "non-ambulatory"
    # incomplete or unspecified paraplegia is a deficit, not "non-ambulatory" (pathway v2)
    assert in_pathway(condition(concept(ICD10CM, "G82.22"))).ambulatory_status is None
    assert in_pathway(condition(concept(ICD10CM, "G82.20"))).ambulatory_status is None
    # paraparesis is a deficit, but not a non-ambulatory one
    assert in_pathway(condition(concept(SNOMED, "102568007"))).ambulatory_status is None


# --- operated / pre-operative -----------------------------------------------------------------

@pytest.mark.parametrize("surgery_day, operated", [(41, False), (40, True), (5, True)])
def test_operated_means_decompression_in_the_episode_window(surgery_day, operated):
    facts = in_pathway(decompression(day(surgery_day)))   # compression onset 10 days ago: window from 40 days ago
    assert facts.operated is operated
    assert facts.pre_operative is not operated


def test_any_decompression_counts_when_onset_is_unknown():
    facts = facts_of(hemangioma(), compression(), decompression("2012-03-01"))
    assert facts.operated


def test_recorded_date_is_not_an_onset():
    """A hemangioma entered on the problem list after the operation is still operated on (onset unknown)."""
    facts = facts_of(hemangioma(recordedDate=day(1)), compression(onset=day(10)), decompression(day(3)))
    assert facts.operated and not facts.pre_operative


def test_pending_or_planned_surgery_is_pre_operative():
    facts = in_pathway(decompression(day(1), status="in-progress"),
                       service_request(CPT, "63046", day(1)))
    assert facts.pre_operative


def test_posterior_fixation_and_radiotherapy_on_record():
    facts = in_pathway(decompression(day(5)), procedure(CPT, "22842", day(5)),
                       service_request(SNOMED, "33195004", day(2)))
    assert facts.posterior_fixation and facts.radiotherapy


@pytest.mark.parametrize("status, counts", [("active", True), ("completed", True), ("draft", False), ("revoked", False)])
def test_radiotherapy_request_counts_when_active_or_completed(status, counts):
    facts = in_pathway(decompression(day(5)), service_request(CPT, "77427", day(2), status=status))
    assert (facts.radiotherapy is not None) is counts


def test_radiotherapy_before_the_hemangioma_onset_does_not_count():
    assert in_pathway(decompression(day(5)), procedure(SNOMED, "33195004", day(400))).radiotherapy is None


# --- dexamethasone ----------------------------------------------------------------------------

@pytest.mark.parametrize("days, exceeded", [(13, False), (14, True), (20, True)])
def test_dexamethasone_course_is_exceeded_after_13_days(days, exceeded):
    facts = in_pathway(dexamethasone(day(days)))
    assert facts.dexamethasone_days == days
    assert facts.steroid_course_exceeded is exceeded


def test_stopped_dexamethasone_is_given_not_ongoing():
    facts = in_pathway(dexamethasone(day(20), status="stopped"))
    assert facts.dexamethasone is not None and not facts.dexamethasone.ongoing and not facts.steroid_course_exceeded


# --- who is in scope --------------------------------------------------------------------------

def test_d18_00_counts_when_its_text_names_a_vertebra():
    facts = facts_of(condition(concept(ICD10CM, "D18.00", "Aggressive hemangioma of the T9 vertebral body")),
                     compression())
    assert facts.in_pathway and facts.levels == ("T9",)


def test_d18_codes_need_a_spinal_site():
    liver = concept(SNOMED, "10200004", "Liver structure")
    assert not facts_of(condition(concept(ICD10CM, "D18.09", "Hemangioma of liver"), sites=[liver]), compression()).in_pathway
    assert not facts_of(condition(concept(ICD10CM, "D18.00")), compression()).in_pathway
    spine = facts_of(condition(concept(ICD10CM, "D18.09"), sites=[concept(SNOMED, "82687006")]), compression())
    assert spine.in_pathway and spine.levels == ("T9",)


def test_a_coded_site_outside_the_spine_excludes_even_the_vertebral_hemangioma_code():
    """pathway.md section 2: "A coded bodySite outside the spine (liver, skin) excludes it whatever the text says"."""
    liver = concept(SNOMED, "10200004", "Liver structure")
    assert not facts_of(hemangioma(sites=[liver]), compression()).in_pathway
    assert facts_of(hemangioma(sites=[]), compression()).in_pathway              # no site coded: the code decides
    assert facts_of(hemangioma(sites=[liver, concept(SNOMED, "82687006")]), compression()).in_pathway


@pytest.mark.parametrize("clinical, verification", [
    ("active", "refuted"), (None, "entered-in-error"), ("resolved", "confirmed"), ("inactive", "confirmed"),
    ("remission", "confirmed")])
def test_hemangioma_not_current_is_out_of_scope(clinical, verification):
    assert not facts_of(hemangioma(clinical=clinical, verification=verification), compression()).in_pathway


@pytest.mark.parametrize("clinical", ["active", "recurrence", "relapse", None])
def test_hemangioma_current_statuses_are_in_scope(clinical):
    facts = facts_of(hemangioma(clinical=clinical), compression())
    assert facts.in_pathway
    assert facts.recurrence is (clinical in {"recurrence", "relapse"})


def test_compression_refuted_or_resolved_is_out_of_scope():
    assert not facts_of(hemangioma(), compression(verification="refuted")).in_pathway
    assert not facts_of(hemangioma(), compression(clinical="resolved")).in_pathway


def test_compression_without_hemangioma_is_out_of_scope():
    metastasis = condition(concept(SNOMED, "94222008", "Metastasis to T8"), sites=[concept(SNOMED, "11068009")])
    assert not facts_of(metastasis, compression()).in_pathway


def test_confirmed_hemangioma_speaks_for_the_diagnosis():
    facts = facts_of(hemangioma(verification="provisional"), hemangioma(), compression())
    assert facts.hemangioma_verification == "confirmed"
    assert facts_of(hemangioma(verification="differential"), compression()).hemangioma_verification == "differential"


def test_resources_of_another_patient_are_ignored():
    other = compression(patient_id="someone-else")
    assert not facts_of(hemangioma(), other).in_pathway


# --- imaging, age, pregnancy --------------------------------------------------------------------

def test_thoracic_mri_is_not_an_entire_spine_mri():
    facts = in_pathway(procedure(CPT, "72146", day(2)))
    assert facts.mri_entire_spine is None and facts.mri_thoracic is not None
    assert in_pathway(report(LOINC, "36067-7", day(2))).mri_entire_spine is not None
    assert in_pathway(report(LOINC, "36067-7", day(2), status="preliminary")).mri_entire_spine is not None   # v2
    assert in_pathway(report(LOINC, "36067-7", day(2), status="registered")).mri_entire_spine is None


def test_ct_angiography_by_local_code_or_loinc():
    assert in_pathway(report(LOCAL, "ct-angiography-spine", day(1))).spine_cta is not None
    assert in_pathway(procedure(LOINC, "24925-0", day(1))).spine_cta is not None


@pytest.mark.parametrize("birth, pediatric", [("2008-11-25", True), ("2008-11-24", False)])
def test_pediatric_means_under_18(birth, pediatric):
    assert in_pathway(patient(birth)).pediatric is pediatric


def test_pregnancy_is_recognised():
    assert in_pathway(condition(concept(ICD10CM, "O99.352"), onset=day(100))).pregnancy is not None
    assert in_pathway(condition(concept(ICD10CM, "O99.352"), onset=day(295))).pregnancy is None     # 294 days
    assert in_pathway(condition(concept(SNOMED, "77386006"), clinical="resolved")).pregnancy is None


@pytest.mark.parametrize("text, vertebral", [
    ("Hemangioma of lumbar vertebra", True),
    ("Hemangioma of the spine", True),
    ("Hemangioma L2", True),
    ("Hemangioma of thoracic wall", False),     # chest wall: a region's name is not the spine
    ("Hemangioma of skin of lumbar region", False),
    ("Cervical lymph node hemangioma", False),
    ("Spindle cell hemangioma of the forearm", False),
])
def test_d18_text_must_name_a_vertebra_or_the_spine(text, vertebral):
    assert facts_of(condition(concept(ICD10CM, "D18.09", text)), compression()).in_pathway is vertebral


def test_d18_with_a_chest_wall_site_is_not_vertebral():
    chest_wall = concept(SNOMED, "78904004", "Thoracic wall")
    assert not facts_of(condition(concept(ICD10CM, "D18.09"), sites=[chest_wall]), compression()).in_pathway


def test_the_answer_does_not_depend_on_the_order_the_record_arrives_in():
    """Two confirmed hemangiomas: an old one (operated 2020) and a new one at another level, not operated.
    The new episode speaks for the patient whichever order the EHR sends them in."""
    old = hemangioma(onset="2019-06-01", sites=[concept(SNOMED, "62487009")])
    new = hemangioma(onset=day(12), sites=[concept(SNOMED, "7610001")])
    rest = (compression(onset=day(5)), decompression("2020-01-15"))
    for order in ((old, new), (new, old)):
        facts = facts_of(*order, *rest)
        assert facts.pre_operative, [c["onsetDateTime"] for c in order]
        assert facts.hemangioma.ref == f"Condition/{new['id']}"
        assert facts.levels == ("T7", "T10")


def test_evidence_set_at_once_is_the_frozen_dataclass_it_was():
    when = dt.date(2026, 11, 23)
    ev = Evidence("Condition/c1", "Cord compression", when)
    assert vars(ev) == {"ref": "Condition/c1", "label": "Cord compression", "when": when}
    assert ev == Evidence(ref="Condition/c1", label="Cord compression", when=when) != Evidence("Condition/c1", "x")
    assert Evidence("Procedure/p", "MRI").when is None
    assert dataclasses.replace(ev, label="x") == Evidence("Condition/c1", "x", when)
    assert ev.describe() == "Cord compression (problem, 2026-11-23; Condition/c1)"
    with pytest.raises(dataclasses.FrozenInstanceError):
        ev.label = "x"
