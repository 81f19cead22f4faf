"""The app's before- and after-request steps on a refused CDS call: the refusal warning, then the access line, then
CORS, then the request histogram, each seeing the answer the step before it left, and a step that raises stops
those after it."""
import json

import pytest

from service.security import refusals
from tests.deployment_support import sample
from tests.security_support import INVOKE, hook_request, make_app
from tests.test_security_limits import log_lines

__all__ = ["log_lines"]

ORIGIN = "https://ehr.example.org"
DURATION_COUNT = "avh_cds_request_duration_seconds_count"
SERVICE = "avh-patient-view"


@pytest.fixture
def logged(log_lines, monkeypatch):
    """Every line logged during the test, decoded; the refusal warning not yet said this minute."""
    monkeypatch.setattr(refusals, "refusals", refusals.RefusalLog())
    return lambda: [json.loads(line) for line in log_lines().splitlines()]


def _timed(client, status: str) -> float:
    return sample(client.get("/metrics").get_data(as_text=True), DURATION_COUNT, service=SERVICE, status=status)


@pytest.mark.parametrize("refusal, status, reason", [
    ({}, 401, "missing_token"),
    ({"fhirServer": "https://elsewhere.test/r4"}, 403, "fhir_server_not_allowed")])
def test_a_refused_browser_call_is_warned_of_logged_given_cors_and_timed_in_that_order(
        tmp_path, logged, refusal, status, reason):
    app = make_app(tmp_path, AVH_CDS_AUTH="off", AVH_CDS_CORS_ORIGINS=ORIGIN) if status == 403 \
        else make_app(tmp_path, AVH_CDS_CORS_ORIGINS=ORIGIN)
    client = app.test_client()
    timed = _timed(client, str(status))
    response = client.post(INVOKE, json=hook_request(**refusal), headers={"Origin": ORIGIN})
    assert response.status_code == status
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert _timed(client, str(status)) == timed + 1
    events = [(line.get("event"), line.get("status"), line.get("reason")) for line in logged()
              if line.get("event") in {"cds_refused", "cds_call"}]
    assert events == [("cds_refused", status, reason), ("cds_call", status, None)]


def test_an_access_line_that_fails_stops_the_histogram_but_not_the_warning(tmp_path, logged, monkeypatch):
    """The access line raising is a 500 (the steps raise again on it): the warning before it was said, the request's
    timing after it is not taken of either answer. (The 500 has CORS headers all the same: flask-cors wraps the
    error handlers too.)"""
    import service.security

    def failing(*args):
        raise RuntimeError("the log is gone")

    client = make_app(tmp_path, AVH_CDS_CORS_ORIGINS=ORIGIN).test_client()
    timed = {status: _timed(client, status) for status in ("401", "500")}
    with monkeypatch.context() as patched:
        patched.setattr(service.security, "log_access", failing)
        response = client.post(INVOKE, json=hook_request(), headers={"Origin": ORIGIN})
    assert response.status_code == 500
    assert {status: _timed(client, status) for status in ("401", "500")} == timed
    assert [line["reason"] for line in logged() if line.get("event") == "cds_refused"] == ["missing_token"]
