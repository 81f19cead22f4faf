"""Hostile review, wrong status codes (issue 15, items 5 to 7): inputs an anonymous or authenticated caller
chooses that used to give a 500, HTML, or the wrong 4xx. Each test's docstring names the attack."""
import base64
import json
import time
import uuid

import pytest
from jwt.api_jws import PyJWS

from tests.test_check_config import configure, run
from tests.security_support import INVOKE, ISS, Keys, bearer, claims, hook_request, http, issuer, make_app, token


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unsigned(header: dict, payload: dict) -> str:
    return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}.AAAA"


def _signed_raw(payload: str) -> str:
    """A validly signed token whose payload is this exact JSON text (PyJWT refuses to mint some of these)."""
    return PyJWS().encode(payload.encode(), Keys.ec, algorithm="ES384", headers={"kid": "ec-1", "typ": "JWT"})


def _raw_claims(**wrong) -> str:
    values = {**claims(tenant="hosp-a"), **wrong}
    return _signed_raw(json.dumps(values))


__all__ = ["configure", "http"]     # fixtures used by the tests below


HEADER = {"alg": "ES384", "typ": "JWT", "kid": "ec-1"}
WRONG_TYPES = {
    "jku as a list": lambda: _unsigned({**HEADER, "jku": ["x"]}, claims(tenant="hosp-a")),
    "jku as an object": lambda: _unsigned({**HEADER, "jku": {}}, claims(tenant="hosp-a")),
    "kid as a list": lambda: _unsigned({**HEADER, "kid": ["ec-1"]}, claims(tenant="hosp-a")),
    "alg as a list": lambda: _unsigned({**HEADER, "alg": ["ES384"]}, claims(tenant="hosp-a")),
    "typ as an object": lambda: _unsigned({**HEADER, "typ": {}}, claims(tenant="hosp-a")),
    "header is a list": lambda: f"{_b64(b'[1]')}.{_b64(json.dumps(claims()).encode())}.AAAA",
    "payload is a list": lambda: f"{_b64(json.dumps(HEADER).encode())}.{_b64(b'[1]')}.AAAA",
    "signed, tenant as a list": lambda: token(tenant=["hosp-a"]),
    "signed, tenant as an object": lambda: token(tenant={"id": "hosp-a"}),
    "signed, iss as a list": lambda: _raw_claims(iss=[ISS]),
    "signed, aud as a number": lambda: token(aud=5, tenant="hosp-a"),
    "signed, aud as an object": lambda: token(aud={}, tenant="hosp-a"),
    "signed, exp as a string": lambda: token(exp="tomorrow", tenant="hosp-a"),
    "signed, exp as a list": lambda: token(exp=[1], tenant="hosp-a"),
    "signed, exp Infinity": lambda: _signed_raw(json.dumps(claims(tenant="hosp-a")).replace(
        '"exp": ', '"exp": Infinity, "x": ')),
    "signed, iat as a string": lambda: token(iat="now", tenant="hosp-a"),
    "signed, iat 1e308": lambda: token(iat=1e308, exp=1e308, tenant="hosp-a"),
    "signed, jti as a number": lambda: token(jti=5, tenant="hosp-a"),
    "signed, jti as a list": lambda: token(jti=["a"], tenant="hosp-a"),
    "signed, jti empty": lambda: token(jti="", tenant="hosp-a"),
}


@pytest.mark.parametrize("case", WRONG_TYPES)
def test_jwt_header_or_claim_of_the_wrong_type_is_a_json_401(tmp_path, case):
    """Attack: a JWT whose header (jku, kid, alg, typ) or claims (tenant, iss, aud, exp, iat, jti) have the
    wrong JSON type, signed or not; `jku: ["x"]` and `tenant: ["hosp-a"]` used to be a 500 (unhashable)."""
    client = make_app(tmp_path, [issuer(tenants=["hosp-a"])]).test_client()
    response = client.post(INVOKE, json=hook_request(), headers=bearer(WRONG_TYPES[case]()))
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert response.json["error"] == "invalid_token" and response.json["reason"] != "other"
    # the well-typed token still passes: the refusal is about the type, not the issuer set-up
    assert client.post(INVOKE, json=hook_request(), headers=bearer(token(tenant="hosp-a"))).status_code == 200


# --- item 7: oversized, mistyped and almost-valid requests ---------------------------------------------------

@pytest.fixture
def open_client(tmp_path):
    from service import create_app
    from service.config import Settings
    return create_app(Settings.from_env({"AVH_CDS_AUTH": "off"}, sqlite_path=tmp_path / "s.sqlite3")).test_client()


@pytest.mark.parametrize("shift", [0, -1, -20])
def test_a_token_whose_exp_is_not_after_its_iat_is_a_401(tmp_path, shift):
    """Attack (hard13): a signed token with exp at or before iat (iat now, exp up to 20 s before): valid at no
    instant, it passed on the clock skew (30 s), as a token just expired may. It is malformed: 401."""
    client = make_app(tmp_path).test_client()
    now = int(time.time())
    response = client.post(INVOKE, json=hook_request(), headers=bearer(token(iat=now, exp=now + shift)))
    assert response.status_code == 401 and response.json["reason"] == "malformed_token"


def test_a_hook_instance_with_a_trailing_newline_is_a_400(open_client):
    """Attack: hookInstance "<uuid>\\n": Python's `$` matches before a final newline, so the schema's pattern
    accepted it (and it reached the log and the issued-card store)."""
    body = hook_request()
    body["hookInstance"] = str(uuid.uuid4()) + "\n"
    response = open_client.post(INVOKE, json=body)
    assert response.status_code == 400 and "hookInstance" in response.json["message"]


def test_a_token_type_with_a_trailing_newline_is_a_400(open_client):
    """Attack: fhirAuthorization.token_type "Bearer\\n", accepted by the same `$`."""
    body = hook_request(fhir_server="http://127.0.0.1:9/fhir")
    body["fhirAuthorization"] = {"access_token": "t", "token_type": "Bearer\n", "expires_in": 60, "scope": "s",
                                 "subject": "x"}
    response = open_client.post(INVOKE, json=body)
    assert response.status_code == 400 and "token_type" in response.json["message"]


@pytest.mark.parametrize("access_token", ["abc\r\nX-Injected: 1", "abc\n", "abc\u2028def", "a\u0000b", "a b", "abc\u00e9",
                                          "a=b", ""])
def test_an_access_token_that_cannot_be_a_bearer_credential_is_a_400(open_client, access_token):
    """Attack (hostile11): fhirAuthorization.access_token with a line break, a character beyond Latin-1, a NUL, a
    space. It went into the Authorization header of every fetch: requests refused the line breaks and http.client the
    characters it cannot encode, each key then 'failed' and the call answered 412 (a retry that can never succeed,
    with a traceback in the log), and the NUL, the space and Latin-1 were sent as they were. RFC 6750's b64token is
    what a Bearer credential is: anything else is the caller's mistake, named (when it is to be sent: hard13)."""
    body = hook_request(fhir_server="http://127.0.0.1:9/fhir", prefetch_keys=())
    body["fhirAuthorization"] = {"access_token": access_token, "token_type": "Bearer", "expires_in": 60, "scope": "s",
                                 "subject": "x"}
    response = open_client.post(INVOKE, json=body)
    assert response.status_code == 400 and "fhirAuthorization/access_token" in response.json["message"]


@pytest.mark.parametrize("access_token", ["eyJhbGciOiJSUzM4NCJ9.eyJzdWIiOiIxIn0.c2ln-_", "a.b~c+d/e==", "opaque-123"])
def test_a_bearer_credential_is_sent(open_client, access_token):
    """RFC 6750's b64token (JWTs, opaque tokens, padding) passes the check and reaches the fetch."""
    body = hook_request(fhir_server="http://127.0.0.1:9/fhir", prefetch_keys=())
    body["fhirAuthorization"] = {"access_token": access_token, "token_type": "Bearer", "expires_in": 60, "scope": "s",
                                 "subject": "x"}
    response = open_client.post(INVOKE, json=body)
    assert response.status_code == 412 and "could not be reached" in response.get_data(as_text=True)


@pytest.mark.parametrize("access_token", ["opaque!token", "a b", "abc\n", "abc\u00e9", "a\u0000b"])
def test_an_access_token_nothing_is_fetched_with_is_not_refused(open_client, access_token):
    """Attack (hard13, a leftover of hostile11): an access token outside RFC 6750's b64token (RFC 6749 lets an access
    token be any printable ASCII, '!' or a space among them) was a 400 even when the client had prefetched every key:
    a call with all the data it needs answered with no cards, for a token the service never sends. It is refused only
    when something is to be fetched with it (above)."""
    body = hook_request(fhir_server="http://127.0.0.1:9/fhir")
    body["fhirAuthorization"] = {"access_token": access_token, "token_type": "Bearer", "expires_in": 60, "scope": "s",
                                 "subject": "x"}
    response = open_client.post(INVOKE, json=body)
    assert response.status_code == 200 and response.json["cards"]


@pytest.mark.parametrize("change, field", [({"expires_in": 0}, "fhirAuthorization/expires_in"),
                                           ({"expires_in": -3600}, "fhirAuthorization/expires_in"),
                                           ({"patient": "someone-else"}, "fhirAuthorization/patient")])
def test_an_access_token_that_cannot_read_the_patient_is_a_400_before_any_fetch(open_client, http, change, field):
    """Attack (hard13): fhirAuthorization expired when sent (expires_in 0 or less), or scoped to another patient than
    context.patientId, with keys left to fetch. Each fetch went out with it and came back 401/403 (a 412 no retry can
    mend), or with another patient's data. A 400 names the field, before any request; the patient named is never
    repeated."""
    body = hook_request(fhir_server="http://127.0.0.1:9/fhir", prefetch_keys=())
    body["fhirAuthorization"] = {"access_token": "tok-123", "token_type": "Bearer", "expires_in": 60, "scope": "s",
                                 "subject": "x", "patient": body["context"]["patientId"], **change}
    response = open_client.post(INVOKE, json=body)
    assert response.status_code == 400 and field in response.json["message"]
    assert "someone-else" not in response.get_data(as_text=True) and not http.calls


@pytest.mark.parametrize("change, field", [({"expires_in": 0}, "fhirAuthorization/expires_in"),
                                           ({"access_token": "a b"}, "fhirAuthorization/access_token"),
                                           ({"patient": "someone-else"}, "fhirAuthorization/patient")])
def test_explain_refuses_an_unusable_access_token_as_a_call_does(open_client, http, change, field):
    """review of hard13's own change: POST .../explain resolves the prefetch as a call does; the 400 a call gives
    for fhirAuthorization that cannot fetch was a 500 there (the route caught only the 412)."""
    body = hook_request(fhir_server="http://127.0.0.1:9/fhir", prefetch_keys=())
    body["fhirAuthorization"] = {"access_token": "tok-123", "token_type": "Bearer", "expires_in": 60, "scope": "s",
                                 "subject": "x", **change}
    response = open_client.post(INVOKE + "/explain", json=body)
    assert response.status_code == 400 and field in response.json["message"] and not http.calls


def test_an_access_token_scoped_to_the_patient_is_sent(open_client, http):
    """fhirAuthorization.patient naming context.patientId, expires_in positive: the token goes with every fetch."""
    body = hook_request(fhir_server="http://127.0.0.1:9/fhir", prefetch_keys=())
    body["fhirAuthorization"] = {"access_token": "tok-123", "token_type": "Bearer", "expires_in": 60, "scope": "s",
                                 "subject": "x", "patient": body["context"]["patientId"]}
    response = open_client.post(INVOKE, json=body)
    assert response.status_code == 412
    assert http.calls and all(c.request.headers["Authorization"] == "Bearer tok-123" for c in http.calls)


@pytest.mark.parametrize("scope, fetched", [
    ("patient/Patient.read patient/Observation.read", False), ("patient/Condition.write", False),
    ("patient/Condition.c user/Observation.rs", False),
    ("patient/Condition.read", True), ("patient/*.read", True), ("user/*.*", True), ("patient/Condition.rs", True),
    ("system/Condition.s?clinical-status=active", True), ("launch openid fhirUser", True), ("patient/Condition.READ", True)])
def test_a_type_the_token_scope_does_not_grant_is_not_fetched(open_client, http, scope, fetched):
    """Attack (hard13): fhirAuthorization whose SMART scope grants no read of Condition. The Conditions were asked
    for all the same: refused (403, a 412 saying only "lacks the scope"), or read beyond what the token was given
    when the server does not check. A type the scope does not grant is not fetched, and the 412 names the scope; a
    scope naming no resource, or one not read here, leaves it to the server."""
    body = hook_request(fhir_server="http://127.0.0.1:9/fhir", prefetch_keys=())
    body["fhirAuthorization"] = {**AUTHORIZATION, "scope": scope}
    response = open_client.post(INVOKE, json=body)
    assert response.status_code == 412
    asked = any("/Condition" in call.request.url for call in http.calls)
    assert asked == fetched
    named = "fhirAuthorization.scope grants no read of Condition" in response.get_data(as_text=True)
    assert named != fetched


AUTHORIZATION = {"access_token": "t", "token_type": "Bearer", "expires_in": 60, "scope": "s", "subject": "x"}
SECRET_BEARING = {      # fhirAuthorization as sent -> what the 400 names (where, and the rule broken)
    "token with a !": ({**AUTHORIZATION, "access_token": "opaque!Secret-Token-4711"},
                       "fhirAuthorization/access_token: must be RFC 6750's b64token"),
    "token with a space": ({**AUTHORIZATION, "access_token": "secret token 4711"},
                           "fhirAuthorization/access_token: must be RFC 6750's b64token"),
    "token in a list": ({**AUTHORIZATION, "access_token": ["Secret-Token-4711"]},
                        "fhirAuthorization/access_token: must be a non-empty string"),
    "token as token_type": ({**AUTHORIZATION, "token_type": "Secret-Token-4711"},
                            'fhirAuthorization/token_type: must be valid under enum ["Bearer", "bearer"]'),
    "token as scope, a list": ({**AUTHORIZATION, "scope": ["Secret-Token-4711"]},
                               'fhirAuthorization/scope: must be valid under type "string"'),
    "header as fhirAuthorization": ("Bearer Secret-Token-4711", 'fhirAuthorization: must be valid under type "object"'),
    "token_type missing": ({"access_token": "Secret-Token-4711"},
                           "fhirAuthorization: 'token_type' is a required property"),
}


@pytest.mark.parametrize("case", SECRET_BEARING)
def test_an_access_token_is_never_written_back_in_an_answer(open_client, caplog, case):
    """review11 (of b4e34dc): a token refused by the request schema was quoted in the 400 (jsonschema's "'opaque!
    Secret-Token-4711' does not match ..."), a credential written into an error body that EHR integration engines
    and the sandbox's panel keep. shared/docs/cds-hooks.md: never log an access token. Every refusal of
    fhirAuthorization (writeOnly in the request schema) names the field and the rule, never the value; nor does the
    log hold it. (Nothing prefetched: a b64token is required only of a token a fetch would send, hard13.)"""
    body = hook_request(fhir_server="http://127.0.0.1:9/fhir", prefetch_keys=())
    body["fhirAuthorization"], refusal = SECRET_BEARING[case]
    with caplog.at_level("DEBUG"):
        answer = open_client.post(INVOKE, json=body)
    assert answer.status_code == 400 and refusal in answer.json["message"]
    assert "ecret" not in answer.get_data(as_text=True)
    assert caplog.records and not any("ecret" in str(vars(r)) for r in caplog.records)


@pytest.mark.parametrize("entries, where", [("x", "draftOrders/entry:"), ([1, "dex"], "draftOrders/entry/0:"),
                                            ([{"resource": "x"}, "dex"], "draftOrders/entry/0/resource:")],
                         ids=["entry-string", "entry-number", "resource-string"])
def test_draft_orders_with_junk_entries_are_a_400_naming_them(open_client, entries, where):
    """Attack: order-sign whose draftOrders Bundle has `"entry": "x"` (or a number or a string resource next to a
    30-day dexamethasone draft): read as no drafts (or the junk skipped), the call answered 200 with the cards of
    whatever was left, silent about an order the clinician is signing."""
    from tests.fhir_records import bounds_duration, draft_dexamethasone, hook_request as record_request, in_pathway_chart
    dex = draft_dexamethasone([bounds_duration(30)], patient_id="p-dr", id="d1")
    body = record_request("order-sign", "p-dr", in_pathway_chart("p-dr"), [dex])
    body["context"]["draftOrders"]["entry"] = entries if isinstance(entries, str) else \
        [{"resource": dex} if e == "dex" else e for e in entries]
    response = open_client.post("/cds-services/avh-order-sign", json=body)
    assert response.status_code == 400 and where in response.json["message"]


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "text/html", None])
@pytest.mark.parametrize("path", [INVOKE, INVOKE + "/feedback", INVOKE + "/explain"])
def test_a_post_that_is_not_declared_json_is_a_415(open_client, content_type, path):
    """Attack: a service call, feedback or an explanation (auth off: its route is not the guard's blueprint)
    posted with a Content-Type other than JSON (or none); it was read as JSON all the same."""
    headers = {"Content-Type": content_type} if content_type else {}
    response = open_client.post(path, data=json.dumps(hook_request()), headers=headers)
    assert response.status_code == 415
    assert response.json["error"] == "unsupported_media_type"


@pytest.mark.parametrize("coding", ["gzip", "deflate", "br", "gzip, identity", "x\u00e9"])
@pytest.mark.parametrize("path", [INVOKE, INVOKE + "/feedback", INVOKE + "/explain"])
def test_a_body_with_a_content_coding_is_a_415(open_client, coding, path):
    """Attack (hard13): a body sent with Content-Encoding: gzip (or any coding). The header was ignored: a gzipped
    body was a 400 "not valid JSON" (the wrong reason: it may be valid JSON, compressed), and a plain JSON body
    labelled gzip was read as JSON although no proxy or client reads it so. RFC 9110 8.4.1: a coding the server does
    not accept is a 415."""
    import gzip
    body = json.dumps(hook_request()).encode()
    response = open_client.post(path, data=gzip.compress(body) if coding == "gzip" else body,
                                headers={"Content-Type": "application/json", "Content-Encoding": coding})
    assert response.status_code == 415 and response.json["error"] == "unsupported_media_type"
    assert "Content-Encoding" in response.json["message"]


@pytest.mark.parametrize("coding", ["identity", ""])
def test_a_body_with_no_content_coding_is_read(open_client, coding):
    """Not an attack: Content-Encoding identity (or empty) is no coding."""
    response = open_client.post(INVOKE, data=json.dumps(hook_request()),
                                headers={"Content-Type": "application/json", "Content-Encoding": coding})
    assert response.status_code == 200


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8", "application/fhir+json"])
def test_json_content_types_are_accepted(open_client, content_type):
    """Not an attack: JSON with a charset, or a +json type, is JSON."""
    response = open_client.post(INVOKE, data=json.dumps(hook_request()), headers={"Content-Type": content_type})
    assert response.status_code == 200


@pytest.fixture(scope="module")
def gunicorn(tmp_path_factory):
    from tests.deployment_support import Gunicorn
    server = Gunicorn(tmp_path_factory.mktemp("gunicorn") / "gunicorn.log",
                      AVH_CDS_MAX_BODY_BYTES="4096")
    yield server
    server.stop()


def _raw(server, request: bytes) -> tuple[int, dict, bytes]:
    import socket
    port = int(server.base.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(request)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


@pytest.mark.parametrize("request_bytes, status, error", [
    (b"GET /cds-services/" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "uri_too_long"),
    (b"GET /cds-services HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n", 431, "headers_too_large"),
    (b"GET /cds-services HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(120)) + b"\r\n",
     431, "headers_too_large"),
    (b"GET /cds-services HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n", 400, "bad_request"),
], ids=["long URI", "long header", "too many headers", "malformed header"])
def test_oversized_uris_and_headers_get_json_under_gunicorn(gunicorn, request_bytes, status, error):
    """Attack: a request line or headers over gunicorn's limits (and a malformed header); gunicorn answered with
    its HTML page before the app saw the request."""
    got, headers, body = _raw(gunicorn, request_bytes)
    assert got == status
    assert headers["content-type"] == "application/json"
    assert json.loads(body)["error"] == error


def _chunked_post(size: int) -> bytes:
    body = json.dumps({**hook_request(), "padding": "x" * size}).encode()
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 1000]), body[i:i + 1000]) for i in range(0, len(body), 1000))
    return (b"POST /cds-services/avh-patient-view HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + chunks + b"0\r\n\r\n")


def test_a_chunked_body_over_the_limit_is_a_413_under_gunicorn(gunicorn):
    """Attack: a body over AVH_CDS_MAX_BODY_BYTES sent chunked (no Content-Length); werkzeug cut it at the limit
    and it was answered 400 invalid_json."""
    status, headers, body = _raw(gunicorn, _chunked_post(8000))
    assert status == 413 and json.loads(body)["error"] == "body_too_large"
    status, _, body = _raw(gunicorn, _chunked_post(100))          # under the limit, chunked: answered
    assert status == 200 and "cards" in json.loads(body)


def test_a_megabyte_hook_name_is_not_echoed_whole(open_client):
    """Attack: `"hook": "Z" * 1_000_000` sent to avh-patient-view: the 400 quoted the whole value back, a 1 MB
    error body for a 1 MB request (every other message cuts what the caller chose)."""
    body = hook_request()
    body["hook"] = "Z" * 1_000_000
    response = open_client.post(INVOKE, json=body)
    assert response.status_code == 400 and response.json["error"] == "wrong_hook"
    assert len(response.get_data()) < 1000 and "'ZZZZ" in response.json["message"]


# 1e400 was here: valid JSON beyond a double, its resource is now left out and the call answered
# (tests/test_number_beyond_double.py; ../shared/docs/cds-hooks.md: invalid FHIR in prefetch does not fail the call).
@pytest.mark.parametrize("bad, named", [(b'"\\ud800"', "no low surrogate in string"),
                                        (b'"\xed\xa0\x80"', "not valid UTF-8"), (b"NaN", "expected a JSON value")])
def test_json_that_cannot_be_read_is_a_400_naming_what_and_where(open_client, bad, named):
    """Attack (hard13): one lone surrogate or one NaN deep in a prefetch
    Observation of an otherwise good call. The 400 said only "not valid JSON (JSONDecodeError)": the integrator could
    not tell what, nor where in megabytes of prefetch. It says what orjson found and where (never the text sent)."""
    from tests.fhir_records import day, hook_request as record_request, in_pathway_chart, motor, today
    body = record_request("patient-view", "p-js", in_pathway_chart("p-js"))
    body["prefetch"]["observations"]["entry"].append({"resource": {**motor(10, day(1, since=today()), patient_id="p-js"),
                                                                   "valueQuantity": {"value": "BAD"}}})
    raw = json.dumps(body).encode().replace(b'"BAD"', bad)
    response = open_client.post(INVOKE, data=raw, headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and response.json["error"] == "invalid_json"
    assert named in response.json["message"] and "line 1 column" in response.json["message"]


@pytest.mark.parametrize("suffix", ["", "/feedback", "/explain"])
def test_a_long_unknown_service_id_is_not_echoed_whole(open_client, suffix):
    """Attack (hard13): a POST to /cds-services/<3,000 characters>: the 404 quoted the whole id back (as the hook
    name once was), a request line's worth of the caller's text in the error body."""
    response = open_client.post("/cds-services/" + "Z" * 3000 + suffix, json=hook_request())
    assert response.status_code == 404 and response.json["error"] == "unknown_service"
    assert len(response.get_data()) < 500 and "'ZZZZ" in response.json["message"]


# --- avh-cds check-config: settings an operator mistypes ---------------------------------------------------

@pytest.mark.parametrize("name, value", [("AVH_CDS_MAX_BODY_BYTES", "16MB"), ("AVH_CDS_FETCH_TIMEOUT_SECONDS", "2s")])
def test_check_config_names_a_setting_that_is_not_a_number(configure, capsys, name, value):
    """Attack: AVH_CDS_MAX_BODY_BYTES=16MB: `avh-cds check-config`, whose job is to name every problem, died
    with a ValueError traceback that named no variable."""
    configure(**{name: value})
    status, out = run(capsys)
    assert status == 1 and f"problem: {name}='{value}' is not a" in out and "Traceback" not in out


def test_check_config_does_not_hang_on_an_endless_issuers_file(configure, capsys):
    """Attack: AVH_CDS_ISSUERS_FILE=/dev/zero (or a FIFO, or a huge file): read whole before parsing, check-config
    (and the server's start) never finished and grew without bound."""
    configure(AVH_CDS_ISSUERS_FILE="/dev/zero")
    status, out = run(capsys)
    assert status == 1 and "FAIL  AVH_CDS_ISSUERS_FILE" in out and "larger than" in out


# --- the compose proxy (deploy/nginx.conf) ---------------------------------------------------------------

def _nginx_conf() -> str:
    from pathlib import Path
    return (Path(__file__).resolve().parent.parent / "deploy" / "nginx.conf").read_text()


def test_the_proxy_accepts_every_body_the_service_accepts():
    """Attack (through deploy/nginx.conf, live against nginx 1.22 and gunicorn): a 7 MB chart, which the service
    accepts (AVH_CDS_MAX_BODY_BYTES is 16 MiB), got nginx's HTML "413 Request Entity Too Large" (5m cap)."""
    import re
    from service.config import Settings
    size = re.search(r"client_max_body_size (\d+)m;", _nginx_conf())
    assert size and int(size.group(1)) * 1024 * 1024 >= Settings().max_body_bytes


def test_the_proxy_answers_its_own_errors_in_json():
    """Attack: a body over the proxy's cap, and every replica down: nginx answered with its HTML error pages
    (413, 502), where every avh-cds error is JSON, and the 502 had no Retry-After. Slow clients are held in nginx
    (header and body timeouts), never in a gunicorn thread (12 slowloris connections starved gunicorn alone)."""
    conf = _nginx_conf()
    assert "error_page 413 @too_large;" in conf and "error_page 502 504 =503 @unavailable;" in conf
    for name in ("too_large", "unavailable"):
        block = conf.split(f"location @{name} {{", 1)[1].split("}", 1)[0]
        assert "default_type application/json;" in block and "return " in block
    assert "add_header Retry-After" in conf.split("location @unavailable {", 1)[1].split("}", 1)[0]
    assert "client_header_timeout" in conf and "client_body_timeout" in conf and "proxy_request_buffering off" not in conf
