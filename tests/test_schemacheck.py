"""The fast schema check agrees with jsonschema, and errors still come from jsonschema."""
import json

import jsonschema
import pytest

from service import SCHEMAS
from service.api.schemacheck import SchemaValidator

REQUEST = json.loads((SCHEMAS / "request.json").read_text())
GOOD = {"hook": "patient-view", "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
        "fhirServer": "https://ehr.example.org/fhir", "context": {"patientId": "p1", "userId": "Practitioner/1"},
        "prefetch": {"patient": {"resourceType": "Patient", "id": "p1"}, "conditions": None}}
AUTH = {"access_token": "t", "token_type": "Bearer", "expires_in": 300, "scope": "patient/*.read", "subject": "s"}
CASES = [
    GOOD,
    {**GOOD, "prefetch": {}},
    {**GOOD, "fhirAuthorization": AUTH},
    {k: v for k, v in GOOD.items() if k != "fhirServer"} | {"fhirAuthorization": AUTH},   # dependentRequired
    {**GOOD, "fhirAuthorization": {**AUTH, "token_type": "MAC"}},
    {**GOOD, "fhirAuthorization": {**AUTH, "expires_in": "300"}},
    {**GOOD, "hookInstance": "not-a-uuid"},
    {**GOOD, "hook": ""},
    {**GOOD, "fhirServer": "ftp://x"},
    {**GOOD, "context": []},
    {**GOOD, "prefetch": {"patient": []}},
    {**GOOD, "prefetch": {"patient": "Patient/p1"}},
    {k: v for k, v in GOOD.items() if k != "context"},
    [],
    "text",
]


@pytest.mark.parametrize("instance", CASES)
def test_same_verdict_and_message_as_jsonschema(instance):
    reference = jsonschema.Draft202012Validator(REQUEST)
    ours = SchemaValidator(REQUEST)
    expected = jsonschema.exceptions.best_match(reference.iter_errors(instance))
    best = ours.best_error(instance)
    assert ours.is_valid(instance) == reference.is_valid(instance) == (expected is None)
    assert (best and best.message) == (expected and expected.message)
    assert (best and list(best.absolute_path)) == (expected and list(expected.absolute_path))


def test_other_validator_methods_are_jsonschemas():
    ours = SchemaValidator(REQUEST)
    assert ours.schema is REQUEST or ours.schema == REQUEST
    with pytest.raises(jsonschema.ValidationError):
        ours.validate({"hook": "patient-view"})


def test_a_bad_request_answers_400_naming_the_problem(client):
    body = {k: v for k, v in GOOD.items() if k != "fhirServer"}
    response = client.post("/cds-services/avh-patient-view", json={**body, "hookInstance": "nope"})
    assert response.status_code == 400
    assert response.json["error"] == "invalid_request" and "hookInstance" in response.json["message"]
