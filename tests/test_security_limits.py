"""Input limits (body size, JSON depth, prefetch resources) and JSON-line logs without secrets."""
import io
import json
import logging
import re
import uuid

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from tests.security_support import FHIR, INVOKE, bearer, hook_request, http, loopback_only, make_app, token
from service import create_app
from service.config import Settings
from service.errors import ApiError
from service.nesting import json_depth
from service.security.limits import check_limits, prefetch_resource_count, request_depth, within_depth
from service.security.logs import JsonLinesFormatter

__all__ = ["http", "loopback_only"]


def off_client(**env):
    return create_app(Settings.from_env({"AVH_CDS_AUTH": "off", **env})).test_client()


def nested(depth: int):
    value = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def test_body_larger_than_the_limit_is_413_json():
    client = off_client(AVH_CDS_MAX_BODY_BYTES="2000")
    body = hook_request()
    body["extension"] = {"padding": "x" * 3000}
    response = client.post(INVOKE, json=body)
    assert response.status_code == 413 and response.json["error"] == "body_too_large"
    body["extension"] = {"padding": "x" * 10}
    assert client.post(INVOKE, json=body).status_code == 200


def test_json_nested_deeper_than_the_limit_is_400_json():
    client = off_client(AVH_CDS_MAX_JSON_DEPTH="12")
    body = hook_request()
    body["extension"] = nested(12)
    response = client.post(INVOKE, json=body)
    assert response.status_code == 400 and response.json["error"] == "json_too_deep"
    body["extension"] = nested(8)
    assert client.post(INVOKE, json=body).status_code == 200
    feedback = {"feedback": [{"card": "c", "outcome": "overridden", "outcomeTimestamp": "2026-11-24T00:00:00Z",
                              "extension": nested(20)}]}
    assert client.post(INVOKE + "/feedback", json=feedback).json["error"] == "json_too_deep"


def test_nesting_beyond_the_parsers_recursion_limit_is_still_a_4xx():
    response = off_client().post(INVOKE, data="[" * 100_000 + "]" * 100_000, content_type="application/json")
    assert 400 <= response.status_code < 500 and response.json["error"]


def test_more_prefetch_resources_than_the_limit_is_413_json():
    client = off_client(AVH_CDS_MAX_PREFETCH_RESOURCES="3")
    body = hook_request()                       # a Patient and a Bundle of two Conditions: 3 resources
    assert client.post(INVOKE, json=body).status_code == 200
    body["prefetch"]["observations"] = {"resourceType": "Observation", "id": "o-1"}
    response = client.post(INVOKE, json=body)
    assert response.status_code == 413 and response.json["error"] == "too_many_resources"


def test_depth_and_resource_counting():
    assert json_depth(1) == 0 and json_depth({}) == 1 and json_depth([[], {"a": [1]}]) == 3
    assert json_depth(nested(5000)) == 5000                  # no recursion: deep input cannot crash the check
    assert prefetch_resource_count(hook_request()) == 3
    assert prefetch_resource_count({"prefetch": {"a": None, "b": {"resourceType": "Bundle"}}}) == 1


def test_request_depth_leaves_out_only_the_resources_inside_prefetch_bundles():
    body = hook_request()
    shallow = request_depth(body)
    assert shallow == json_depth({**body, "prefetch": {**body["prefetch"], "conditions": {"resourceType": "Bundle"}}})
    body["prefetch"]["conditions"]["entry"][0]["resource"]["extension"] = nested(30)
    assert request_depth(body) == shallow < 12 < json_depth(body)
    body["prefetch"]["conditions"]["meta"] = nested(30)              # the Bundle itself is walked
    body["prefetch"]["patient"]["extension"] = nested(40)           # and so is a resource sent on its own
    assert request_depth(body) == json_depth(body) == 3 + 40
    assert request_depth({"prefetch": {}}) == 2 and request_depth([[]]) == 2


# Requests of every shape around the prefetch exemption: Bundles (with and without entry) and other values in
# prefetch, prefetch as a list or a scalar, bodies that are not objects.
_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=2),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.sampled_from(["a", "entry", "resourceType", "prefetch"]), inner, max_size=3)
    | st.fixed_dictionaries({"resourceType": st.sampled_from(["Bundle", "Patient"])}, optional={"entry": inner, "x": inner}),
    max_leaves=30)
_requests = st.one_of(_values, st.dictionaries(st.sampled_from(["hook", "context", "prefetch"]), _values, max_size=3),
                      st.fixed_dictionaries({"prefetch": st.dictionaries(st.text(max_size=2), _values, max_size=4)},
                                            optional={"context": _values}))


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_requests, st.integers(-1, 8))
def test_the_depth_check_in_rust_agrees_with_request_depth(body, limit):
    assert within_depth(limit)(body) is (request_depth(body) <= limit)


def test_a_request_too_deep_is_refused_with_its_depth_walked_in_python():
    body = hook_request()
    body["prefetch"]["conditions"]["entry"][0]["resource"]["extension"] = nested(30)     # exempt: not counted
    check_limits(body, request_depth(body), 100)
    with pytest.raises(ApiError) as refused:
        check_limits(body, request_depth(body) - 1, 100)
    assert refused.value.message.startswith(f"the JSON body nests {request_depth(body)} levels deep")


def test_a_deep_resource_inside_prefetch_is_left_out_when_read_and_ignored_when_not(caplog):
    client = off_client(AVH_CDS_MAX_JSON_DEPTH="12")
    body = hook_request()
    unrelated = {"resource": {"resourceType": "Observation", "id": "o-deep", "subject": {"reference": "Patient/pt-1"},
                              "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                              "extension": [nested(30)]}}
    body["prefetch"]["conditions"]["entry"].append(unrelated)
    plain = client.post(INVOKE, json=hook_request()).json["cards"]
    answer = client.post(INVOKE, json=body)
    assert answer.status_code == 200
    assert [c["summary"] for c in answer.json["cards"]] == [c["summary"] for c in plain]
    deep_compression = body["prefetch"]["conditions"]["entry"][1]["resource"]
    deep_compression["extension"] = [{"url": "http://x", "extension": [nested(30)]}]
    answer = client.post(INVOKE, json=body)         # the compression is read, too deep: left out, named
    assert answer.status_code == 200 and plain
    assert [c["source"]["topic"]["code"] for c in answer.json["cards"]] == ["data-unavailable"]
    assert "Condition/c-2" in answer.json["cards"][0]["detail"]
    assert "left out invalid Condition: nests 34 levels deep; at most 12 are read" in caplog.text


@pytest.fixture
def log_lines():
    """Everything any logger writes during the test, as the JSON lines production would print."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonLinesFormatter())
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield lambda: stream.getvalue()
    root.removeHandler(handler)
    root.setLevel(old_level)


def test_logs_are_json_lines_without_tokens_or_patient_data(tmp_path, http, log_lines):
    http.get(re.compile(re.escape(FHIR) + r"/.*"), json={"resourceType": "Bundle", "type": "searchset"})
    client = make_app(tmp_path).test_client()
    access_token = "fhir-access-" + uuid.uuid4().hex
    body = hook_request(patient_name=("Zebulon", "Quixotefamily"), fhir_server=FHIR,
                        prefetch_keys=("patient", "conditions"),
                        fhirAuthorization={"access_token": access_token, "token_type": "Bearer", "expires_in": 300,
                                           "scope": "patient/*.read", "subject": "avh-cds"})
    body["prefetch"]["conditions"]["entry"].append({"resource": {    # invalid FHIR: logged by type and reason
        "resourceType": "Condition", "id": "c-bad", "subject": {"reference": "Patient/pt-1"},
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "71286001"}]}, "onsetDateTime": "Zebulon"}})
    good, bad = token(), token(iss="https://attacker.test")
    assert client.post(INVOKE, json=body, headers=bearer(good)).status_code == 200
    assert http.calls and all(c.request.headers["Authorization"] == f"Bearer {access_token}" for c in http.calls)
    assert client.post(INVOKE, json=body, headers=bearer(bad)).status_code == 401
    assert client.post(INVOKE, json=body, headers=bearer(good)).status_code == 401     # replay
    text = log_lines()
    for secret in (good, bad, good.split(".")[1], good.split(".")[2], access_token, "Zebulon", "Quixotefamily",
                   "MRN-99887766", "1931-02-03"):
        assert secret not in text
    lines = [json.loads(line) for line in text.splitlines()]           # every line is one JSON object
    calls = [line for line in lines if line.get("event") == "cds_call"]
    assert [c["status"] for c in calls] == [200, 401, 401]
    served = calls[0]
    assert served["service"] == "avh-patient-view" and served["hookInstance"] == body["hookInstance"]
    assert served["topics"] and served["ms"] >= 0 and served["iss"] == "https://ehr.test"
    assert calls[1]["auth_failure"] == "iss not trusted" and calls[2]["auth_failure"] == "jti replayed"
    assert any("left out invalid Condition: invalid FHIR at onsetDateTime" in line.get("msg", "") for line in lines)
    assert "c-bad" not in text                       # its id is the sender's (privacy16)


def test_an_unauthenticated_caller_gets_401_before_its_body_is_looked_at(tmp_path, monkeypatch):
    import service.security as security
    parsed = []
    monkeypatch.setattr(security, "check_limits", lambda *args: parsed.append(args))
    client = make_app(tmp_path, AVH_CDS_MAX_JSON_DEPTH="3").test_client()
    body = hook_request()
    body["extension"] = nested(10)
    assert client.post(INVOKE, json=body).status_code == 401
    assert not parsed
    assert client.post(INVOKE, json=body, headers=bearer(token())).status_code == 200    # the stub lets it by
    assert len(parsed) == 1


def test_the_depth_limit_is_capped_where_its_check_fits_a_small_thread_stack(tmp_path):
    """Attack on the operator's side: AVH_CDS_MAX_JSON_DEPTH=2000 let the depth check recurse once per level of a
    1,020-deep body (orjson decodes up to 1,024), which overflowed a 128 KiB thread stack (musl's default) and killed
    the worker. The setting is refused above MAX_JSON_DEPTH_CEILING, named; at the ceiling the request's and the
    resources' depth checks refuse that body in such a thread (in a child process: a crash there is a failure here)."""
    import subprocess
    import sys
    from service.config import MAX_JSON_DEPTH_CEILING
    with pytest.raises(ValueError, match=f"AVH_CDS_MAX_JSON_DEPTH=2000 is not within 1-{MAX_JSON_DEPTH_CEILING}"):
        Settings.from_env({"AVH_CDS_MAX_JSON_DEPTH": "2000"})
    with pytest.raises(ValueError, match="AVH_CDS_MAX_JSON_DEPTH=0 is not within"):
        Settings.from_env({"AVH_CDS_MAX_JSON_DEPTH": "0"})
    assert Settings.from_env({"AVH_CDS_MAX_JSON_DEPTH": str(MAX_JSON_DEPTH_CEILING)}).max_json_depth == MAX_JSON_DEPTH_CEILING
    child = f"""
import threading
threading.stack_size(128 * 1024)
from service.clinical.record import Validator
from service.security.limits import within_depth
deep = 1
for _ in range(1020):
    deep = [deep]
results = []
def check():
    results.append(within_depth({MAX_JSON_DEPTH_CEILING})({{"hook": "patient-view", "context": {{"deep": deep}}}}))
    results.append(Validator({MAX_JSON_DEPTH_CEILING})({{"resourceType": "Condition", "id": "c", "note": deep}})[1])
thread = threading.Thread(target=check)
thread.start()
thread.join()
print(results)
"""
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    refused, reason = eval(done.stdout)
    assert refused is False and "levels deep" in reason


def test_the_access_line_names_the_hook_instance_of_a_refused_call_only_when_it_is_a_uuid(log_lines):
    """The guard keeps the body's hookInstance and the access line checks it when the route did not set one: a
    uuid is logged for a call refused after the limits (unknown service, wrong hook, a fhirServer not allowed), any
    other text is not, and a call refused by the limits logs none."""
    client = off_client(AVH_CDS_MAX_JSON_DEPTH="12")
    sent = [hook_request() for _ in range(6)]
    sent[3]["hookInstance"] = "not a uuid: " + "x" * 50
    sent[4]["extension"] = nested(12)
    sent[5]["fhirServer"] = "https://elsewhere.test/r4"
    statuses = [client.post("/cds-services/no-such-service", json=sent[0]).status_code,
                client.post(INVOKE, json={**sent[1], "hook": "order-sign"}).status_code,
                client.post(INVOKE, json=sent[2]).status_code,
                client.post("/cds-services/no-such-service", json=sent[3]).status_code,
                client.post(INVOKE, json=sent[4]).status_code,
                client.post(INVOKE, json=sent[5]).status_code]
    assert statuses == [404, 400, 200, 404, 400, 403]
    calls = [json.loads(line) for line in log_lines().splitlines() if '"cds_call"' in line]
    assert [c.get("hookInstance") for c in calls] == [sent[0]["hookInstance"], sent[1]["hookInstance"],
                                                     sent[2]["hookInstance"], None, None, sent[5]["hookInstance"]]
