"""JWT authentication of CDS calls (issue 4): what passes, what fails, and that failing never reaches out."""
import base64
import hashlib
import hmac
import json
import time
import uuid

import pytest
from cryptography.hazmat.primitives import serialization

from tests.security_support import (BASE, FHIR, INVOKE, ISS, JWKS_URL, Keys, bearer, claims, hook_request, http, issuer,
                              loopback_only, make_app, token)

__all__ = ["http", "loopback_only"]     # fixtures used by the tests below


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segment(obj: dict) -> str:
    return b64(json.dumps(obj).encode())


@pytest.fixture
def client(tmp_path):
    return make_app(tmp_path).test_client()


def invoke(client, tok, body=None):
    return client.post(INVOKE, json=body or hook_request(), headers=bearer(tok))


def test_valid_es384_token_passes_on_discovery_service_and_feedback(client, http):
    assert client.get("/cds-services", headers=bearer(token("/cds-services"))).status_code == 200
    response = invoke(client, token())
    assert response.status_code == 200
    assert response.json["cards"], "the AVH patient should get cards"
    feedback = {"feedback": [{"card": str(uuid.uuid4()), "outcome": "overridden",
                              "outcomeTimestamp": "2026-11-24T00:00:00Z"}]}
    path = INVOKE + "/feedback"
    assert client.post(path, json=feedback, headers=bearer(token(path))).status_code == 200
    assert not http.calls


def test_valid_rs384_token_passes(client, http):
    assert invoke(client, token(alg="RS384", kid="rsa-1")).status_code == 200
    assert not http.calls


def test_allowed_jku_and_tenant_pass(tmp_path, http):
    client = make_app(tmp_path, [issuer(tenants=["hospital-a"])]).test_client()
    assert invoke(client, token(jku=JWKS_URL, tenant="hospital-a")).status_code == 200
    assert not http.calls


def _hs256_with_public_key() -> str:
    """The classic alg-confusion forgery: HMAC keyed with the issuer's public key (which anyone has)."""
    pem = Keys.ec.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    signing_input = f"{segment({'alg': 'HS256', 'typ': 'JWT', 'kid': 'ec-1'})}.{segment(claims())}"
    return f"{signing_input}.{b64(hmac.new(pem, signing_input.encode(), hashlib.sha256).digest())}"


def _tampered() -> str:
    head, _, sig = token().split(".")
    return f"{head}.{segment({**claims(), 'iss': ISS, 'sub': 'someone-else'})}.{sig}"


def _not_yet_valid() -> str:
    future = int(time.time()) + 600
    return token(iat=future, exp=future + 300)


BAD_TOKENS = {
    "expired": lambda: token(iat=int(time.time()) - 900, exp=int(time.time()) - 600),
    "not yet valid (iat in the future)": _not_yet_valid,
    "wrong aud": lambda: token(aud=BASE + "/cds-services/another-service"),
    "aud of another host": lambda: token(aud="https://elsewhere.test" + INVOKE),
    "wrong iss": lambda: token(iss="https://attacker.test"),
    "unknown kid": lambda: token(kid="no-such-key"),
    "alg none": lambda: f"{segment({'alg': 'none', 'typ': 'JWT', 'kid': 'ec-1'})}.{segment(claims())}.",
    "HS256 signed with the public key": _hs256_with_public_key,
    "tampered payload": _tampered,
    "signed by an untrusted key": lambda: token(key=Keys.other_ec),
    "disallowed jku": lambda: token(jku="https://attacker.test/jwks.json"),
    "no jti": lambda: token(jti=None),
    "no exp": lambda: token(exp=None),
    "lifetime too long": lambda: token(exp=int(time.time()) + 86400),
    "RS384 header on the EC key": lambda: token(alg="RS384", kid="ec-1"),
    "not a JWT": lambda: "not-a-jwt",
    "typ other than JWT": lambda: token(typ="at+jwt"),
}


@pytest.mark.parametrize("case", BAD_TOKENS)
def test_bad_token_is_a_json_401_and_reaches_nobody(client, http, case):
    response = invoke(client, BAD_TOKENS[case](), hook_request(fhir_server=FHIR, prefetch_keys=()))
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert response.json["error"] == "invalid_token" and response.json["reason"]
    assert not http.calls


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Basic dXNlcjpwYXNz"}, {"Authorization": "Bearer "}])
def test_missing_or_non_bearer_credentials_are_refused(client, headers):
    assert client.get("/cds-services", headers=headers).status_code == 401
    assert client.post(INVOKE, json=hook_request(), headers=headers).status_code == 401


def test_token_for_discovery_is_refused_on_a_service_call(client):
    assert invoke(client, token("/cds-services")).status_code == 401


def test_public_url_sets_the_expected_audience(tmp_path):
    client = make_app(tmp_path, AVH_CDS_PUBLIC_URL="https://cds.example.org/avh/").test_client()
    assert invoke(client, token()).status_code == 401        # aud is http://localhost/...: not what we are called as
    assert invoke(client, token(aud="https://cds.example.org/avh" + INVOKE)).status_code == 200


def test_replayed_jti_is_refused(client):
    tok = token()
    assert invoke(client, tok).status_code == 200
    assert invoke(client, tok).status_code == 401
    # A fresh token with the same jti is a replay too.
    jti = json.loads(base64.urlsafe_b64decode(tok.split(".")[1] + "==="))["jti"]
    assert invoke(client, token(jti=jti)).status_code == 401


def test_tenant_is_required_when_the_issuer_lists_tenants(tmp_path):
    client = make_app(tmp_path, [issuer(tenants=["hospital-a"])]).test_client()
    assert invoke(client, token()).status_code == 401
    assert invoke(client, token(tenant="hospital-b")).status_code == 401
    assert invoke(client, token(tenant="hospital-a")).status_code == 200


def test_clock_skew_is_tolerated_within_the_configured_leeway(tmp_path):
    client = make_app(tmp_path, AVH_CDS_CLOCK_SKEW_SECONDS="30").test_client()
    now = int(time.time())
    assert invoke(client, token(iat=now + 10, exp=now + 300)).status_code == 200
    assert invoke(client, token(iat=now - 300, exp=now - 10)).status_code == 200
    assert invoke(client, token(iat=now + 120, exp=now + 400)).status_code == 401


def test_algorithm_allowlist_is_configurable_but_never_admits_hmac_or_none(tmp_path):
    client = make_app(tmp_path, AVH_CDS_ALGORITHMS="ES384").test_client()
    assert invoke(client, token(alg="RS384", kid="rsa-1")).status_code == 401
    assert invoke(client, token()).status_code == 200
    for bad in ("HS256", "none", "ES384,HS512"):
        with pytest.raises(ValueError, match="asymmetric"):
            make_app(tmp_path, AVH_CDS_ALGORITHMS=bad)


def test_without_trusted_issuers_every_call_is_refused(tmp_path):
    client = make_app(tmp_path, issuers=[]).test_client()
    assert invoke(client, token()).status_code == 401


@pytest.mark.parametrize("entry, problem", [
    ({"jwks_url": JWKS_URL}, "iss"),
    ({"iss": ISS}, "jwks"),
    ({"iss": ISS, "jwks_url": "ftp://x"}, "jwks_url"),
    ({"iss": ISS, "jwks_url": JWKS_URL, "fhir_servers": "https://one"}, "fhir_servers"),
    ({"iss": ISS, "jwks_url": JWKS_URL, "fhir_servers": ["https://user:pw@host/fhir"]}, "FHIR base"),
])
def test_a_broken_issuers_file_fails_at_start(tmp_path, entry, problem):
    with pytest.raises(ValueError, match=problem):
        make_app(tmp_path, [entry])


def test_auth_off_lets_calls_through_and_warns_at_start_and_then_once_a_minute(caplog, monkeypatch):
    import service.security as security
    from service import create_app
    from service.config import Settings
    warnings = lambda: [r for r in caplog.records if "AVH_CDS_AUTH=off" in r.getMessage() and r.levelname == "WARNING"]  # noqa: E731
    clock = [1000.0]
    monkeypatch.setattr(security.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(security, "_auth_off_reminded", -security.AUTH_OFF_REMINDER_SECONDS)
    client = create_app(Settings.from_env({"AVH_CDS_AUTH": "off"})).test_client()
    assert len(warnings()) == 1                                    # at start-up
    for _ in range(3):
        assert client.get("/cds-services").status_code == 200
    assert len(warnings()) == 2                                    # the first call reminds, the next two do not
    clock[0] += security.AUTH_OFF_REMINDER_SECONDS
    client.get("/cds-services")
    assert len(warnings()) == 3
    access = [r for r in caplog.records if r.getMessage() == "cds call"]
    assert len(access) == 4 and all(r.fields["auth"] == "off" for r in access)


def test_auth_mode_must_be_known():
    from service import create_app
    from service.config import Settings
    with pytest.raises(ValueError, match="AVH_CDS_AUTH"):
        create_app(Settings.from_env({"AVH_CDS_AUTH": "maybe"}))
