"""Misconfiguration is loud: the start-up log counts the trusted issuers, and a refused call says why at
WARNING, once a minute per issuer and reason, never with the token or patient data."""
import logging

import pytest

from service.security import refusals
from service.security.refusals import RefusalLog
from tests.security_support import INVOKE, Keys, bearer, hook_request, issuer, make_app, token

REFUSED = "service.security.refusals"


def warnings_of(caplog, logger: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == logger and r.levelno == logging.WARNING]


@pytest.fixture(autouse=True)
def fresh_refusal_log(monkeypatch):
    """Each test starts with nothing said yet, on a clock it moves itself."""
    clock = {"now": 1000.0}
    monkeypatch.setattr(refusals, "refusals", RefusalLog(clock=lambda: clock["now"]))
    return clock


def test_start_up_says_how_many_issuers_are_trusted(tmp_path, caplog):
    caplog.set_level(logging.INFO, "service.security")
    make_app(tmp_path, [issuer(), issuer(iss="https://second.ehr.test")])
    [line] = [r for r in caplog.records if r.name == "service.security" and "trusted issuer" in r.getMessage()]
    assert line.levelno == logging.INFO and "2 trusted issuer(s)" in line.getMessage()
    assert not any("no trusted issuer" in r.getMessage() for r in warnings_of(caplog, "service.security"))


def test_start_up_warns_when_no_issuer_is_trusted(tmp_path, caplog):
    caplog.set_level(logging.INFO, "service.security")
    make_app(tmp_path, [])
    [warning] = [r for r in warnings_of(caplog, "service.security") if "no trusted issuer" in r.getMessage()]
    assert "every CDS call is refused" in warning.getMessage() and "AVH_CDS_ISSUERS_FILE" in warning.getMessage()


def test_a_refused_discovery_says_why_once_a_minute(tmp_path, caplog, fresh_refusal_log):
    client = make_app(tmp_path).test_client()
    for _ in range(3):
        assert client.get("/cds-services").status_code == 401
    [line] = warnings_of(caplog, REFUSED)
    assert "missing_token" in line.getMessage() and "no bearer JWT" in line.getMessage()
    assert line.fields["endpoint"] == "discovery" and line.fields["status"] == 401
    fresh_refusal_log["now"] += 61
    assert client.get("/cds-services").status_code == 401
    assert len(warnings_of(caplog, REFUSED)) == 2


def test_an_untrusted_issuer_is_named_once_per_reason_and_the_token_is_never_logged(tmp_path, caplog):
    client = make_app(tmp_path).test_client()
    body = hook_request()
    foreign = [token(iss="https://sandbox.cds-hooks.org", key=Keys.other_ec) for _ in range(2)]
    for tok in foreign:
        assert client.post(INVOKE, json=body, headers=bearer(tok)).status_code == 401
    expired = token(iat=1, exp=2)
    assert client.post(INVOKE, json=body, headers=bearer(expired)).status_code == 401
    lines = warnings_of(caplog, REFUSED)
    assert [(r.fields["iss"], r.fields["reason"]) for r in lines] == [
        ("https://sandbox.cds-hooks.org", "untrusted_issuer"), ("https://ehr.test", "expired")]
    assert "AVH_CDS_ISSUERS_FILE" in lines[0].getMessage() and "AVH_CDS_TRUST_SANDBOX=1" in lines[0].getMessage()
    logged = caplog.text
    for secret in foreign + [expired, "Testpatient", "MRN-99887766", "pt-1"]:
        assert secret not in logged


def test_a_token_for_another_url_points_at_the_public_url_setting(tmp_path, caplog):
    client = make_app(tmp_path).test_client()
    tok = token(aud="https://cds.example.org" + INVOKE)
    assert client.post(INVOKE, json=hook_request(), headers=bearer(tok)).status_code == 401
    [line] = warnings_of(caplog, REFUSED)
    assert line.fields["reason"] == "wrong_audience" and "AVH_CDS_PUBLIC_URL" in line.getMessage()


def test_a_fhir_server_the_issuer_may_not_name_is_warned_about_with_the_issuer(tmp_path, caplog):
    client = make_app(tmp_path).test_client()
    body = hook_request(fhir_server="https://elsewhere.test/fhir", prefetch_keys=())
    assert client.post(INVOKE, json=body, headers=bearer(token())).status_code == 403
    [line] = warnings_of(caplog, REFUSED)
    assert (line.fields["iss"], line.fields["reason"]) == ("https://ehr.test", "fhir_server_not_allowed")


def test_an_accepted_call_logs_no_refusal(tmp_path, caplog):
    client = make_app(tmp_path).test_client()
    assert client.post(INVOKE, json=hook_request(), headers=bearer(token())).status_code == 200
    assert client.get("/cds-services", headers=bearer(token("/cds-services"))).status_code == 200
    assert warnings_of(caplog, REFUSED) == []


def test_the_refusal_memory_is_bounded_whatever_issuers_callers_claim():
    clock = {"now": 0.0}
    log = RefusalLog(max_keys=3, clock=lambda: clock["now"])
    assert [log.due(f"https://x{i}.test", "untrusted_issuer") for i in range(5)] == [True, True, True, False, False]
    assert len(log._last) == 3
    clock["now"] = 61
    assert log.due("https://x9.test", "untrusted_issuer") and len(log._last) == 1


@pytest.mark.parametrize("env, named", [
    ({"AVH_CDS_AUTH": "bogus"}, "AVH_CDS_AUTH"),
    ({"AVH_CDS_AUTH": "off", "AVH_CDS_CARDS_DIR": "/no/such/cards"}, "AVH_CDS_CARDS_DIR"),
    ({"AVH_CDS_AUTH": "off", "AVH_CDS_LOG_LEVEL": "LOUD"}, "AVH_CDS_LOG_LEVEL"),
    ({"AVH_CDS_AUTH": "off", "AVH_CDS_FETCH_BUDGET_SECONDS": "abc"}, "AVH_CDS_FETCH_BUDGET_SECONDS"),
    ({"AVH_CDS_AUTH": "off", "AVH_CDS_FHIR_SERVERS": "notaurl"}, "notaurl"),
    # the scheme left off: every card's Source link would be relative, and every token's aud compared with it fail
    ({"AVH_CDS_AUTH": "off", "AVH_CDS_PUBLIC_URL": "cds.example.org"}, "AVH_CDS_PUBLIC_URL"),
    ({"AVH_CDS_AUTH": "off", "AVH_CDS_PUBLIC_URL": "https://"}, "AVH_CDS_PUBLIC_URL"),
    # numbers that parse but mean nothing: a budget of NaN, a negative pool, a rate threshold above 100 %
    ({"AVH_CDS_AUTH": "off", "AVH_CDS_FETCH_BUDGET_SECONDS": "nan"}, "AVH_CDS_FETCH_BUDGET_SECONDS"),
    ({"AVH_CDS_AUTH": "off", "AVH_CDS_FETCH_WORKERS": "-5"}, "AVH_CDS_FETCH_WORKERS"),
    ({"AVH_CDS_AUTH": "off", "AVH_CDS_STORAGE_TIMEOUT_SECONDS": "inf"}, "AVH_CDS_STORAGE_TIMEOUT_SECONDS"),
    ({"AVH_CDS_AUTH": "off", "AVH_CDS_GOVERNANCE_OVERRIDE_THRESHOLD": "2"}, "AVH_CDS_GOVERNANCE_OVERRIDE_THRESHOLD"),
])
def test_serve_misconfigured_says_which_setting_in_one_line(monkeypatch, capsys, tmp_path, env, named):
    """An integration tester's slip at `avh-cds serve` was a Python traceback; a card directory that does not exist
    ended in `KeyError: 'vertebral-hemangioma'`, naming no setting. Now one line names it, status 2, no server."""
    from service import cli
    monkeypatch.setattr("flask.Flask.run", lambda *a, **k: pytest.fail("started although misconfigured"))
    monkeypatch.setenv("AVH_CDS_SQLITE_PATH", str(tmp_path / "avh-cds.sqlite3"))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert cli.main(["serve", "--port", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("avh-cds serve: ") and named in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
