"""One test per row of shared/docs/seed-trace.md: each statement of the source shows up on the right card.

Cards come from the fixtures through the pure engine at a fixed now. Order-time hooks (order-sign,
discharge) are covered where those hooks are implemented; these tests cover the chart (patient-view).
"""
from tests.fixture_cards import card, chart_cards, fixture, topics

STABLE, WORKUP_DONE, RAPID, MOTOR, ASSERTED = "01", "02", "03", "04", "05"
NO_RT, NO_FIXATION, RT_PLANNED, DEX_20, PROVISIONAL = "06", "07", "08", "09", "10"
CHILD, PREGNANT, THORACIC_MRI, RECURRENCE = "11", "12", "13", "14"


def suggestion(c, fragment):
    (found,) = [s for s in c.get("suggestions", []) if fragment in s["label"]]
    return found


def resource_of(s):
    """The suggestion's first resource: the decompression, for the two-action surgery suggestion."""
    return s["actions"][0]["resource"]


def test_row_01_dexamethasone_on_suspicion_before_imaging():
    for prefix in (RAPID, CHILD, THORACIC_MRI):        # no MRI of the entire spine on record
        c = card(prefix, "corticosteroids")
        assert "before imaging confirms" in c["detail"]
        assert "spine-mri" in topics(prefix)


def test_row_02_standard_regimen_is_the_recommended_suggestion():
    c = card(STABLE, "corticosteroids")
    s = suggestion(c, "96 mg")
    assert s["isRecommended"] is True
    med = resource_of(s)
    assert med["resourceType"] == "MedicationRequest"
    dosages = med["dosageInstruction"]
    assert dosages[0]["doseAndRate"][0]["doseQuantity"]["value"] == 96 and dosages[0]["timing"]["repeat"]["count"] == 1
    assert dosages[1]["doseAndRate"][0]["doseQuantity"]["value"] == 96
    assert dosages[1]["timing"]["repeat"]["boundsDuration"]["value"] == 3
    assert dosages[2]["timing"]["repeat"]["boundsDuration"]["value"] == 10
    assert "96 mg IV bolus, 96 mg/day x 3 days" in c["summary"]


def test_row_03_moderate_dose_only_without_rapid_deterioration():
    stable = card(STABLE, "corticosteroids")
    moderate = resource_of(suggestion(stable, "16 mg"))
    assert moderate["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"]["value"] == 16
    assert stable["selectionBehavior"] == "at-most-one"
    assert "16 mg/day" in stable["summary"]
    for prefix in (RAPID, MOTOR):
        rapid = card(prefix, "corticosteroids")
        assert [s for s in rapid["suggestions"] if "16 mg" in s["label"]] == []
        assert "16 mg/day if stable" not in rapid["summary"]
        assert "not offered" in rapid["detail"]


def test_row_04_benefit_and_risk_of_high_dose():
    detail = card(STABLE, "corticosteroids")["detail"]
    for words in ("81 %", "63 %", "11-29 %", "GI perforation", "bleeding"):
        assert words in detail


def test_row_05_mri_of_the_entire_spine_with_its_accuracy():
    c = card(RAPID, "spine-mri")
    assert "entire spine" in c["summary"]
    assert "0.44-0.93" in c["detail"] and "0.90-0.98" in c["detail"]
    order = resource_of(suggestion(c, "MRI"))
    assert order["code"]["coding"][0] == {"system": "http://loinc.org", "code": "36067-7", "display": "MR Spine"}


def test_row_06_t1_signal_on_mri_and_differential_cards():
    assert "T1-weighted" in card(RAPID, "spine-mri")["detail"]
    assert "T1-weighted" in card(PROVISIONAL, "differential-diagnosis")["detail"]


def test_row_07_ct_angiography_before_surgery():
    c = card(STABLE, "preop-cta")
    assert "CT angiography" in c["summary"] and "vascular anatomy" in c["detail"]
    coding = resource_of(suggestion(c, "CT angiography"))["code"]["coding"][0]
    assert (coding["system"], coding["code"]) == ("https://avh-cds.org/fhir/CodeSystem/avh-local", "ct-angiography-spine")
    assert "preop-cta" not in topics("15")        # CT angiography on record


def test_row_08_surgery_is_the_standard_of_care():
    c = card(STABLE, "surgical-decompression")
    assert c["indicator"] == "critical"
    assert "standard of care" in c["detail"]


def test_row_09_embolization_24_to_48_hours_before_surgery():
    c = card(STABLE, "preop-embolization")
    assert "24-48 h" in c["summary"]
    assert "2424 ml" in c["detail"]
    assert "preop-embolization" not in topics(WORKUP_DONE)   # embolization on record


def test_row_10_total_and_en_bloc_excision():
    detail = card(STABLE, "surgical-decompression")["detail"]
    assert "total excision" in detail and "en bloc" in detail and "135-month" in detail


def test_row_11_posterior_instrumented_stabilization_in_all_cases():
    c = card(STABLE, "surgical-decompression")
    assert "instrumented stabilization, in all cases" in c["detail"]
    decompression, fixation = (a["resource"] for a in c["suggestions"][0]["actions"])
    assert "instrumented stabilization" in decompression["orderDetail"][0]["text"]
    assert fixation["code"]["coding"][0]["code"] == "22842"
    fixation = card(NO_FIXATION, "posterior-fixation")
    assert "no posterior instrumented stabilization" in fixation["summary"]
    assert "vertebral collapse" in fixation["detail"]
    assert "posterior-fixation" not in topics(NO_RT)


def test_row_12_vertebroplasty_at_surgery():
    assert "vertebroplasty at the time of surgery" in card(STABLE, "surgical-decompression")["detail"]


def test_row_13_emergent_surgery_within_24_hours_when_rapid():
    for prefix in (RAPID, MOTOR, ASSERTED):
        c = card(prefix, "surgical-decompression")
        assert "within 24 h" in c["summary"]
        assert resource_of(c["suggestions"][0])["priority"] == "stat"
    stable = card(STABLE, "surgical-decompression")
    assert "24 h" not in stable["summary"]
    assert resource_of(stable["suggestions"][0])["priority"] == "urgent"


def test_row_14_rapid_deterioration_goes_straight_to_surgery():
    for prefix in (RAPID, MOTOR, ASSERTED):
        assert "embolization-deferred" in topics(prefix) and "preop-embolization" not in topics(prefix)
        assert "straight to surgery" in card(prefix, "embolization-deferred")["summary"]
    assert "embolization-deferred" not in topics(STABLE)


def test_row_15_ambulatory_status_predicts_outcome_with_the_patients_status():
    ambulatory = card(STABLE, "surgical-decompression")
    assert "(ambulatory)" in ambulatory["summary"] and "96-100 %" in ambulatory["detail"]
    assert "This patient is **ambulatory**" in ambulatory["detail"]
    paraplegic = card(ASSERTED, "surgical-decompression")
    assert "This patient is **non-ambulatory**" in paraplegic["detail"] and "about 30 %" in paraplegic["detail"]


def test_row_16_postoperative_radiotherapy_is_mandatory():
    c = card(NO_RT, "adjuvant-radiotherapy")
    assert "mandatory" in c["detail"] and "incomplete" in c["detail"]
    assert "Operated 12 days ago" in c["summary"]
    assert "adjuvant-radiotherapy" not in topics(RT_PLANNED)


def test_row_17_radiotherapy_after_the_wound_has_healed():
    c = card(NO_RT, "adjuvant-radiotherapy")
    assert "after the surgical wound has healed" in c["detail"]
    assert "after the surgical wound has healed" in resource_of(c["suggestions"][0])["orderDetail"][0]["text"]


def test_row_18_radiotherapy_regimens():
    c = card(NO_RT, "adjuvant-radiotherapy")
    for words in ("30 Gy in 10 fractions", "20 Gy in 5 fractions", "37.5 Gy in 15 fractions", "10-30 Gy"):
        assert words in c["detail"]
    order = resource_of(c["suggestions"][0])
    assert order["code"]["coding"][0]["code"] == "33195004"
    assert order["orderDetail"][0]["text"].startswith("30 Gy in 10 fractions to T7")


def test_row_19_pain_relief_can_take_two_weeks():
    assert "up to 2 weeks" in card(NO_RT, "adjuvant-radiotherapy")["detail"]


def test_row_20_radiotherapy_card_fires_however_long_ago_the_operation_was():
    c = card("22", "adjuvant-radiotherapy")          # operated 3 years ago, compression and hemangioma resolved
    assert "Operated 3 years ago" in c["summary"] and "no radiotherapy on record since" in c["summary"]
    assert "13 years" in c["detail"] and "loss to follow-up" in c["detail"]
    assert "Gy" not in resource_of(c["suggestions"][0])["orderDetail"][0]["text"]   # over 12 months: no dose


def test_row_21_recurrent_disease_responds_to_radiotherapy():
    recurrent = "recurrent disease responds well to radiotherapy even without repeat surgery"
    for prefix in (RECURRENCE, "23", "24", "32"):     # recurrence stable, rapid, after an onsetAge
        c = card(prefix, "adjuvant-radiotherapy")
        assert recurrent in c["detail"].lower()
        text = (c["summary"] + c["detail"] + str(c.get("suggestions"))).lower()
        assert "postoperative" not in text and "after the wound has healed" not in text
    assert "emergent surgery within 24 hours is indicated" in card("24", "adjuvant-radiotherapy")["detail"]
    assert recurrent not in card(NO_RT, "adjuvant-radiotherapy")["detail"].lower()


def test_row_22_neurologic_recovery_with_the_patients_joa_score():
    child = card(CHILD, "surgical-decompression")["detail"]
    assert "5.3 to 9.8 of 11" in child and "6 months" in child
    assert "latest JOA score: **6 of 11**" in child
    assert "latest JOA score" not in card(STABLE, "surgical-decompression")["detail"]


def test_row_23_do_not_mistake_avh_for_malignancy():
    c = card(PROVISIONAL, "differential-diagnosis")
    assert "provisional" in c["summary"] and "malignancy" in c["summary"]
    assert "rapid-onset myelopathy" in c["detail"]
    assert "differential-diagnosis" not in topics(STABLE)


def test_row_24_compression_in_pregnancy():
    c = card(PREGNANT, "surgical-decompression")
    assert "**Pregnant patient:**" in c["detail"] and "during pregnancy" in c["detail"]
    assert "minor trauma" not in c["detail"]          # the trauma sentence needs a recorded injury
    assert "Pregnant state, incidental (problem" in c["detail"]     # named in "why am I seeing this"
    assert "Pregnant" not in card(STABLE, "surgical-decompression")["detail"]


def test_row_25_avoid_prolonged_high_dose_steroids():
    c = card(DEX_20, "steroid-duration")
    assert "20 days" in c["summary"]
    assert "beyond the initial treatment period" in c["detail"]
    assert "steroid-duration" not in topics(WORKUP_DONE)     # dexamethasone day 2


def test_row_26_children_with_multilevel_thoracic_disease():
    c = card(CHILD, "surgical-decompression")
    assert "T5-T10" in c["summary"]
    assert "**Patient aged 15, multilevel thoracic disease (T5-T10):**" in c["detail"]
    assert "same aggressive surgical approach" in c["detail"]
    assert "Patient aged" not in card(STABLE, "surgical-decompression")["detail"]


def test_every_fixture_card_names_its_sources():
    for fx in (fixture(p) for p in (STABLE, RAPID, NO_RT, DEX_20, PROVISIONAL)):
        for c in chart_cards(fx):
            assert "**Why am I seeing this?**" in c["detail"] and "**Sources**" in c["detail"]


# --- pathway.md v2: special populations (row 28), "why am I seeing this", unreadable data -------------

def test_row_28_child_or_unknown_age_no_dexamethasone_suggestion_and_no_dose_on_radiotherapy():
    for prefix in (CHILD, "31"):
        c = card(prefix, "corticosteroids")
        assert "suggestions" not in c and "the source gives adult doses only" in c["detail"]
    six = card("31", "surgical-decompression")
    assert "**Patient aged 6, multilevel thoracic disease (T5-T10):**" in six["detail"]
    assert "96 mg" not in str(card("31", "corticosteroids").get("suggestions", ""))


def test_row_28_pregnant_no_one_click_dexamethasone_cta_embolization():
    for prefix in (PREGNANT, "35"):
        for topic, what in (("corticosteroids", "dexamethasone"), ("preop-cta", "CT angiography"),
                            ("preop-embolization", "transarterial embolization")):
            c = card(prefix, topic)
            assert "suggestions" not in c, (prefix, topic)
            assert f"the source does not address {what} in pregnancy" in c["detail"]
    assert "does not address MRI contrast in pregnancy" in card("35", "spine-mri")["detail"]


def test_row_24_trauma_sentence_only_with_a_recorded_injury():
    assert all("minor trauma" not in c["detail"] for f in ("01", "03", "12", "31") for c in
               [card(f, "surgical-decompression")])


def test_why_am_i_seeing_this_quotes_every_entry_in_words_with_dates():
    child = card(CHILD, "surgical-decompression")["detail"]
    why = child.split("**Why am I seeing this?**")[1].split("**Sources**")[0]
    assert "JOA score: 6 of 11 (observation, " in why                        # the score the card cites
    assert "ambulatory-with-assistance" not in why and "Ambulatory status: walks" in why
    dex = card(DEX_20, "steroid-duration")["detail"].split("**Why am I seeing this?**")[1]
    assert "(active order)" in dex and "MedicationRequest/avh-09-dex" in dex  # the order it counted
    for line in why.strip().splitlines():
        assert line.startswith("- ") and "20" in line                          # each entry with its date


def test_lapsed_deterioration_says_reassess_and_offers_no_stable_regimen():
    for prefix in ("26", "36"):
        steroids, embolization = card(prefix, "corticosteroids"), card(prefix, "preop-embolization")
        assert "re-assess" in steroids["detail"] and "re-assess" in embolization["detail"].lower()
        assert [s["label"] for s in steroids["suggestions"]] == [
            "Dexamethasone 96 mg IV bolus, 96 mg/day for 3 days, taper over 10 days"]
        assert "suggestions" not in embolization and "Re-assess" in embolization["summary"]


def test_an_unreadable_hemangioma_condition_is_never_silence():
    (c,) = chart_cards(fixture("37"))
    assert c["source"]["topic"]["code"] == "data-unavailable"
    assert "Condition/avh-37-hemangioma" in c["summary"] and "severityLevel" in c["detail"]


def test_deceased_and_surgery_under_way_are_silent():
    assert topics("29") == set() and topics("30") == set()


def test_a_competing_cause_names_the_competing_condition():
    c = card("33", "differential-diagnosis")
    assert "Intervertebral disc disorders with myelopathy" in c["detail"] and "avh-33-disc" in c["detail"]


def test_corticosteroid_summaries_for_children_and_pregnancy_give_no_adult_regimen():
    assert "adult doses only (age 6)" in card("31", "corticosteroids")["summary"]
    assert "96 mg" not in card("31", "corticosteroids")["summary"]
    assert "does not address pregnancy" in card("35", "corticosteroids")["summary"]
    assert "re-assess" in card("36", "corticosteroids")["summary"] and "16 mg" not in card("36", "corticosteroids")["summary"]


def test_row_24_trauma_sentence_with_an_injury_recorded_shortly_before():
    c = card("38", "surgical-decompression")
    assert "after minor trauma" in c["detail"] and "Fall at home" in c["detail"]


def test_row_27_no_recurrence_at_135_months_after_total_excision_with_radiotherapy():
    for prefix in (NO_RT, "22"):
        c = card(prefix, "adjuvant-radiotherapy")
        assert "135-month" in c["detail"] and "all daily activities by 6 months" in c["detail"]   # rows 27, 22
