"""Hostile review, privacy (issue 15, item 12): no patient id in the log, and nothing a caller chose logged
whole. Each test's docstring names the attack."""
import json
import logging
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests

from service.security.logs import MAX_TEXT, JsonLinesFormatter
from tests.fhir_records import HEMANGIOMA, COMPRESSION, condition, day, patient, searchset, today
from tests.ports import listening_socket, port_of

MRN = "MRN-778899-DOE-JANE"


def _call(client, conditions, sent_patient=None):
    empty = searchset([])
    body = {"hook": "patient-view", "hookInstance": str(uuid.uuid4()),
            "context": {"patientId": MRN, "userId": "Practitioner/u1"},
            "prefetch": {"patient": sent_patient or patient(patient_id=MRN), "conditions": searchset(conditions),
                         **{k: empty for k in ("observations", "procedures", "medicationRequests", "serviceRequests",
                                               "diagnosticReports")}}}
    return client.post("/cds-services/avh-patient-view", json=body)


def _lines(caplog) -> list[str]:
    formatter = JsonLinesFormatter()
    return [formatter.format(record) for record in caplog.records]


def test_a_condition_with_no_patient_subject_logs_no_patient_id(client, caplog):
    """Attack: a Condition with no patient subject; the log said `subject is not Patient/MRN-778899-DOE-JANE`,
    a patient identifier, while the access log redacts resource ids for exactly that reason."""
    orphan = condition(HEMANGIOMA, onset=day(10, since=today()), patient_id=MRN, id="c-orphan")
    del orphan["subject"]
    caplog.set_level(logging.DEBUG)
    assert _call(client, [orphan, condition(COMPRESSION, onset=day(10, since=today()), patient_id=MRN, id="c-2")]).status_code == 200
    assert any("subject is not the patient" in line for line in _lines(caplog))
    assert not [line for line in _lines(caplog) if "778899" in line]


def test_an_invalid_patient_is_logged_as_left_out_without_its_id(client, caplog):
    """An invalid Patient is left out as other invalid resources are, and said so in the log (it was left out
    silently); its id is the patient's, so the line names the type and the reason only."""
    invalid = patient(patient_id=MRN)
    invalid["birthDate"] = "not a date"
    caplog.set_level(logging.DEBUG)
    assert _call(client, [], sent_patient=invalid).status_code == 200
    [line] = [line for line in _lines(caplog) if "left out invalid Patient" in line]
    assert "birthDate" in line and "778899" not in line and "not a date" not in line
    assert not [line for line in _lines(caplog) if "778899" in line]


HOSTILE_ELEMENTS = {
    "a top-level element named by a record number": {"MRN778899": "x"},
    "one inside a datatype": {"valueQuantity": {"value": 3, "MRN778899": "x"}},
    "a key of digits that reads as an index": {"valueQuantity": {"value": 3, "778899": "x"}},
    "a number beyond a double under it": {"valueQuantity": {"value": 3, "MRN778899": "__BIG__"}},
}


@pytest.mark.parametrize("extra", HOSTILE_ELEMENTS.values(), ids=HOSTILE_ELEMENTS)
def test_an_invalid_observation_logs_neither_its_id_nor_a_name_the_sender_chose(client, caplog, extra):
    """Attack (privacy16): an Observation read by the pathway (a motor score), id `MRN-778899-DOE-JANE`, with an
    element FHIR does not define named by a record number. Only the invalid Patient's line was kept free of such
    names (rev15): this one logged `left out invalid Observation/MRN-778899-DOE-JANE: invalid FHIR at MRN778899:
    extra_forbidden`. Its line names the type and the reason, each element FHIR does not define unnamed; the card
    still names it for the clinician. The real hook call, the body as bytes (1e400 cannot be written by json)."""
    import orjson
    from tests.fhir_records import hook_request, in_pathway_chart, motor
    hostile = {**motor(3, day(1, since=today()), patient_id="p16", id=MRN), **extra}
    raw = orjson.dumps(hook_request("patient-view", "p16", in_pathway_chart("p16") + [hostile]))
    caplog.set_level(logging.DEBUG)
    answer = client.post("/cds-services/avh-patient-view", content_type="application/json",
                         data=raw.replace(b'"__BIG__"', b"1e400"))
    assert answer.status_code == 200
    assert MRN in "".join(card.get("detail", "") for card in answer.json["cards"])    # left out, and said so
    [line] = [line for line in _lines(caplog) if "left out invalid Observation" in line]
    assert "(an element that is not FHIR)" in line, line
    assert not [line for line in _lines(caplog) if "778899" in line]


def test_attacker_chosen_ids_are_not_logged_whole(client, caplog):
    """Attack: resources whose ids are 100 KB long (one 100 KB log line each), one of them invalid FHIR so that
    it is named in the log."""
    long_id = "x" * 100_000
    orphan = condition(HEMANGIOMA, onset=day(10, since=today()), patient_id=MRN, id=long_id)
    del orphan["subject"]
    invalid = condition(COMPRESSION, onset=day(10, since=today()), patient_id=MRN, id=long_id + "y")
    invalid["onsetDateTime"] = "not a date"
    caplog.set_level(logging.DEBUG)
    assert _call(client, [orphan, invalid]).status_code == 200
    lines = _lines(caplog)
    assert any("left out invalid Condition:" in line for line in lines)
    assert max(len(line) for line in lines) < 2 * MAX_TEXT


def test_every_log_line_is_cut_whatever_the_message(caplog):
    """Attack: any message or field that carries caller text at length (gunicorn quoting a request line, a
    future log call): the JSON line cuts the message and each text field."""
    caplog.set_level(logging.INFO)
    logging.getLogger("service.test").warning("caller sent %s", "z" * 50_000, extra={"fields": {"path": "p" * 50_000}})
    [line] = [line for line in _lines(caplog) if "caller sent" in line]
    assert len(line) < 3 * MAX_TEXT and "more characters" in line


def _access_atoms(path: str, user_agent: str) -> dict:
    import datetime as dt
    from types import SimpleNamespace
    from gunicorn.config import Config
    from service.api.accesslog import AccessLogger
    from tests.security_support import served_by_development_app
    served_by_development_app()
    environ = {"REQUEST_METHOD": "GET", "RAW_URI": "/x", "SERVER_PROTOCOL": "HTTP/1.1", "PATH_INFO": path,
               "REMOTE_ADDR": "127.0.0.1", "HTTP_USER_AGENT": user_agent}
    response = SimpleNamespace(status="404 NOT FOUND", headers=[], sent=10)
    return AccessLogger(Config()).atoms(response, SimpleNamespace(headers=[]), environ, dt.timedelta(milliseconds=1))


def test_a_newline_in_the_path_or_user_agent_cannot_forge_a_log_line():
    """Attack (real gunicorn): GET /x%0a{"event":"cds_call",...} and a User-Agent of 3,000 characters: the decoded
    path was logged as is, so the access log got a second line of the caller's choosing, a forged JSON line
    (and a NUL byte from /%00); the user agent was logged whole."""
    atoms = _access_atoms('/x\n{"event": "cds_call", "status": 200}\x00', 'ua"\r\n' + "x" * 3000)
    assert "\n" not in atoms["U"] and "\x00" not in atoms["U"] and "\r" not in atoms["a"]
    assert atoms["U"] == "(a path no route serves: not logged)"     # since rev16c: no route, nothing of it logged
    assert len(atoms["a"]) < MAX_TEXT + 100 and atoms["a"].startswith('ua\\"')


def test_fhir_resource_ids_stay_redacted_in_the_access_log():
    """Attack (on the fix above): escaping the path must keep the {id} redaction of FHIR resource ids."""
    assert _access_atoms("/fhir/Patient/MRN-778899/_history/1", "curl")["U"] == "/fhir/Patient/{id}/..."


def test_the_development_server_logs_no_query_string_nor_fhir_id(tmp_path):
    """ui14: `AVH_CDS_AUTH=off avh-cds serve` (README's first command) logged werkzeug's request lines whole:
    `GET /fhir/Condition?patient=avh-01&code=...` and `GET /fhir/Patient/avh-01`, the patient's id in the log,
    which gunicorn's access line (service/api/accesslog.py) never writes. The real command, on a socket this test
    holds (werkzeug takes an inherited one from WERKZEUG_SERVER_FD)."""
    listener = listening_socket()
    environ = {**os.environ, "AVH_CDS_AUTH": "off", "WERKZEUG_RUN_MAIN": "true",
               "WERKZEUG_SERVER_FD": str(listener.fileno())}
    server = subprocess.Popen([str(Path(sys.executable).parent / "avh-cds"), "serve", "--port", str(port_of(listener))],
                              cwd=tmp_path, env=environ, pass_fds=[listener.fileno()], stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port_of(listener)}"
    try:
        for path in ("/fhir/Condition?patient=avh-01", "/fhir/Patient/avh-01", "/fhir/Patient/avh-01/_history/1",
                     "/pathway?from=avh-01"):
            deadline = time.monotonic() + 60
            while True:
                try:
                    requests.get(base + path, timeout=10)
                    break
                except requests.ConnectionError:
                    assert time.monotonic() < deadline and server.poll() is None, "avh-cds serve did not answer"
                    time.sleep(0.2)
    finally:
        server.terminate()
        log = server.communicate(timeout=30)[1]
        listener.close()
    requested = "\n".join(json.loads(line)["msg"] for line in log.splitlines() if '"logger":"werkzeug"' in line)
    for line in ('"GET /fhir/Condition" 200', '"GET /fhir/Patient/{id}" 200', '"GET /fhir/Patient/{id}/..." 404',
                 '"GET /pathway" 200'):
        assert line in requested
    assert "avh-01" not in log and "patient=" not in log


def test_an_unexpected_error_logs_its_traceback_without_a_message_quoting_the_request(client, caplog, monkeypatch):
    """Attack (privacy16): any exception a call raises unexpectedly is logged with its traceback (service/errors.py,
    `unhandled error`; prefetch's `unexpected error while fetching`), and its message may quote what was sent: a
    KeyError of a key, a requests error's URL with `?patient=`. The line said `KeyError: 'MRN-778899-DOE-JANE'`.
    It keeps where each exception was raised and its type, the chain too, not their messages."""
    def fails(keys, body):
        try:
            raise ValueError(f"no such patient {body['context']['patientId']}")
        except ValueError:
            raise KeyError(body["context"]["patientId"])
    monkeypatch.setattr(client.application.extensions["avh"].prefetch, "resolve", fails)
    caplog.set_level(logging.DEBUG)
    assert _call(client, []).status_code == 500
    [line] = [line for line in _lines(caplog) if "unhandled error" in line]
    assert "KeyError (its message is not logged)" in line and "ValueError (its message is not logged)" in line
    assert "During handling of the above exception" in line and "in fails" in line
    assert not [line for line in _lines(caplog) if "778899" in line]


def _gunicorn_refuses(raw: bytes, capsys) -> str:
    """What gunicorn's error log (AccessLogger, as gunicorn.conf.py sets it up) writes when its worker's
    handle_error meets the request `raw`: refused as it is parsed, or failing in the app (a KeyError naming it)."""
    import socket
    from types import SimpleNamespace
    from gunicorn.config import Config
    from gunicorn.http.parser import RequestParser
    from gunicorn.workers.base import Worker
    from service.api.accesslog import AccessLogger
    from tests.security_support import served_by_development_app
    served_by_development_app()
    config = Config()
    config.set("logger_class", "service.api.accesslog.AccessLogger")
    worker = SimpleNamespace(log=AccessLogger(config), cfg=config)
    mine, theirs = socket.socketpair()
    try:
        try:
            request = next(RequestParser(config, iter([raw]), ("127.0.0.1", 5000)))
            raise KeyError(request.query)
        except KeyError as exc:
            Worker.handle_error(worker, request, mine, ("127.0.0.1", 5000), exc)
        except Exception as exc:
            Worker.handle_error(worker, None, mine, ("127.0.0.1", 5000), exc)
    finally:
        mine.close()
        theirs.close()
    return capsys.readouterr().err


REFUSED_BY_GUNICORN = {
    "Invalid HTTP request line": f"GET /fhir/Condition?patient={MRN}\x01 HTTP/1.1\r\nHost: h\r\n\r\n",
    "Invalid HTTP header name": f"GET /x HTTP/1.1\r\nX-{MRN}(: 1\r\n\r\n",
}


@pytest.mark.parametrize("kind", REFUSED_BY_GUNICORN)
def test_gunicorn_logs_no_request_line_nor_header_it_refused(capsys, kind):
    """Attack (privacy16, real gunicorn parser and worker): a request line or header gunicorn cannot parse was
    logged quoted, `Invalid request from ip=127.0.0.1: Invalid HTTP request line: 'GET /fhir/Condition?patient=
    MRN-778899-DOE-JANE\\x01 HTTP/1.1'`: the patient's identifier in the log. The kind of refusal only."""
    log = _gunicorn_refuses(REFUSED_BY_GUNICORN[kind].encode(), capsys)
    assert f"Invalid request from ip=127.0.0.1: {kind} (what was sent is not logged)" in log, log
    assert "778899" not in log


def test_gunicorn_logs_no_query_nor_fhir_id_of_a_request_that_failed(capsys):
    """Attack (privacy16, real gunicorn worker): a request the app failed on was logged as `Error handling request
    GET /fhir/Patient/MRN-778899-DOE-JANE?patient=...` with the traceback of an exception quoting it. The path as
    the access line names it, the exception by its type."""
    log = _gunicorn_refuses(f"GET /fhir/Patient/{MRN}?patient={MRN} HTTP/1.1\r\nHost: h\r\n\r\n".encode(), capsys)
    assert "Error handling request GET /fhir/Patient/{id}" in log and "KeyError (its message is not logged)" in log
    assert "778899" not in log


def test_the_fixture_server_logs_no_id_of_a_resource_a_fixture_repeats(tmp_path, caplog):
    """Attack (privacy16): a fixture directory (the development FHIR endpoint's, which may hold an EHR's export)
    with a Patient sent twice was logged as `fixture ... repeats Patient/MRN-778899-DOE-JANE`: the patient's id. By
    its type alone."""
    import datetime as dt
    from service.fhir.fixture_server import FixtureStore
    from tests.fhir_records import fixture_bundle, in_pathway_chart
    chart = in_pathway_chart(MRN)
    (tmp_path / "export.json").write_text(json.dumps(fixture_bundle(chart + chart[:1], {"silent"})))
    caplog.set_level(logging.DEBUG)
    FixtureStore(tmp_path, dt.date.today())
    assert "fixture export repeats a Patient: the first one is read" in caplog.text
    assert "778899" not in caplog.text


def _forged(header: dict) -> str:
    """A token whose header is the attacker's, its claims the test issuer's, its signature nobody's."""
    import base64
    from tests.security_support import claims
    return ".".join(base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=").decode()
                    for part in (header, claims(), {"sig": 1}))


def test_a_token_header_s_kid_or_alg_is_not_logged(tmp_path, caplog):
    """Attack (privacy16): a bearer token whose kid is `MRN-778899-DOE-JANE` (a key no issuer has) or whose alg is
    `MRN778899`: each was echoed into the access line's auth_failure and the refusal warning (`no key
    'MRN-778899-DOE-JANE' for alg ES384 from this issuer`, `alg 'MRN778899' not allowed`), text of the caller's
    choosing from an unverified token. The refusal says which check failed, and an alg only when it is one of JWS's
    (RFC 7518)."""
    from tests.security_support import INVOKE, bearer, hook_request, make_app, token
    client = make_app(tmp_path).test_client()
    caplog.set_level(logging.DEBUG)
    unknown_kid, odd_alg = token(kid=MRN), _forged({"alg": "MRN778899", "typ": "JWT", "kid": "ec-1"})
    assert client.post(INVOKE, json=hook_request(), headers=bearer(unknown_kid)).json["reason"] == "unknown_key"
    assert client.post(INVOKE, json=hook_request(), headers=bearer(odd_alg)).json["reason"] == "algorithm_not_allowed"
    assert client.post(INVOKE, json=hook_request(),
                       headers=bearer(_forged({"alg": "HS256", "typ": "JWT", "kid": "ec-1"}))).status_code == 401
    lines = _lines(caplog)
    failures = [json.loads(line).get("auth_failure") for line in lines if '"cds_call"' in line]
    assert failures == ["no key for the token's kid (not logged) for alg ES384 from this issuer",
                        "alg (not a JWS algorithm) not allowed", "alg 'HS256' not allowed"]
    assert not [line for line in lines if "778899" in line]
