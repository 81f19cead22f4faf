"""`avh-cds check-config`: every problem is named and makes the exit status 1; a usable configuration prints
what an EHR registers. The JWK Set is served by a real HTTP server on 127.0.0.1; Redis is the real one."""
import json
import os
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from service.cli import main
from tests.security_support import Keys, issuer

REDIS = "redis://127.0.0.1:6379/11"        # only PINGed


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def jwks_server():
    """Serves the test issuer's JWK Set at /jwks.json; any other path is a 404."""
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps(Keys.jwks()).encode()
            self.send_response(200 if self.path == "/jwks.json" else 404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body if self.path == "/jwks.json" else b"{}")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(5)


@pytest.fixture
def configure(tmp_path, monkeypatch):
    """Set the environment as an operator would: auth required, an issuers file, a database of its own."""
    for name in [n for n in os.environ if n.startswith("AVH_CDS_")]:
        monkeypatch.delenv(name)

    def set_env(issuers=None, **env):
        path = tmp_path / "issuers.json"
        path.write_text(json.dumps({"issuers": issuers if issuers is not None else []}))
        values = {"AVH_CDS_AUTH": "required", "AVH_CDS_ISSUERS_FILE": str(path),
                  "AVH_CDS_SQLITE_PATH": str(tmp_path / "avh-cds.sqlite3"),
                  "AVH_CDS_PUBLIC_URL": "https://cds.example.org", **env}
        for name, value in values.items():
            monkeypatch.setenv(name, value)
    return set_env


def run(capsys) -> tuple[int, str]:
    status = main(["check-config", "--timeout", "2"])
    return status, capsys.readouterr().out


def test_a_usable_configuration_prints_what_the_ehr_registers(configure, jwks_server, capsys):
    configure([issuer(jwks=None, jwks_url=f"{jwks_server}/jwks.json")], AVH_CDS_REDIS_URL=REDIS)
    status, out = run(capsys)
    assert status == 0, out
    assert "FAIL" not in out and out.rstrip().endswith("no problem found")
    assert f"ok    issuer https://ehr.test: 2 signing key(s) (2 from {jwks_server}/jwks.json)" in out
    assert "ok    feedback database (sqlite) answers" in out and "ok    Redis (jti replay cache) answers" in out
    assert "discovery URL  https://cds.example.org/cds-services" in out
    for service, hook in [("avh-patient-view", "patient-view"), ("avh-order-select", "order-select"),
                          ("avh-order-sign", "order-sign"), ("avh-encounter-discharge", "encounter-discharge")]:
        assert f"  service {service}\n    hook      {hook}\n    endpoint  https://cds.example.org/cds-services/{service}" in out
    assert "      patient: Patient/{{context.patientId}}" in out
    assert "      conditions: Condition?patient={{context.patientId}}&code=" in out


def test_no_trusted_issuer_is_a_problem(configure, capsys):
    configure([])
    status, out = run(capsys)
    assert status == 1
    assert "FAIL  no trusted issuer: set AVH_CDS_ISSUERS_FILE" in out
    assert "discovery URL  https://cds.example.org/cds-services" in out       # still says what would be registered


def test_an_issuer_whose_jwk_set_cannot_be_fetched_is_named(configure, jwks_server, capsys):
    configure([issuer(jwks=None, jwks_url=f"{jwks_server}/moved.json"),
               issuer(iss="https://down.ehr.test", jwks=None, jwks_url=f"http://127.0.0.1:{closed_port()}/jwks")])
    status, out = run(capsys)
    assert status == 1
    assert f"FAIL  issuer https://ehr.test: JWK Set {jwks_server}/moved.json cannot be fetched (ValueError: HTTP 404)" in out
    assert "FAIL  issuer https://down.ehr.test: JWK Set" in out and "ConnectionError" in out
    assert "2 problem(s)" in out


def test_an_unreadable_issuers_file_is_a_problem(configure, tmp_path, capsys):
    configure()
    (tmp_path / "issuers.json").write_text("{not json")
    status, out = run(capsys)
    assert status == 1 and "FAIL  AVH_CDS_ISSUERS_FILE" in out and "cannot read" in out


def test_a_database_or_redis_that_does_not_answer_is_a_problem(configure, capsys):
    port = closed_port()
    configure([issuer()], AVH_CDS_DATABASE_URL=f"postgresql://postgres@127.0.0.1:{port}/avh",
              AVH_CDS_REDIS_URL=f"redis://127.0.0.1:{port}/0", AVH_CDS_STORAGE_TIMEOUT_SECONDS="1")
    status, out = run(capsys)
    assert status == 1
    assert "FAIL  feedback database" in out and "FAIL  Redis (AVH_CDS_REDIS_URL) does not answer" in out
    assert "ok    issuer https://ehr.test: 2 signing key(s) (2 inline)" in out


def test_auth_off_is_a_problem_for_an_ehr(configure, capsys):
    configure([issuer()], AVH_CDS_AUTH="off")
    status, out = run(capsys)
    assert status == 1 and "FAIL  AVH_CDS_AUTH=off" in out


def test_a_broken_card_library_is_a_problem(configure, tmp_path, capsys):
    cards = tmp_path / "cards"
    cards.mkdir()
    configure([issuer()], AVH_CDS_CARDS_DIR=str(cards))
    status, out = run(capsys)
    assert status == 1 and f"FAIL  card library {cards}" in out


def test_awscrt_that_cannot_be_loaded_is_a_problem_with_authentication_on(configure, monkeypatch, capsys):
    """The service loads awscrt when its token verifier is made (AVH_CDS_AUTH=required) and does not start without
    it: check-config says so, with an RSA-only issuer too (no ES key asks for it), and does not fail on an ES key."""
    import sys
    from jwt.algorithms import RSAAlgorithm
    monkeypatch.setitem(sys.modules, "awscrt.crypto", None)       # `from awscrt.crypto import ...` raises
    rsa_only = {"keys": [{**RSAAlgorithm.to_jwk(Keys.rsa.public_key(), as_dict=True), "kid": "rsa-1", "use": "sig"}]}
    for jwks in (rsa_only, Keys.jwks()):
        configure([issuer(jku=None, jwks=jwks)])
        status, out = run(capsys)
        assert status == 1, out
        assert "FAIL  awscrt (AWS-LC, ES256/ES384 signatures) cannot be loaded" in out
    configure([issuer(jku=None, jwks=rsa_only)], AVH_CDS_AUTH="off")
    assert "awscrt" not in run(capsys)[1]
