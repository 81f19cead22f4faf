"""Hostile review of int14 (orders14, ui14): each test's docstring names the attack and the expected behaviour."""
import socket
import threading

from werkzeug.serving import make_server

from service.api.accesslog import DevelopmentAccessLog
from tests.security_support import served_by_development_app


def _dev_server_answer(raw: bytes) -> bytes:
    """What werkzeug's development server with `avh-cds serve`'s request handler answers to a raw request."""
    served_by_development_app()
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=DevelopmentAccessLog)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with socket.create_connection(("127.0.0.1", server.server_port), timeout=10) as sock:
            sock.sendall(raw)
            answer = b""
            while chunk := sock.recv(4096):
                answer += chunk
            return answer
    finally:
        server.shutdown()
        server.server_close()


def test_the_development_server_refuses_a_malformed_request_line_without_logging_it(caplog):
    """Attack (ui14, `avh-cds serve`): a request line that cannot be parsed. The request handler's log_request read
    self.path, which http.server never set for it: an AttributeError and a traceback instead of the 400, and
    http.server's error line quoted the request line whole (`Bad request syntax ('GET /fhir/Condition?patient=avh-01
    a HTTP/1.1')`), the patient's id in the log. Expected: the 400 (or 505) is answered, and the log names the
    refusal without the request line."""
    caplog.set_level("INFO", logger="werkzeug")
    for raw, status in ((b"GET /fhir/Condition?patient=avh-01 a HTTP/1.1\r\n\r\n", 400),
                        (b"GET /fhir/Condition?patient=avh-01 HTTP/9x\r\n\r\n", 400),
                        (b"GET /fhir/Condition?patient=avh-01 HTTP/2.0\r\n\r\n", 505)):
        assert f"Error code: {status}".encode() in _dev_server_answer(raw)    # http.server's error page
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "avh-01" not in logged and "patient=" not in logged
    assert "code 400" in logged and "code 505" in logged



def test_a_fhir_path_with_a_doubled_leading_slash_is_logged_without_its_id(caplog):
    """Attack (ui14, and gunicorn's access line before it): `GET //fhir/Patient/avh-01` (or the absolute form
    `http://host//fhir/...`), which the app serves as /fhir/Patient/avh-01 (werkzeug merges the slashes). The
    redaction looked for `fhir` as the path's first segment, found an empty one, and logged the path whole: the
    patient's id. Expected: the FHIR id replaced, as for /fhir/Patient/avh-01."""
    from service.api.accesslog import redact_path
    served_by_development_app()
    for path in ("//fhir/Patient/avh-01", "///fhir/Patient/avh-01/_history/1"):
        assert "avh-01" not in redact_path(path)
    caplog.set_level("INFO", logger="werkzeug")
    _dev_server_answer(b"GET http://x//fhir/Patient/avh-01 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "/fhir/Patient/{id}" in logged and "avh-01" not in logged

# --- orders14: the draft set's dexamethasone course -------------------------------------------------------------

import pytest  # noqa: E402

from service import create_app  # noqa: E402
from service.config import Settings  # noqa: E402
from tests.fhir_records import NO_AUTH, UCUM, bounds_duration, day, hook_request, in_pathway_chart, today  # noqa: E402
from tests.test_order_hooks import dex, period, post, signed_as_suggested  # noqa: E402


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    return create_app(Settings.from_env(NO_AUTH, sqlite_path=tmp_path_factory.mktemp("store") / "avh-cds.sqlite3"))


@pytest.mark.parametrize("bounds", [
    {"boundsPeriod": {"start": day(3, since=today())}, "boundsDuration": {"value": 20, "unit": "d", "system": UCUM, "code": "d"}},
    {"boundsPeriod": {"start": day(3, since=today()), "end": day(-16, since=today())}, "boundsDuration": {"value": "20"}},
], ids=["read-by-its-duration", "read-by-its-period"])
def test_signing_the_shortened_course_draws_no_card_when_a_line_states_its_start_beside_its_duration(client, bounds):
    """Attack (orders14): a draft line stating both a boundsPeriod start 3 days back and a 20-day boundsDuration
    (bounds[x] is one choice in FHIR; the service reads the line by its duration, yet took the period's start as
    the draft's start), after a dated 3-day draft 5 days back. The shortening rewrote the line as a boundsDuration
    alone: the draft lost its start and moved to today, and signing the suggestion drew the card again (16 days).
    Likewise a line with an unreadable boundsDuration, read by its period, was rewritten as a boundsDuration.
    pathway.md section 4: accepting a suggestion then signing it never draws a warning from this service."""
    both = {"timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d", **bounds}},
            "doseAndRate": [{"doseQuantity": {"value": 96, "unit": "mg", "system": UCUM, "code": "mg"}}]}
    drafts = [dex("dex-1", period(-5, -3)), dex("dex-2", both)]
    record = in_pathway_chart("p3")
    [card] = post(client, hook_request("order-sign", "p3", record, drafts))
    assert card["source"]["topic"]["code"] == "steroid-duration" and card["suggestions"]
    assert post(client, hook_request("order-sign", "p3", record, signed_as_suggested(drafts, card))) == []


@pytest.mark.parametrize("taper", [[period(13, 15, mg=8)], [period(13, 15, mg=8), bounds_duration(2)]],
                         ids=["bare-dates", "and-a-line-counted-from-its-start"])
def test_the_shortened_course_never_suggests_a_period_that_ends_before_it_starts(client, taper):
    """Attack (orders14): a 20-day draft from today 12:00 UTC (a dateTime) and an 8 mg taper drafted for the bare
    dates today + 13 to today + 15. The course ends 13 days after noon today, half a day into the taper's first
    day: the taper was 'shortened' to half a day, written as the bare dates start today + 13, end today + 12, a
    period ending before it starts (FHIR's per-1; the service itself reads it as no duration). pathway.md section 4:
    suggestions carry real FHIR R4 resources. Expected: a bare-date line cannot be cut to less than its first day,
    so the taper is removed (not its first line alone: a line counted from its start would move to today); and
    signing what is suggested draws no card."""
    noon = {"timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d", "boundsPeriod": {
        "start": f"{day(0, since=today())}T12:00:00Z", "end": f"{day(-20, since=today())}T12:00:00Z"}}},
        "doseAndRate": [{"doseQuantity": {"value": 96, "unit": "mg", "system": UCUM, "code": "mg"}}]}
    drafts = [dex("dex-1", noon), dex("dex-2", *taper)]
    record = in_pathway_chart("p3")
    [card] = post(client, hook_request("order-sign", "p3", record, drafts))
    actions = card["suggestions"][0]["actions"]
    for action in actions:
        for line in action.get("resource", {}).get("dosageInstruction", []):
            bounds = line["timing"]["repeat"].get("boundsPeriod", {})
            assert "end" not in bounds or bounds["end"] >= bounds["start"][:10], bounds
    assert {"type": "delete", "resourceId": "MedicationRequest/dex-2"}.items() <= actions[-1].items()
    assert post(client, hook_request("order-sign", "p3", record, signed_as_suggested(drafts, card))) == []
