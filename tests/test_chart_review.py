"""A hostile clinical review of patient-view (clin13): charts not among the fixtures, driven through the real
service (Flask test client, prefetch) and compared card by card with pathway.md v2. Each test is a defect the
review found: it failed before its fix."""
import datetime as dt

import pytest

from service.clinical.record import build_record
from service.clinical.valuesets import named_levels
from tests.fhir_records import (COMPRESSION_ICD, HEMANGIOMA_T7_AGGRESSIVE, LOCAL, LOINC, PATIENT_ID, PRE_OP_CARDS, RXNORM, SELECTOR,
                                SNOMED, T7, concept, condition, day, decompression, hook_request, patient, stay_on, today, topics)

TODAY = dt.datetime.now(dt.timezone.utc).date()
_clock = stay_on(TODAY)


def _d(days: int) -> str:
    return day(days, since=today())


def _cards(client, resources, pid=PATIENT_ID):
    body = hook_request("patient-view", pid, resources)
    medications = [r for r in resources if r["resourceType"] == "Medication"]   # as _include=...:medication sends them
    body["prefetch"]["medicationRequests"]["entry"] += [{"resource": m, "search": {"mode": "include"}}
                                                        for m in medications]
    response = client.post("/cds-services/avh-patient-view", json=body)
    assert response.status_code == 200, response.json
    return response.json["cards"]


def _hemangioma(**kw):
    return condition(HEMANGIOMA_T7_AGGRESSIVE, sites=[concept(*T7)], id="hem", **kw)


def _compression(**kw):
    return condition(COMPRESSION_ICD, id="cmp", **kw)


# --- levels written as a span ----------------------------------------------------------------------------

@pytest.mark.parametrize("text, levels", [
    ("Multilevel vertebral hemangiomas T5-T10", {"T5", "T6", "T7", "T8", "T9", "T10"}),
    ("Hemangioma T6\u2013T8", {"T6", "T7", "T8"}),
    ("Hemangioma T6 to T8", {"T6", "T7", "T8"}),
    ("Hemangioma T6-8", {"T6", "T7", "T8"}),
    ("Hemangiomas T11-L1", {"T11", "T12", "L1"}),
    ("Hemangioma T7, low T1-weighted signal", {"T7", "T1"}),     # no span: "T1-weighted" is one level word
])
def test_a_span_of_levels_names_every_level_between(text, levels):
    assert named_levels(text) == levels


def test_a_hemangioma_spanning_the_compressed_level_is_the_same_lesion(client):
    """Hemangiomas written 'T5-T10' and a compression at T7: T7 lies within the span, the patient is in the pathway
    (the span was read as T5 and T10 alone, both over one level from T7: silence)."""
    cards = _cards(client, [patient("1968-04-02"),
                            condition(concept(SNOMED, "448232005", "Multilevel vertebral hemangiomas T5-T10"),
                                      onset=_d(10), id="hem"),
                            condition(concept(SNOMED, "71286001", "Spinal cord compression at T7"), onset=_d(10),
                                      id="cmp")])
    assert topics(cards) == PRE_OP_CARDS


# --- dexamethasone named through a versioned reference --------------------------------------------------------

@pytest.mark.parametrize("reference", ["Medication/dex-tab/_history/3", "https://ehr.example/fhir/Medication/dex-tab/_history/3"])
def test_dexamethasone_by_a_versioned_reference_is_on_record(client, reference):
    """An order naming a version of its Medication (a FHIR reference may) is dexamethasone on record: no second
    'start 96 mg now' (the version was read as the Medication's id: the card fired)."""
    medication = {"resourceType": "Medication", "id": "dex-tab",
                  "code": concept(RXNORM, "197582", "dexamethasone 4 MG Oral Tablet")}
    order = {"resourceType": "MedicationRequest", "id": "mr-dex", "status": "active", "intent": "order",
             "subject": {"reference": f"Patient/{PATIENT_ID}"}, "medicationReference": {"reference": reference},
             "authoredOn": _d(2)}
    cards = _cards(client, [patient("1968-04-02"), _hemangioma(onset=_d(10)), _compression(onset=_d(10)),
                            medication, order])
    assert topics(cards) == PRE_OP_CARDS - {"corticosteroids"}


# --- the same resource sent twice, two versions ---------------------------------------------------------------

@pytest.mark.parametrize("meta_old, meta_new", [
    ({"versionId": "1"}, {"versionId": "2"}),
    ({"versionId": "9"}, {"versionId": "10"}),                      # numbers, not text: 10 is later than 9
    ({"lastUpdated": "2026-01-01T10:00:00Z"}, {"lastUpdated": "2026-01-01T10:00:00-02:00"}),   # later by 2 h
])
@pytest.mark.parametrize("newest_first", [False, True])
def test_the_latest_version_of_a_resource_sent_twice_is_read(client, meta_old, meta_new, newest_first):
    """A compression entered in error in its second version: whichever order the two versions come in, the latest
    is the record (the first sent was kept: the stale active version gave five cards)."""
    old = _compression(onset=_d(10), meta=meta_old)
    new = _compression(onset=_d(10), verification="entered-in-error", meta=meta_new)
    versions = [new, old] if newest_first else [old, new]
    assert _cards(client, [patient("1968-04-02"), _hemangioma(onset=_d(10)), *versions]) == []


def test_a_completed_version_of_an_operation_in_progress_makes_the_patient_operated(client):
    in_progress = {**decompression(_d(1), "in-progress", id="op"), "meta": {"versionId": "1"}}
    completed = {**decompression(_d(1), "completed", id="op"), "meta": {"versionId": "2"}}
    cards = _cards(client, [patient("1968-04-02"), _hemangioma(onset=_d(10)), _compression(onset=_d(10)),
                            in_progress, completed])
    assert topics(cards) == {"adjuvant-radiotherapy", "posterior-fixation"}


def test_a_later_version_of_the_patient_saying_deceased_is_read():
    """Pure: the record keeps the Patient's later version (a record may carry the Patient twice)."""
    alive = patient("1968-04-02", meta={"versionId": "4"})
    deceased = patient("1968-04-02", meta={"versionId": "5"}, deceasedDateTime=_d(1))
    for sent in ([alive, deceased], [deceased, alive]):
        record = build_record(sent + [_hemangioma(onset=_d(10)), _compression(onset=_d(10))], SELECTOR, PATIENT_ID)
        assert record.patient.deceasedDateTime is not None and not record.left_out


# --- an onsetAge whose unit is written, not coded -------------------------------------------------------------

@pytest.mark.parametrize("age", [{"value": 54, "unit": "years"}, {"value": 54, "unit": "yr"},
                                 {"value": 54, "unit": "Years", "system": "http://unitsofmeasure.org", "code": "a"},
                                 {"value": 648, "unit": "months"}])
def test_an_onset_age_in_written_units_dates_the_episode(client, age):
    """A compression 'at age 54' (unit written 'years', no UCUM code) began this year: the laminectomy of six years
    ago is an earlier operation (a recurrence), not this episode's (the start was unknown, the window held
    everything and the old operation made the patient post-operative: no steroid, no surgery card)."""
    born = (today() - dt.timedelta(days=54 * 365.25 + 20)).date()
    born = born.replace(day=1) if born.day > 28 else born
    cards = _cards(client, [patient(born.isoformat()), _hemangioma(onset=_d(3000)),
                            _compression(onsetAge=age), decompression(_d(6 * 365), id="op-2020")])
    assert topics(cards) == PRE_OP_CARDS | {"adjuvant-radiotherapy"}


# --- surgery under way in a recurrence ------------------------------------------------------------------------

def test_surgery_under_way_in_a_recurrence_silences_its_radiotherapy_card(client):
    """The recurrence's radiotherapy card is a card of the pre-operative pathway (pathway.md section 1: surgery under
    way silences every pre-operative card): with the decompression under way it said 'responds to radiotherapy even
    without repeat surgery' and offered a referral, the one card left. A post-operative patient keeps it."""
    recurrence = [patient("1961-09-14"), _hemangioma(onset=_d(2500)), _compression(onset=_d(5)),
                  decompression(_d(2190), id="op-2020")]
    assert topics(_cards(client, recurrence)) == PRE_OP_CARDS | {"adjuvant-radiotherapy"}
    under_way = {**decompression(None, "in-progress", id="op-now"),
                 "performedDateTime": (dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=3)).isoformat()}
    assert _cards(client, recurrence + [under_way]) == []


# --- occurrenceTiming dates an order ----------------------------------------------------------------------

@pytest.mark.parametrize("timing", [{"event": ["2019-03-04T09:00:00Z"]},
                                    {"repeat": {"boundsPeriod": {"start": "2019-03-04"}}}])
def test_an_order_dated_by_its_occurrence_timing_years_ago_is_not_this_episodes(client, timing):
    """occurrence[x] includes occurrenceTiming (pathway.md section 3): an MRI of the entire spine ordered for 2019,
    with no authoredOn, is not this episode's (read as undated, it was in the episode and silenced spine-mri)."""
    order = {"resourceType": "ServiceRequest", "id": "mri-2019", "status": "completed", "intent": "order",
             "code": concept(LOINC, "36067-7", "MR Spine entire"), "subject": {"reference": f"Patient/{PATIENT_ID}"},
             "occurrenceTiming": timing}
    cards = _cards(client, [patient("1968-04-02"), _hemangioma(onset=_d(10)), _compression(onset=_d(10)), order])
    assert topics(cards) == PRE_OP_CARDS
    recent = {**order, "occurrenceTiming": {"event": [_d(2)]}}
    cards = _cards(client, [patient("1968-04-02"), _hemangioma(onset=_d(10)), _compression(onset=_d(10)), recent])
    assert topics(cards) == PRE_OP_CARDS - {"spine-mri"}


def test_readings_dated_by_their_effective_timing_count(client):
    """An Observation's effective[x] includes effectiveTiming: walking yesterday, not today (read as undated, the
    readings were dropped and the patient was 'stable': the embolization order was offered)."""
    now = dt.datetime.now(dt.timezone.utc)

    def walking_at(value, hours_ago, oid):
        return {"resourceType": "Observation", "id": oid, "status": "final", "code": concept(LOCAL, "ambulatory-status"),
                "subject": {"reference": f"Patient/{PATIENT_ID}"}, "valueCodeableConcept": concept(LOCAL, value),
                "effectiveTiming": {"event": [(now - dt.timedelta(hours=hours_ago)).isoformat()]}}
    cards = _cards(client, [patient("1968-04-02"), _hemangioma(onset=_d(10)), _compression(onset=_d(10)),
                            walking_at("ambulatory", 30, "walk-1"), walking_at("non-ambulatory", 2, "walk-2")])
    assert topics(cards) == PRE_OP_CARDS - {"preop-embolization"} | {"embolization-deferred"}


# --- a deceased patient whose record cannot be read whole --------------------------------------------------

@pytest.mark.parametrize("sent", [{"birthDate": "1960-02-30", "deceasedBoolean": True},     # no such day
                                  {"birthDate": "1960-02-03", "deceasedDateTime": "last week"},
                                  {"birthDate": "1960-02-03", "deceasedDateTime": "2026-11-31"}])
def test_a_patient_sent_as_deceased_gets_no_card_though_the_patient_is_invalid(client, sent):
    """pathway.md section 1: deceasedBoolean true or *any* deceasedDateTime, no card. The Patient left out as invalid
    FHIR (a birthDate or deceasedDateTime that is no day) was read as alive: five cards, 'order spine surgery'."""
    dead = {"resourceType": "Patient", "id": PATIENT_ID, **sent}
    assert _cards(client, [dead, _hemangioma(onset=_d(10)), _compression(onset=_d(10))]) == []


# --- a status coded twice, the HL7 code second -----------------------------------------------------------

def test_a_status_is_read_from_its_hl7_coding_whatever_comes_first(client):
    """An EHR's own status code first, HL7's second: the compression is entered in error (the first coding was read,
    'EIE' is no status the pathway knows, so the compression counted and five cards fired)."""
    compression = _compression(onset=_d(10))
    compression["verificationStatus"] = {"coding": [
        {"system": "urn:oid:1.2.840.114350.1.13.0.1.7.4.698084.10008", "code": "EIE"},
        {"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "entered-in-error"}]}
    assert _cards(client, [patient("1968-04-02"), _hemangioma(onset=_d(10)), compression]) == []
    resolved = _compression(onset=_d(10))
    resolved["clinicalStatus"] = {"coding": [
        {"system": "urn:oid:1.2.840.114350.1.13.0.1.7.4.698084.10009", "code": "active"},
        {"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "resolved"}]}
    assert _cards(client, [patient("1968-04-02"), _hemangioma(onset=_d(10)), resolved]) == []


@pytest.mark.parametrize("fields, deceased", [({}, False), ({"deceasedBoolean": True}, True),
                                              ({"deceasedBoolean": False}, False),
                                              ({"deceasedDateTime": "2020-01-01"}, True)])
def test_deceased_is_one_rule_read_on_the_json_and_on_the_patient_read(fields, deceased):
    """pathway.md section 1, stated once (record.says_deceased): of a Patient's JSON (left out as invalid) and of the
    Patient read (facts.is_deceased), the same verdict."""
    from service.clinical.facts import is_deceased
    from service.clinical.record import says_deceased
    from tests.fhir_records import PATIENT_ID, SELECTOR
    sent = patient("1968-04-02", **fields)
    assert says_deceased(sent) is deceased
    assert is_deceased(build_record([sent], SELECTOR, PATIENT_ID)) is deceased
