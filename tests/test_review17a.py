"""Hostile review of branch defer17 (the bookkeeping done in the answer's close(), service/api/aftersend.py)."""
import json
import socket
import time

import requests

from tests.deployment_support import Gunicorn, avh_bundle, patient_view_request
from tests.test_feedback import storage
from tests.test_security_limits import log_lines

__all__ = ["storage", "log_lines"]

SERVICE = "avh-patient-view"


def test_under_gunicorn_every_call_refused_failed_or_dropped_has_one_access_line(tmp_path):
    server = Gunicorn(tmp_path / "gunicorn.log")
    try:
        base, close = server.base, {"Connection": "close"}
        expected = []
        assert requests.post(f"{base}/cds-services/{SERVICE}", json=patient_view_request(avh_bundle()), headers=close,
                             timeout=10).status_code == 200
        expected.append(("invoke", 200))
        assert requests.post(f"{base}/cds-services/nope", json={}, headers=close, timeout=10).status_code == 404
        expected.append(("invoke", 404))
        assert requests.post(f"{base}/cds-services/{SERVICE}", data=b"{", headers={**close, "Content-Type":
                             "application/json"}, timeout=10).status_code == 400
        expected.append(("invoke", 400))
        big = requests.post(f"{base}/cds-services/{SERVICE}", data=b"x" * (40 << 20), headers={**close, "Content-Type":
                            "application/json"}, timeout=30)
        expected.append(("invoke", big.status_code))
        assert requests.head(f"{base}/cds-services", headers=close, timeout=10).status_code == 200
        expected.append(("discovery", 200))
        # a client that sends a call and hangs up before reading the answer
        body = json.dumps(patient_view_request(avh_bundle())).encode()
        with socket.create_connection(("127.0.0.1", int(base.rsplit(":", 1)[1]))) as sock:
            sock.sendall(b"POST /cds-services/%s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n" % (SERVICE.encode(), len(body)) + body)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        expected.append(("invoke", 200))
        deadline = time.monotonic() + 10
        while len(server.access_lines()) < len(expected) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.stop() == 0
    finally:
        server.stop()
    lines = server.access_lines()
    print(server.output())
    assert sorted((line["endpoint"], line["status"]) for line in lines) == sorted(expected)


def test_replay_in_process_records_its_calls_as_a_server_would(tmp_path):
    """`avh-cds replay` without --url calls the app through Flask's own test client (service/fhir/replay.py,
    InProcess), which leaves an answer open unless asked: its calls' bookkeeping after the answer (the access line,
    the histogram, the issued cards; service/api/aftersend.py) never ran. The suite's ClosingClient hid it."""
    from flask.testing import FlaskClient

    from service import create_app
    from service.config import Settings
    from service.fhir.replay import InProcess

    app = create_app(Settings.from_env({"AVH_CDS_AUTH": "off", "AVH_CDS_ISSUED_FLUSH_SECONDS": "600"},
                                       sqlite_path=tmp_path / "replay.sqlite3"))
    app.test_client_class = FlaskClient          # what `avh-cds replay` runs with: Flask's client, not the suite's
    store = app.extensions["avh"].store
    status, answer = InProcess(app).call("POST", f"/cds-services/{SERVICE}", patient_view_request(avh_bundle()))
    assert status == 200 and answer["cards"]
    assert {row[0] for row in store._pending} == {card["uuid"] for card in answer["cards"]}
    store.dispose()


def test_feedback_sent_before_its_answer_is_closed_keeps_the_suggestion_it_accepted(storage):
    """A caller has the answer's bytes before the server calls its close(), where the issued cards are queued
    (service/api/routes.py): feedback sent at once, on another connection to the same worker, finds no card yet.
    The recheck (FeedbackStore._recheck_later) must then put back all the join gives, not only card_known: the
    governance report reads the accepted suggestion from the feedback row alone (card_topic is filled before a
    report, the suggestion never was)."""
    from flask.testing import FlaskClient
    from sqlalchemy import select

    from service import create_app
    from service.config import Settings
    from service.feedback.store import feedback

    app = create_app(Settings.from_env({"AVH_CDS_AUTH": "off", "AVH_CDS_ISSUED_FLUSH_SECONDS": "0.2"}, **storage))
    app.test_client_class = FlaskClient          # an answer left open: sent, not yet closed
    client, store = app.test_client(), app.extensions["avh"].store
    try:
        answer = client.post(f"/cds-services/{SERVICE}", json=patient_view_request(avh_bundle()))
        card = next(card for card in answer.get_json()["cards"] if card.get("suggestions"))
        taken = card["suggestions"][0]["uuid"]
        given = client.post(f"/cds-services/{SERVICE}/feedback", buffered=True, json={"feedback": [
            {"card": card["uuid"], "outcome": "accepted", "acceptedSuggestions": [{"id": taken}],
             "outcomeTimestamp": "2026-11-30T10:00:00Z"}]})
        assert given.status_code == 200 and given.get_json()["unknownCards"] == []
        answer.close()                              # the server's close(): the cards are queued now
        deadline = time.monotonic() + 10
        columns = (feedback.c.card_known, feedback.c.card_topic, feedback.c.card_issued_at,
                   feedback.c.accepted_suggestion)
        while time.monotonic() < deadline:
            with store.engine.connect() as conn:
                [row] = conn.execute(select(*columns)).all()
            if row[0]:
                break
            time.sleep(0.05)
        known, topic, issued_at, suggestion = row
        assert known and topic == card["source"]["topic"]["code"] and issued_at is not None
        assert suggestion is not None
    finally:
        store.dispose()


def test_the_writer_thread_outlives_an_unexpected_error_and_logs_it_without_its_message(tmp_path, log_lines):
    """Since defer17 the writer thread is the only writer of issued-card batches (no request thread runs
    flush_if_due). An exception other than the database's (SQLAlchemyError, caught in _write) ended the thread for
    good, printed with its message by threading.excepthook: every later card stayed pending until max_pending
    dropped it, and feedback on them was marked unknown, silently."""
    import datetime as dt

    from service.feedback.store import FeedbackStore

    store = FeedbackStore(f"sqlite:///{tmp_path / 'w.sqlite3'}", flush_seconds=0.05)
    store.start()
    written, calls, said = [], [], " ".join(["patient", "Jane", "Doe"])
    real = store._write_issued

    def flaky(rows, suggestions=()):
        calls.append(len(rows))
        if len(calls) == 1:
            raise RuntimeError(said)      # a message that could quote what a caller sent
        written.extend(rows)
        return real(rows, suggestions)
    store._write_issued = flaky
    try:
        now = dt.datetime.now(dt.timezone.utc)
        store.record_issued("svc", "hook-1", [("card-1", "topic")], now)
        deadline = time.monotonic() + 5
        while not calls and time.monotonic() < deadline:
            time.sleep(0.01)
        store.record_issued("svc", "hook-2", [("card-2", "topic")], now)
        while not written and time.monotonic() < deadline:
            time.sleep(0.01)
        assert {row[0] for row in written} == {"card-1", "card-2"}     # the batch that raised, written again
        assert "Jane" not in log_lines() and "RuntimeError" in log_lines()
    finally:
        store._write_issued = real
        store.dispose()


def test_an_answer_closed_twice_records_its_call_once(tmp_path, log_lines):
    """PEP 3333 asks a server to call close() once; a middleware or server that calls it again (werkzeug's response
    runs its call_on_close functions on every close()) wrote the access line twice and counted the call twice."""
    import io

    from service import create_app
    from service.config import Settings

    app = create_app(Settings.from_env({"AVH_CDS_AUTH": "off", "AVH_CDS_ISSUED_FLUSH_SECONDS": "600"},
                                       sqlite_path=tmp_path / "twice.sqlite3"))
    store = app.extensions["avh"].store
    try:
        body = json.dumps(patient_view_request(avh_bundle())).encode()
        environ = {"REQUEST_METHOD": "POST", "PATH_INFO": f"/cds-services/{SERVICE}", "SERVER_NAME": "localhost",
                   "SERVER_PORT": "80", "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(body),
                   "CONTENT_TYPE": "application/json", "CONTENT_LENGTH": str(len(body))}
        answer = app(environ, lambda status, headers, exc_info=None: None)
        cards = json.loads(b"".join(answer))["cards"]
        answer.close()
        answer.close()
        lines = [json.loads(line) for line in log_lines().splitlines()]
        assert len([line for line in lines if line.get("event") == "cds_call"]) == 1
        assert len(store._pending) == len(cards)
    finally:
        store.dispose()


def test_a_cors_preflight_is_not_timed_as_a_cds_service_call(tmp_path):
    """A browser (the SMART sandbox) sends an OPTIONS preflight before its POST; Flask answers it under the invoke
    endpoint. It was counted in avh_cds_request_duration_seconds as a call answered 200 (one more call than the
    access lines, which leave preflights out, and sub-millisecond samples pulling the latency quantiles down)."""
    from service import create_app
    from service.config import Settings
    from tests.deployment_support import sample

    app = create_app(Settings.from_env({"AVH_CDS_AUTH": "off"}, sqlite_path=tmp_path / "preflight.sqlite3"))
    client = app.test_client()
    try:
        def calls() -> float:
            return sample(client.get("/metrics").get_data(as_text=True), "avh_cds_request_duration_seconds_count",
                          service=SERVICE, status="200")
        assert client.post(f"/cds-services/{SERVICE}", json=patient_view_request(avh_bundle())).status_code == 200
        before = calls()
        preflight = client.options(f"/cds-services/{SERVICE}", headers={
            "Origin": "https://ehr.example.org", "Access-Control-Request-Method": "POST"})
        assert preflight.status_code == 200 and preflight.headers.get("Access-Control-Allow-Origin")
        assert calls() == before
    finally:
        app.extensions["avh"].store.dispose()
