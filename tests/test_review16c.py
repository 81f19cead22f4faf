"""Review of privacy16 (hostile privacy reviewer rev16c): paths, issuers and tracebacks a caller chose, in the logs."""
import datetime as dt
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.test_review14 import _dev_server_answer

MRN = "MRN778899-DOE-JANE"


@pytest.fixture
def deployed(monkeypatch, tmp_path):
    """gunicorn.conf.py's settings, read without its side effects on this process (a metrics directory, auth)."""
    import runpy
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.setenv("AVH_CDS_AUTH", "off")
    return SimpleNamespace(**runpy.run_path(str(Path(__file__).resolve().parent.parent / "gunicorn.conf.py")))


def _gunicorn_access_line(path: str, capsys, deployed, app=None) -> str:
    """The access line gunicorn writes (AccessLogger with gunicorn's own format and Atoms) for a 404 on `path`, in a
    worker serving `app` (default: `avh-cds serve`'s)."""
    from gunicorn.config import Config
    from service.api.accesslog import AccessLogger, log_routes_of
    from tests.security_support import served_by_development_app
    log_routes_of(app) if app is not None else served_by_development_app()
    config = Config()
    for name in ("accesslog", "logger_class", "access_log_format"):     # as gunicorn.conf.py sets them
        config.set(name, getattr(deployed, name))
    logger = AccessLogger(config)
    environ = {"REQUEST_METHOD": "GET", "RAW_URI": path, "SERVER_PROTOCOL": "HTTP/1.1", "PATH_INFO": path,
               "REMOTE_ADDR": "127.0.0.1", "HTTP_USER_AGENT": "curl", "QUERY_STRING": ""}
    response = SimpleNamespace(status="404 NOT FOUND", status_code=404, headers=[], sent=10, response_length=10)
    logger.access(response, SimpleNamespace(headers=[], method="GET", uri=path, path=path, query="", version=(1, 1)),
                  environ, dt.timedelta(milliseconds=1))
    for handler in logger.access_log.handlers:
        handler.flush()
    captured = capsys.readouterr()
    return captured.out + captured.err


HOSTILE_PATHS = [f"/cds-services/{MRN}", f"/cds-services/avh-patient-view/{MRN}", f"/pathway/{MRN}",
                 f"/cds-services/x/feedback/{MRN}", f"/{MRN}", f"/fhir/{MRN}", f"/fhir/{MRN}/1", f"//{MRN}//x"]


@pytest.mark.parametrize("path", HOSTILE_PATHS)
def test_a_path_no_route_serves_is_not_logged_by_gunicorn(path, capsys, deployed):
    """Attack: a 404 on /cds-services/<the patient's MRN> (or /pathway/..., /fhir/<MRN>): redact_path replaced ids
    under /fhir/<Type>/ only, so gunicorn's access line logged the MRN as sent. Expected: the route's pattern, or a
    fixed placeholder for a path no route serves."""
    line = _gunicorn_access_line(path, capsys, deployed)
    assert '"GET ' in line and MRN not in line


def test_known_routes_stay_readable_in_the_access_line(capsys, deployed):
    line = "".join(_gunicorn_access_line(path, capsys, deployed) for path in (
        "/healthz", "/cds-services", "/cds-services/avh-patient-view/feedback", "/fhir/Patient/x", "/pathway/"))
    for shown in ('"GET /healthz"', '"GET /cds-services"', '"GET /cds-services/{id}/feedback"',
                  '"GET /fhir/Patient/{id}"', '"GET /pathway/"'):
        assert shown in line


def test_the_development_server_logs_no_path_no_route_serves(caplog):
    caplog.set_level("INFO", logger="werkzeug")
    for path in HOSTILE_PATHS:
        _dev_server_answer(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert logged.count('"GET (a path no route serves: not logged)"') + logged.count("/cds-services/{id}") \
        + logged.count("/fhir/(not a FHIR resource type)") == len(HOSTILE_PATHS)
    assert MRN not in logged


def test_a_route_added_to_the_app_is_logged_as_its_pattern(app, capsys, deployed):
    """accesslog named paths by a hand copy of the app's routes (ROUTES) and special cases: a route added to the app
    and not to the copy was logged as NOT_A_ROUTE, and one whose id sat where the copy had none would have been
    logged as sent. Now by the app's URL map: the rule, each <variable> {id}, with no edit of accesslog; gunicorn's
    access line too (it runs outside the app context)."""
    from service.api.accesslog import NOT_A_ROUTE, redact_path

    @app.get("/charts/<chart_id>/notes/<int:note>")
    def chart_notes(chart_id, note):
        return {}

    line = _gunicorn_access_line(f"/charts/{MRN}/notes/7", capsys, deployed, app)
    assert '"GET /charts/{id}/notes/{id}"' in line and MRN not in line
    assert redact_path(f"//charts/{MRN}/notes/7/") == "/charts/{id}/notes/{id}/"
    assert redact_path(f"/charts/{MRN}/notes/x") == NOT_A_ROUTE          # <int:note> takes digits only
    assert redact_path("/fhir/Patient/x") == NOT_A_ROUTE                  # this app has no fixture FHIR endpoint


# --- the issuer a refused token claims -------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def _refusals_said_afresh(monkeypatch):
    """Each test's refusals logged as the first of the minute (the warning is said once a minute per issuer)."""
    from service.security import refusals
    monkeypatch.setattr(refusals, "refusals", refusals.RefusalLog())


@pytest.mark.parametrize("iss", [MRN, f"https://ehr.example/fhir?patient={MRN}", f"https://{MRN}:pw@ehr.example",
                                 f"https://ehr.example/#{MRN}", f"urn:patient:{MRN}", f"Jane Doe {MRN}",
                                 f"https://ehr.example/\r\n{MRN}", "https://[::1/x" + MRN, f"mailto:{MRN}@x"])
def test_an_issuer_a_refused_token_claims_is_logged_only_as_an_issuer_url(iss, tmp_path, caplog):
    """Attack: a token (unverified) claiming iss `MRN778899-DOE-JANE`, or `https://ehr/fhir?patient=<MRN>`: the refusal
    warning logged whatever the token claimed, cut to 200 characters: text of the caller's choosing. Expected: the
    issuer named only when it is an http(s) URL with a host and no user, query or fragment; else `(not a URL)`."""
    from tests.security_support import INVOKE, bearer, hook_request, make_app, token
    client = make_app(tmp_path).test_client()
    caplog.set_level(logging.DEBUG)
    assert client.post(INVOKE, json=hook_request(), headers=bearer(token(iss=iss))).json["reason"] == "untrusted_issuer"
    refused = [record for record in caplog.records if getattr(record, "fields", {}).get("event") == "cds_refused"]
    assert [record.fields["iss"] for record in refused] == ["(not a URL)"]
    assert not [record for record in caplog.records if MRN in record.getMessage() or MRN in str(record.__dict__)]


def test_an_issuer_url_is_named_for_the_operator_cut(tmp_path, caplog):
    from tests.security_support import INVOKE, bearer, hook_request, make_app, token
    client = make_app(tmp_path).test_client()
    caplog.set_level(logging.DEBUG)
    for iss in ("https://ehr.example:8443/interconnect/oauth2", "http://localhost/" + "x" * 300):
        client.post(INVOKE, json=hook_request(), headers=bearer(token(iss=iss)))
    logged = [record.fields["iss"] for record in caplog.records
              if getattr(record, "fields", {}).get("event") == "cds_refused"]
    assert logged == ["https://ehr.example:8443/interconnect/oauth2", "http://localhost/" + "x" * 183 + "..."]


# --- exceptions escaping Flask under `avh-cds serve` -------------------------------------------------------------

def _served_app(monkeypatch, tmp_path):
    """The app `avh-cds serve` hands werkzeug's development server (Flask.run caught)."""
    import flask
    from service import cli
    served = {}
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AVH_CDS_AUTH", "off")
    monkeypatch.setattr(flask.Flask, "run", lambda app, **options: served.update(app=app, options=options))
    assert cli.main(["serve", "--port", "0"]) == 0
    return served["app"], served["options"]


def test_the_development_server_logs_no_message_of_an_exception_escaping_flask(monkeypatch, tmp_path, caplog):
    """Attack: a response body failing as it is sent (a streamed body; nothing of Flask's error handling runs then)
    with a KeyError quoting what the caller sent: werkzeug's development server (`avh-cds serve`, the README's start
    command) logged `Error on request:` with the traceback and every exception's message in it. Expected: the route
    and where it failed, no message; werkzeug still answers and closes as before."""
    from flask import Response
    from werkzeug.serving import make_server
    import socket
    import threading
    app, options = _served_app(monkeypatch, tmp_path)

    def failing(patient):
        def body():
            yield b"{"
            raise KeyError(f"Patient/{patient}")
        return Response(body())

    app.add_url_rule("/test-failing/<patient>", view_func=failing)
    caplog.set_level(logging.DEBUG)
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=options["request_handler"])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with socket.create_connection(("127.0.0.1", server.server_port), timeout=10) as sock:
            sock.sendall(f"GET /test-failing/{MRN} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            while sock.recv(4096):
                pass
    finally:
        server.shutdown()
        thread.join(10)
    from service.security.logs import JsonLinesFormatter
    formatter = JsonLinesFormatter()        # the root handler's (configure_logging)
    logged = "\n".join(record.getMessage() for record in caplog.records)
    formatted = "\n".join(formatter.format(record) for record in caplog.records)
    assert "Error on request" in logged and "KeyError" in formatted
    assert MRN not in logged and MRN not in formatted



def test_flask_s_own_exception_line_names_no_path_the_caller_chose(monkeypatch, tmp_path, caplog):
    """Attack: an error Flask's handlers do not answer (an after_request step failing: Flask's handle_exception)
    on a request to /cds-services/<MRN>: Flask's log_exception wrote `Exception on /cds-services/<MRN> [GET]`.
    Expected: the route as the access line names it."""
    app, _ = _served_app(monkeypatch, tmp_path)

    @app.after_request
    def failing(response):
        raise KeyError("x")

    caplog.set_level(logging.DEBUG)
    assert app.test_client().get(f"/cds-services/{MRN}/x").status_code == 500
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "Exception on (a path no route serves: not logged) [GET]" in logged and MRN not in logged


# --- privacy16's logged_reason: an index the sender placed ------------------------------------------------------

def test_a_list_index_the_sender_chose_is_not_logged():
    """Attack (privacy16's logged_reason): an index is logged where the resource holds a list that long, and a
    16 MiB body holds a list of 778,900 items (`"category": [{}, ..., <invalid>]`): the invalid item put at 778899
    wrote the patient's record number into the log line (`invalid FHIR at category.778899.text: string_type`).
    Expected: an index logged only under 100; a longer one named on the card alone."""
    from service.clinical.record import logged_reason
    resource = {"resourceType": "Observation", "category": [{}] * 778_900}
    logged = logged_reason("invalid FHIR at category.778899.text: string_type", resource)
    assert "778899" not in logged and logged.startswith("invalid FHIR at category.") and logged.endswith(
        ".text: string_type")
    assert logged_reason("invalid FHIR at category.42.text: string_type", resource) \
        == "invalid FHIR at category.42.text: string_type"


# --- gunicorn's own DEBUG line of each request --------------------------------------------------------------------

def test_gunicorn_s_debug_line_of_a_request_names_no_patient(capsys, deployed):
    """Attack: with AVH_CDS_LOG_LEVEL=DEBUG, gunicorn's default pre_request hook logged `GET /fhir/Patient/<MRN>` (the
    path as sent) for every request. Expected: the path as the access line names it."""
    from gunicorn.config import Config
    from service.api.accesslog import AccessLogger
    from tests.security_support import served_by_development_app
    served_by_development_app()
    config = Config()
    for name in ("logger_class", "errorlog", "loglevel", "pre_request"):
        if hasattr(deployed, name):
            config.set(name, getattr(deployed, name))
    config.set("loglevel", "debug")
    worker = SimpleNamespace(log=AccessLogger(config))
    for path in (f"/fhir/Patient/{MRN}", f"/cds-services/{MRN}", f"/{MRN}%0a"):
        config.pre_request(worker, SimpleNamespace(method="GET", path=path))
    err = capsys.readouterr().err
    assert "GET /fhir/Patient/{id}" in err and "GET /cds-services/{id}" in err and MRN not in err


# --- a fhirServer answer's resourceType in a prefetch reason ------------------------------------------------------

def test_a_fetched_resource_type_that_is_not_fhir_s_is_not_named():
    """Attack: a fhirServer answer whose resourceType is `MRN778899` (any letters and digits up to 40 passed
    `isalnum`, fullwidth ones too): the reason, logged as `prefetch key patient unavailable: fhirServer answered with
    a MRN778899, not a Patient`, named it. Expected: a FHIR type named, anything else `resource of another kind`."""
    from service.fhir.prefetch import FetchProblem, Plan, _check_fhir
    plan = Plan("patient", "Patient", "https://fhir.example/Patient/p", False, "p")
    reasons = []
    for sent in ("MRN778899", "ＭＲＮ778899", "Observation"):
        with pytest.raises(FetchProblem) as refused:
            _check_fhir({"resourceType": sent}, plan)
        reasons.append(refused.value.problem.reason)
    assert reasons == ["fhirServer answered with a resource of another kind, not a Patient"] * 2 + [
        "fhirServer answered with a Observation, not a Patient"]


# --- privacy16's traceback_unquoted: long chains, exception groups ----------------------------------------------

def test_a_chain_longer_than_the_recursion_limit_is_written_not_raised_on(capsys):
    """Attack (privacy16's traceback_unquoted walked the chain by recursion): an exception whose chain of causes is
    longer than the recursion limit made the formatter raise RecursionError, and logging's handleError then printed
    the record's message and arguments (`Message: ... Arguments: ...`) to stderr. Expected: the last MAX_CHAIN
    exceptions written, the rest said to be left out; no message."""
    from service.security.logs import JsonLinesFormatter, MAX_CHAIN
    error = None
    for n in range(1500):
        raised = KeyError(f"{MRN}-{n}")
        raised.__cause__ = error
        error = raised
    record = logging.LogRecord("t", logging.ERROR, __file__, 1, "failed on %s", ("/x",), (KeyError, error, None))
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLinesFormatter())
    handler.emit(record)
    err = capsys.readouterr().err
    assert "Logging error" not in err and MRN not in err
    assert err.count("KeyError (its message is not logged)") == MAX_CHAIN and "exceptions before: not logged" in err


def test_an_exception_group_names_its_members_types_not_their_messages():
    from service.security.logs import traceback_unquoted
    try:
        raise ExceptionGroup(f"group {MRN}", [KeyError(MRN), ValueError(MRN)])
    except ExceptionGroup as group:
        written = traceback_unquoted((type(group), group, group.__traceback__))
    assert "ExceptionGroup (its message is not logged, holding KeyError, ValueError)" in written and MRN not in written


# --- a method the caller chose --------------------------------------------------------------------------------------

def test_a_method_http_does_not_define_is_not_logged(capsys, deployed, caplog):
    """Attack: `DOEJANE /healthz HTTP/1.1` (a token gunicorn and werkzeug pass on; the app answers 405): the access
    line's method atom, gunicorn's `Error handling request` line and the development server's request line wrote
    the word the caller chose. Expected: an HTTP method named, any other `(another method)`."""
    from gunicorn.config import Config
    from service.api.accesslog import AccessLogger
    from tests.security_support import served_by_development_app
    served_by_development_app()
    config = Config()
    for name in ("accesslog", "logger_class", "access_log_format"):
        config.set(name, getattr(deployed, name))
    environ = {"REQUEST_METHOD": "DOEJANE", "RAW_URI": "/healthz", "SERVER_PROTOCOL": "HTTP/1.1",
               "PATH_INFO": "/healthz", "REMOTE_ADDR": "127.0.0.1", "HTTP_USER_AGENT": "curl", "QUERY_STRING": ""}
    AccessLogger(config).access(SimpleNamespace(status="405 METHOD NOT ALLOWED", status_code=405, headers=[], sent=1,
                                                response_length=1), SimpleNamespace(headers=[]), environ,
                                dt.timedelta(milliseconds=1))
    try:
        raise KeyError("x")
    except KeyError:
        AccessLogger(config).exception("Error handling request %s %s", "DOEJANE", "/healthz")
    caplog.set_level("INFO", logger="werkzeug")
    _dev_server_answer(b"DOEJANE /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    captured = capsys.readouterr()
    logged = captured.out + captured.err + "\n".join(record.getMessage() for record in caplog.records)
    for line in ('"(another method) /healthz" 405', "Error handling request (another method) /healthz",
                 '"(another method) /healthz" 200'):        # gunicorn's access and error lines, werkzeug's line
        assert line in logged
    assert "DOEJANE" not in logged
