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


def test_an_access_line_that_fails_after_the_answer_leaves_the_answer_the_warning_and_the_histogram(
        tmp_path, logged, monkeypatch):
    """The access line is written once the answer has been sent (service/api/aftersend.py): one that raises can no
    longer turn the call into a 500. The caller has the 401, with its CORS headers; the warning before it was said,
    the histogram after it still times the call; the failure is logged by the step's name, without the exception's
    message (which could quote what the caller sent)."""
    import service.security

    patient = "Zebulon Quixotefamily"

    def failing(*args):
        raise RuntimeError(patient)         # a message quoting what a caller sent

    client = make_app(tmp_path, AVH_CDS_CORS_ORIGINS=ORIGIN).test_client()
    timed = {status: _timed(client, status) for status in ("401", "500")}
    with monkeypatch.context() as patched:
        patched.setattr(service.security, "log_access", failing)
        response = client.post(INVOKE, json=hook_request(), headers={"Origin": ORIGIN})
    assert response.status_code == 401
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert {status: _timed(client, status) for status in ("401", "500")} == {"401": timed["401"] + 1,
                                                                             "500": timed["500"]}
    lines = logged()
    assert [line["reason"] for line in lines if line.get("event") == "cds_refused"] == ["missing_token"]
    [failure] = [line for line in lines if line.get("level") == "ERROR"]
    assert failure["msg"].startswith("access_line failed after the answer was sent")
    assert "RuntimeError" in json.dumps(failure) and patient not in json.dumps(lines)


def test_the_access_line_and_the_histogram_wait_for_the_answer_to_be_sent(tmp_path, logged):
    """Called as a WSGI server calls the app: nothing of the call's bookkeeping is done while its body is being
    written; close() (after the last byte) writes the access line and times the call, to the answer ready to send
    (`ms` no longer counts the access line's own writing)."""
    app = make_app(tmp_path)
    client = app.test_client()
    timed = _timed(client, "401")
    environ = client.post(INVOKE, json=hook_request()).request.environ.copy()    # a refused call's environ, again
    environ["wsgi.input"] = __import__("io").BytesIO(json.dumps(hook_request()).encode())
    environ.pop("avh_cds.access_logged", None)
    statuses = []
    body = app(environ, lambda status, headers, exc_info=None: statuses.append(status))
    sent = b"".join(body)
    assert statuses == ["401 UNAUTHORIZED"] and json.loads(sent)["error"]
    assert environ["avh_cds.access_logged"] is True         # gunicorn's own line, written before close(), left out
    before = [line for line in logged() if line.get("event") == "cds_call"]
    assert _timed(client, "401") == timed + 1                # the first call, closed by the test client
    body.close()
    after = [line for line in logged() if line.get("event") == "cds_call"]
    assert len(after) == len(before) + 1 and after[-1]["status"] == 401 and after[-1]["ms"] >= 0
    assert _timed(client, "401") == timed + 2
