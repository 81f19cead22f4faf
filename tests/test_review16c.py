"""Review of privacy16 (hostile privacy reviewer rev16c): paths, issuers and tracebacks a caller chose, in the logs."""
import datetime as dt
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.test_review14 import _dev_server_answer

MRN = "MRN778899-DOE-JANE"


def _gunicorn_access_line(path: str, capsys) -> str:
    import runpy
    deployed = SimpleNamespace(**runpy.run_path(str(Path(__file__).resolve().parent.parent / "gunicorn.conf.py")))
    """The access line gunicorn writes (AccessLogger with gunicorn's own format and Atoms) for a 404 on `path`."""
    from gunicorn.config import Config
    from service.api.accesslog import AccessLogger
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
def test_a_path_no_route_serves_is_not_logged_by_gunicorn(path, capsys):
    """Attack: a 404 on /cds-services/<the patient's MRN> (or /pathway/..., /fhir/<MRN>): redact_path replaced ids
    under /fhir/<Type>/ only, so gunicorn's access line logged the MRN as sent. Expected: the route's pattern, or a
    fixed placeholder for a path no route serves."""
    line = _gunicorn_access_line(path, capsys)
    assert '"GET ' in line and MRN not in line


def test_known_routes_stay_readable_in_the_access_line(capsys):
    line = "".join(_gunicorn_access_line(path, capsys) for path in (
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


def test_the_routes_redact_path_knows_are_the_app_s(client):
    """ROUTES is the app's URL map (its <variables> as {id}): a route added without it would be logged as
    NOT_A_ROUTE, one removed would be named for a path no route serves."""
    import re
    from flask import current_app
    from service.api.accesslog import ROUTES
    with client.application.app_context():
        rules = {re.sub(r"<[^>]*>", "{id}", rule.rule) for rule in current_app.url_map.iter_rules()
                 if rule.endpoint != "static"}
    fixture_rules = {"/fhir", "/fhir/", "/fhir/{id}", "/fhir/metadata"}
    assert rules - fixture_rules <= ROUTES and ROUTES - {"/fhir", "/fhir/metadata"} <= rules
