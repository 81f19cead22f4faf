"""The production worker class (service/api/worker.py) under a real gunicorn on 127.0.0.1: a lone kept-alive
connection's next request is served by the thread that answered the last one; everything else as stock gthread.

The servers here run gunicorn.conf.py as it is, plus a `pre_request` that logs, for each request sent with an
X-Seq header, the thread serving it and the worker's count of requests served without the poller. Where a test needs
the wait to be seen from a Python client on a busy machine, the worker waits longer than production's 0.5 ms (the
same class, its `wait_seconds` alone changed)."""
import http.client
import json
import signal
import socket
import time

import pytest

from tests.deployment_support import ROOT, Gunicorn, avh_bundle, patient_view_request
from tests.fhir_records import PRE_OP_CARDS

SERVICE_PATH = "/cds-services/avh-patient-view"

CONFIG = """
import threading
exec(compile(open({production!r}).read(), {production!r}, "exec"))
from service.api.worker import KeptAliveWorker
{worker}
_production_pre_request = pre_request

def pre_request(worker, req):
    seq = dict(req.headers).get("X-SEQ")
    if seq is not None:
        worker.log.info("served seq=%s thread=%d in_a_row=%d", seq, threading.get_ident(),
                        worker.served_on_the_same_thread)
    _production_pre_request(worker, req)
"""


def start(tmp_path, wait: float | None = None, **env) -> Gunicorn:
    """One worker (unless `env` says otherwise) of two threads, the production class waiting `wait` s (production's
    own wait when None)."""
    worker = "" if wait is None else (f"class Waiting(KeptAliveWorker):\n    wait_seconds = {wait}\n"
                                      "worker_class = Waiting\n")
    config = tmp_path / "gunicorn.test.conf.py"
    config.write_text(CONFIG.format(production=str(ROOT / "gunicorn.conf.py"), worker=worker))
    server = Gunicorn(tmp_path / "gunicorn.log", config=str(config), **{"AVH_CDS_WORKERS": "1", **env})
    time.sleep(0.5)     # until the worker has closed the connection of the start-up probe, closed by its client
    return server


def served(server: Gunicorn) -> dict[str, tuple[int, int]]:
    """Each X-Seq request: (the thread that served it, the worker's count of requests served without the poller
    then). The count starts at 1 or 0: the thread that answered the start-up probe may have seen its client close
    within its wait (a close is handled as a request is, then the connection closes)."""
    found = {}
    for line in server.output().splitlines():
        if "served seq=" in line:
            fields = dict(part.split("=", 1) for part in line.split("served ", 1)[1].split())
            found[fields["seq"]] = (int(fields["thread"]), int(fields["in_a_row"]))
    return found


def connection(server: Gunicorn) -> http.client.HTTPConnection:
    host, port = server.base.removeprefix("http://").split(":")
    return http.client.HTTPConnection(host, int(port), timeout=10)


def ask(conn: http.client.HTTPConnection, seq: str, method: str = "GET", path: str = "/healthz", **kwargs):
    headers = {"X-Seq": seq, **kwargs.pop("headers", {})}
    conn.request(method, path, headers=headers, **kwargs)
    answer = conn.getresponse()
    return answer, answer.read()


@pytest.fixture
def waiting(tmp_path):
    server = start(tmp_path, wait=0.2)
    yield server
    server.stop()


def test_a_lone_connections_requests_are_served_by_the_thread_that_answered_the_last(waiting):
    call = json.dumps(patient_view_request(avh_bundle())).encode()
    conn = connection(waiting)
    answer, body = ask(conn, "1")
    assert (answer.status, json.loads(body)) == (200, {"status": "alive"})
    answer, body = ask(conn, "2", "HEAD")
    assert (answer.status, body) == (200, b"")
    answer, body = ask(conn, "3", "POST", SERVICE_PATH, body=call, headers={"Content-Type": "application/json"})
    assert answer.status == 200 and {c["source"]["topic"]["code"] for c in json.loads(body)["cards"]} == PRE_OP_CARDS
    answer, chunked = ask(conn, "4", "POST", SERVICE_PATH, body=iter([call[:1000], call[1000:]]), encode_chunked=True,
                          headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"})
    assert answer.status == 200 and [c["summary"] for c in json.loads(chunked)["cards"]] == \
        [c["summary"] for c in json.loads(body)["cards"]]
    answer, body = ask(conn, "5")
    assert (answer.status, json.loads(body)) == (200, {"status": "alive"})
    conn.close()
    assert waiting.stop() == 0
    seen = served(waiting)
    assert [seen[seq][1] - seen["1"][1] for seq in "12345"] == [0, 1, 2, 3, 4]      # one poller hand-over: the connection's first
    assert len({seen[seq][0] for seq in "12345"}) == 1


def test_pipelined_requests_are_answered_in_order_on_the_same_thread(waiting):
    host, port = waiting.base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        raw.sendall(b"".join(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Seq: p%d\r\n\r\n" % n for n in range(3)))
        received = b""
        while received.count(b'{"status":"alive"}') < 3:
            chunk = raw.recv(65536)
            assert chunk, received
            received += chunk
    assert received.count(b"HTTP/1.1 200 OK") == 3
    assert waiting.stop() == 0
    seen = served(waiting)
    assert [seen[f"p{n}"][1] - seen["p0"][1] for n in range(3)] == [0, 1, 2]


def test_a_request_after_the_wait_goes_through_the_poller_and_is_answered(tmp_path):
    server = start(tmp_path, wait=0.05)
    try:
        conn = connection(server)
        assert ask(conn, "1")[0].status == 200
        time.sleep(0.5)   # the thread has stopped waiting: the connection is back in the poller
        assert ask(conn, "2")[0].status == 200
        assert ask(conn, "3")[0].status == 200     # at once: the thread that answered "2" serves it
        conn.close()
    finally:
        assert server.stop() == 0
    seen = served(server)
    assert [seen[seq][1] - seen["1"][1] for seq in "123"] == [0, 0, 1]


def test_two_connections_to_one_worker_are_served_as_stock_gthread(waiting):
    a, b = connection(waiting), connection(waiting)
    assert ask(a, "a1")[0].status == 200
    assert ask(b, "b1")[0].status == 200     # the worker holds two connections from now on
    for n in range(2, 5):
        assert ask(a, f"a{n}")[0].status == 200
        assert ask(b, f"b{n}")[0].status == 200
    b.close()
    time.sleep(0.5)   # the worker has seen b close: a is alone again
    assert ask(a, "a5")[0].status == 200
    assert ask(a, "a6")[0].status == 200
    a.close()
    assert waiting.stop() == 0
    seen = served(waiting)
    assert len({seen[f"{c}{n}"][1] for c in "ab" for n in range(1, 5)} | {seen["a5"][1]}) == 1
    assert seen["a6"][1] == seen["a5"][1] + 1


def test_sigterm_during_a_kept_alive_sequence_answers_with_close_and_exits_cleanly(tmp_path):
    server = start(tmp_path, wait=1.0)
    conn = connection(server)
    for seq in "123":
        assert ask(conn, seq)[0].status == 200
    server.process.send_signal(signal.SIGTERM)     # the thread that answered "3" is waiting for the next request
    stopped = time.monotonic()
    time.sleep(0.3)
    answer, _ = ask(conn, "4")
    assert answer.status == 200 and answer.getheader("Connection") == "close"
    conn.close()
    assert server.process.wait(timeout=20) == 0
    assert time.monotonic() - stopped < 5     # the worker's graceful_timeout is 20 s
    server.stop()
    seen = served(server)
    assert [seen[seq][1] - seen["1"][1] for seq in "123"] == [0, 1, 2]


def test_a_partial_next_request_goes_back_to_the_poller_as_stock(waiting):
    """A client that sends part of its next request within the wait: the waiting thread does not read it, the
    connection goes back to the poller (stock gthread then gives it a thread, which reads the rest as it comes)."""
    host, port = waiting.base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as slow:
        slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Seq: s1\r\n\r\n")
        answer = b""
        while b"alive" not in answer:
            answer += slow.recv(65536)
        slow.sendall(b"GET /healthz HTTP/1.1\r\nX-Seq: s2\r\nHo")
        time.sleep(0.5)
        other = connection(waiting)       # the worker's other thread
        assert ask(other, "other")[0].status == 200
        other.close()
        slow.sendall(b"st: x\r\n\r\n")
        answer = b""
        while b"alive" not in answer:
            answer += slow.recv(65536)
        assert answer.startswith(b"HTTP/1.1 200 OK")
    assert waiting.stop() == 0
    seen = served(waiting)
    assert seen["s2"][1] == seen["s1"][1]
