"""fhirServer allowlist (no SSRF), the sandbox preset, and CORS for browser clients."""
import json
import re
import time
import uuid
from pathlib import Path

import jwt
import pytest

from tests.security_support import FHIR, INVOKE, Keys, bearer, hook_request, http, issuer, loopback_only, make_app, token
from service import create_app
from service.config import Settings

__all__ = ["http", "loopback_only"]
# The header and claims the public sandbox sends (captured in the project's shared docs, sandbox-http.json).
SANDBOX_KID = "44823f3d-0b01-4a6c-a80e-b9d3e8a7226f"
SANDBOX_HEADER = {"typ": "JWT", "kid": SANDBOX_KID, "jku": "https://sandbox.cds-hooks.org/.well-known/jwks.json"}
SANDBOX_JWKS = Path(__file__).resolve().parent.parent / "service/security/presets/sandbox-jwks.json"


def needs_fetching(fhir_server):
    """Only the patient is sent: the other keys must be fetched from fhirServer."""
    return hook_request(fhir_server=fhir_server, prefetch_keys=("patient",))


def fhir_searchset(http, base):
    http.get(re.compile(re.escape(base) + r"/.*", re.IGNORECASE), json={"resourceType": "Bundle", "type": "searchset"})


@pytest.mark.parametrize("server", [
    "https://attacker.test/fhir", "https://fhir.ehr.test/r4-other", "https://fhir.ehr.test.attacker.test/r4",
    "http://fhir.ehr.test/r4", "https://fhir.ehr.test:8443/r4", "https://user@fhir.ehr.test/r4",
    "https://fhir.ehr.test/r4?x=1", "http://127.0.0.1:18400/fhir", "http://169.254.169.254/latest"])
def test_fhir_server_outside_the_issuers_list_is_403_before_any_call(tmp_path, http, server):
    client = make_app(tmp_path).test_client()
    response = client.post(INVOKE, json=needs_fetching(server), headers=bearer(token()))
    assert response.status_code == 403
    assert response.json["error"] == "fhir_server_not_allowed"
    assert not http.calls


@pytest.mark.parametrize("server", [FHIR, FHIR + "/", "https://FHIR.ehr.test/r4"])
def test_allowed_fhir_server_is_fetched_from(tmp_path, http, server):
    fhir_searchset(http, FHIR)
    client = make_app(tmp_path).test_client()
    response = client.post(INVOKE, json=needs_fetching(server), headers=bearer(token()))
    assert response.status_code == 200
    assert http.calls and all(c.request.url.lower().startswith(FHIR + "/") for c in http.calls)


def test_an_issuer_cannot_name_another_issuers_fhir_server(tmp_path, http):
    other = issuer(iss="https://other-ehr.test", fhir_servers=["https://fhir.other-ehr.test"])
    client = make_app(tmp_path, [issuer(), other]).test_client()
    body = needs_fetching("https://fhir.other-ehr.test")
    assert client.post(INVOKE, json=body, headers=bearer(token())).status_code == 403
    assert not http.calls


def test_redirect_from_an_allowed_fhir_server_is_not_followed(tmp_path, http):
    http.get(re.compile(re.escape(FHIR) + r"/.*"), status=302, headers={"Location": "https://attacker.test/steal"})
    client = make_app(tmp_path).test_client()
    response = client.post(INVOKE, json=needs_fetching(FHIR), headers=bearer(token()))
    assert response.status_code in {200, 412}
    assert all(c.request.url.startswith(FHIR + "/") for c in http.calls)


def off_client(**env):
    return create_app(Settings.from_env({"AVH_CDS_AUTH": "off", **env})).test_client()


@pytest.mark.parametrize("server, status", [
    ("http://127.0.0.1:18400/fhir", 200), ("http://localhost:18400/fhir", 200), ("http://[::1]:18400/fhir", 200),
    ("https://attacker.test/fhir", 403), ("http://localhost.attacker.test/fhir", 403), ("http://10.0.0.1/fhir", 403)])
def test_with_auth_off_only_loopback_servers_are_allowed(http, server, status):
    fhir_searchset(http, server)
    response = off_client().post(INVOKE, json=needs_fetching(server))
    assert response.status_code == status
    assert all(c.request.url.startswith(server) for c in http.calls)


def test_with_auth_off_configured_servers_replace_loopback(http):
    fhir_searchset(http, "https://fhir.dev.test/r4")
    client = off_client(AVH_CDS_FHIR_SERVERS="https://fhir.dev.test/r4")
    assert client.post(INVOKE, json=needs_fetching("https://fhir.dev.test/r4")).status_code == 200
    assert client.post(INVOKE, json=needs_fetching("http://127.0.0.1:18400/fhir")).status_code == 403


def test_sandbox_preset_is_off_by_default_and_warns_when_on(tmp_path, caplog):
    preset = json.loads(SANDBOX_JWKS.read_text())
    assert [(k["kid"], k["crv"], k["alg"]) for k in preset["keys"]] == [(SANDBOX_KID, "P-384", "ES384")]
    default = make_app(tmp_path, issuers=[]).extensions["avh_security"].verifier
    assert "https://sandbox.cds-hooks.org" not in default.issuers
    caplog.clear()
    app = make_app(tmp_path, issuers=[], AVH_CDS_TRUST_SANDBOX="1")
    trusted = app.extensions["avh_security"].verifier.issuers["https://sandbox.cds-hooks.org"]
    assert trusted.jwks == preset and not trusted.jwks_url        # its keys are never fetched
    assert "https://sandbox.cds-hooks.org/.well-known/jwks.json" in trusted.jku
    assert any("private key is public" in r.getMessage() for r in caplog.records)


def test_sandbox_preset_key_is_selected_by_kid_and_refuses_foreign_signatures(tmp_path, http):
    app = make_app(tmp_path, issuers=[], AVH_CDS_TRUST_SANDBOX="1")
    keys = app.extensions["avh_security"].verifier.keys["https://sandbox.cds-hooks.org"]
    assert keys.key(SANDBOX_KID, "ES384") is not None
    now = int(time.time())
    forged = jwt.encode({"iss": "https://sandbox.cds-hooks.org", "aud": "http://localhost" + INVOKE, "iat": now,
                         "exp": now + 300, "jti": str(uuid.uuid4())}, Keys.ec, algorithm="ES384", headers=SANDBOX_HEADER)
    assert app.test_client().post(INVOKE, json=hook_request(), headers=bearer(forged)).status_code == 401
    assert not http.calls


PREFLIGHT = {"Origin": "http://127.0.0.1:8090", "Access-Control-Request-Method": "POST",
             "Access-Control-Request-Headers": "authorization,content-type",
             "Access-Control-Request-Private-Network": "true"}


def test_preflight_needs_no_auth_and_allows_private_network(tmp_path):
    client = make_app(tmp_path, AVH_CDS_CORS_ORIGINS="http://127.0.0.1:8090").test_client()
    for path in ("/cds-services", INVOKE, INVOKE + "/feedback"):
        response = client.options(path, headers=PREFLIGHT)
        assert response.status_code == 200
        assert response.headers["Access-Control-Allow-Origin"] == "http://127.0.0.1:8090"
        assert response.headers["Access-Control-Allow-Private-Network"] == "true"
        assert "authorization" in response.headers["Access-Control-Allow-Headers"].lower()
        assert "POST" in response.headers["Access-Control-Allow-Methods"]


def test_cors_origins_are_an_allowlist_in_production(tmp_path):
    configured = make_app(tmp_path, AVH_CDS_CORS_ORIGINS="https://ehr.example.org").test_client()
    assert "Access-Control-Allow-Origin" not in configured.options(INVOKE, headers=PREFLIGHT).headers
    unconfigured = make_app(tmp_path).test_client()
    assert "Access-Control-Allow-Origin" not in unconfigured.options(INVOKE, headers=PREFLIGHT).headers


def test_cors_allows_every_origin_in_development():
    client = off_client()
    assert client.options(INVOKE, headers=PREFLIGHT).headers["Access-Control-Allow-Origin"] in {"*", PREFLIGHT["Origin"]}


def test_cors_headers_answer_an_origin_and_only_an_origin():
    client = off_client()
    body = {"hook": "patient-view", "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
            "context": {"patientId": "pt-1", "userId": "Practitioner/1"}, "prefetch": {}}
    from_browser = client.post(INVOKE, json=body, headers={"Origin": "http://127.0.0.1:8090"})
    server_to_server = client.post(INVOKE, json=body)
    assert from_browser.status_code == server_to_server.status_code
    assert from_browser.headers["Access-Control-Allow-Origin"] in {"*", "http://127.0.0.1:8090"}
    assert not any(h.lower().startswith("access-control-") for h in server_to_server.headers.keys())


def test_a_refused_call_still_carries_cors_headers_so_the_browser_sees_401(tmp_path):
    client = make_app(tmp_path, AVH_CDS_CORS_ORIGINS="http://127.0.0.1:8090").test_client()
    response = client.get("/cds-services", headers={"Origin": "http://127.0.0.1:8090"})
    assert response.status_code == 401
    assert response.headers["Access-Control-Allow-Origin"] == "http://127.0.0.1:8090"
