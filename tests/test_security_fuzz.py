"""Fuzzing: thousands of generated and malformed requests, in-process; none may get a 5xx or reach out.

schemathesis generates valid and invalid requests from our OpenAPI document (/openapi.json);
hypothesis adds raw bodies, mutated hook requests and forged Authorization headers.
"""
import base64
import json
import time

import pytest
import responses
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jwt.algorithms import ECAlgorithm

from tests.security_support import INVOKE, ISS, Keys, bearer, claims, hook_request, issuer, loopback_only
from service import create_app
from service.config import Settings

__all__ = ["loopback_only"]
FUZZ = settings(deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None)
APP = create_app(Settings.from_env({"AVH_CDS_AUTH": "off", "AVH_CDS_MAX_BODY_BYTES": "200000"}))
SCHEMA = schemathesis.openapi.from_wsgi("/openapi.json", APP)
SCHEMA.config.generation.update(max_examples=150)
CLIENT = APP.test_client()


@pytest.fixture(autouse=True)
def no_network():
    """Generated fhirServer URLs on loopback would be fetched: every outgoing request fails fast instead."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@SCHEMA.parametrize()
@FUZZ
def test_generated_requests_never_get_a_5xx(case):
    if case.path_parameters and case.path_parameters.get("service_id") and hash(repr(case.body)) % 4:
        case.path_parameters["service_id"] = "avh-patient-view"     # mostly the real service: deeper code paths
    response = case.call()
    assert response.status_code < 500, (case.method, case.path, response.status_code, response.text[:300])


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=30)


@given(body=st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode()),
       path=st.sampled_from([INVOKE, INVOKE + "/feedback", "/cds-services/nope"]))
@settings(FUZZ, max_examples=800)
def test_raw_bodies_never_get_a_5xx(body, path):
    response = CLIENT.post(path, data=body, content_type="application/json")
    assert response.status_code < 500 and response.is_json


RESOURCE_TYPES = st.sampled_from(["Patient", "Condition", "Observation", "Procedure", "Bundle", "OperationOutcome",
                                  "MedicationRequest", "DiagnosticReport", "ServiceRequest", None])


@st.composite
def mutated_hook_requests(draw):
    """A real patient-view request with parts of it replaced by generated JSON."""
    body = hook_request()
    key = draw(st.sampled_from(["patient", "conditions", "observations", "procedures", "medicationRequests"]))
    value = draw(st.dictionaries(st.text(max_size=12), json_values, max_size=6))
    rtype = draw(RESOURCE_TYPES)
    if rtype:
        value["resourceType"] = rtype
    if rtype == "Bundle" and draw(st.booleans()):
        value["entry"] = draw(st.lists(st.fixed_dictionaries({"resource": st.dictionaries(
            st.sampled_from(["resourceType", "id", "subject", "code", "clinicalStatus", "status", "issue"]),
            json_values, max_size=5)}), max_size=4))
    body["prefetch"][key] = value
    if draw(st.booleans()):
        body["context"][draw(st.sampled_from(["patientId", "userId", "extra"]))] = draw(json_values)
    return body


@given(body=mutated_hook_requests())
@settings(FUZZ, max_examples=300)
def test_mutated_hook_requests_never_get_a_5xx(body):
    response = CLIENT.post(INVOKE, json=body)
    assert response.status_code < 500, response.get_data(as_text=True)[:300]


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    path = tmp_path_factory.mktemp("issuers") / "issuers.json"
    path.write_text(json.dumps({"issuers": [issuer()]}))
    return create_app(Settings.from_env({"AVH_CDS_AUTH": "required", "AVH_CDS_ISSUERS_FILE": str(path)})).test_client()


ES384 = ECAlgorithm(ECAlgorithm.SHA384)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


header_values = st.none() | st.text(max_size=12) | st.integers() | st.sampled_from(
    ["ES384", "RS384", "none", "HS256", "ec-1", "rsa-1", "https://ehr.test/.well-known/jwks.json"])


@st.composite
def authorizations(draw):
    """Random strings, and JWTs with generated headers and claims, signed or not by the trusted key."""
    if draw(st.booleans()):
        return "Bearer " + draw(st.text(st.characters(exclude_categories=("Cc", "Cs")), max_size=60))
    around_now = st.integers(-10**6, 10**6).map(lambda offset: int(time.time()) + offset)
    payload = {**claims(), **draw(st.dictionaries(
        st.sampled_from(["iss", "aud", "exp", "iat", "jti", "tenant", "nbf"]),
        st.none() | around_now | st.text(max_size=20) | st.just(ISS), max_size=4))}
    header = {"alg": "ES384", "kid": "ec-1", **draw(st.dictionaries(
        st.sampled_from(["alg", "kid", "jku", "typ", "crit", "x5u"]), header_values, max_size=3))}
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    signature = b64(ES384.sign(signing_input.encode(), Keys.ec))       # signed even where PyJWT would refuse
    tok = f"{signing_input}.{draw(st.sampled_from([signature, signature[::-1], signature[:10], '']))}"
    return "Bearer " + tok


@given(authorization=authorizations(), path=st.sampled_from(["/cds-services", INVOKE, INVOKE + "/feedback"]))
@settings(FUZZ, max_examples=600)
def test_forged_authorizations_get_401_never_5xx(secured, no_network, authorization, path):
    if path == "/cds-services":
        response = secured.get(path, headers={"Authorization": authorization})
    else:
        response = secured.post(path, json=hook_request(), headers={"Authorization": authorization})
    assert response.status_code in {200, 400, 401}
    assert not no_network.calls


def test_the_openapi_document_is_served_and_names_the_error_answers():
    document = CLIENT.get("/openapi.json").json
    assert document["openapi"].startswith("3.1")
    invoke = document["paths"]["/cds-services/{service_id}"]["post"]["responses"]
    assert {"200", "400", "401", "403", "404", "412", "413"} <= set(invoke)
    assert CLIENT.get("/openapi.json", headers=bearer("anything")).status_code == 200
