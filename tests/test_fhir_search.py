"""The prefetch query subset over in-memory resources (service.fhir_search)."""
import pytest

from service.fhir_search import UnsupportedSearch, parse_query, search

SNOMED = "http://snomed.info/sct"
RESOURCES = [
    {"resourceType": "Patient", "id": "p1"},
    {"resourceType": "Patient", "id": "p2"},
    {"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p1"}, "clinicalStatus": {
        "coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
     "code": {"coding": [{"system": SNOMED, "code": "448232005"}]}},
    {"resourceType": "Condition", "id": "c2", "subject": {"reference": "Patient/p1"},
     "code": {"coding": [{"code": "71286001"}]}},
    {"resourceType": "Condition", "id": "c3", "subject": {"reference": "http://fhir.test/Patient/p2"},
     "code": {"coding": [{"system": SNOMED, "code": "71286001"}]}},
    {"resourceType": "MedicationRequest", "id": "m1", "status": "active", "subject": {"reference": "Patient/p1"},
     "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "3264"}]}},
    {"resourceType": "Observation", "id": "o1", "subject": {"reference": "Group/p1"},
     "code": {"coding": [{"system": SNOMED, "code": "448232005"}]}},
]


def ids(query):
    return [r["id"] for r in search(RESOURCES, query)]


def test_read_returns_the_one_resource():
    assert ids("Patient/p2") == ["p2"]
    assert ids("Patient/nope") == []
    assert parse_query("Patient/p2").id == "p2"


@pytest.mark.parametrize("value", ["p1", "Patient/p1"])
def test_patient_reference_in_either_form(value):
    assert ids(f"Condition?patient={value}") == ["c1", "c2"]


def test_patient_matches_an_absolute_reference_and_only_patients():
    assert ids("Condition?patient=p2") == ["c3"]
    assert ids("Observation?patient=p1") == []          # subject is a Group, not a Patient
    assert ids("Observation?subject=Group/p1") == ["o1"]


@pytest.mark.parametrize("token, expected", [
    (f"{SNOMED}|448232005", ["c1"]),
    (f"{SNOMED}|448232005,{SNOMED}|71286001", ["c1", "c3"]),   # comma = OR
    ("71286001", ["c2", "c3"]),                                 # any system
    ("|71286001", ["c2"]),                                      # no system
    (f"{SNOMED}|", ["c1", "c3"]),                               # any code of the system
    (f"{SNOMED}|99999", []),
])
def test_code_token_forms(token, expected):
    assert ids(f"Condition?code={token}") == expected


def test_parameters_are_anded_and_url_encoding_is_decoded():
    assert ids(f"Condition?patient=p1&code={SNOMED}%7C71286001,{SNOMED}%7C448232005") == ["c1"]
    assert ids("Condition?patient=p1&clinical-status=active") == ["c1"]


def test_medication_code_searches_the_medication_concept():
    assert ids("MedicationRequest?patient=p1&code=3264&status=active") == ["m1"]
    assert ids("MedicationRequest?patient=p1&status=completed") == []


def test_result_parameters_are_handed_back_not_filtered():
    query = parse_query("Condition?patient=p1&_count=1&_sort=-date")
    assert query.result == {"_count": "1", "_sort": "-date"}
    assert ids(query) == ["c1", "c2"]


@pytest.mark.parametrize("query", ["Condition?onset-date=ge2020", "Condition?code:text=spine", "Condition?code=",
                                   "condition?patient=p1", "Patient/p1/_history", ""])
def test_unsupported_queries_raise(query):
    with pytest.raises(UnsupportedSearch):
        parse_query(query)
