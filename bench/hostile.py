"""Measurements of the hostile review (issue 15), in process on 127.0.0.1, default settings:

1. trickle: 8 calls name a FHIR server that announces Content-Length: 10000000 and sends a byte every 0.2 s;
   meanwhile 8 calls, one after another, name a healthy server (the fixture endpoint over HTTP). Prints the
   healthy calls' statuses and median latency, and how many of the slow server's connections were let go of.
2. feedback: the median time of a feedback post about a card no one issued (30 posts, SQLite).

    python -m bench.hostile
"""
from __future__ import annotations

import pathlib
import socket
import statistics
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from werkzeug.serving import make_server

from service import create_app
from service.config import Settings
from service.uuids import new_uuid
from tests.fhir_records import write_fixtures

AUTH_OFF = {"AVH_CDS_AUTH": "off"}


def _trickling_server() -> tuple[str, list, list]:
    opened, released = [], []
    listener = socket.create_server(("127.0.0.1", 0))

    def serve(conn: socket.socket) -> None:
        opened.append(time.monotonic())
        try:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/fhir+json\r\nContent-Length: 10000000\r\n\r\n{")
            for _ in range(300):
                time.sleep(0.2)
                conn.sendall(b" ")
        except OSError:
            pass
        released.append(time.monotonic())
        conn.close()

    def accept() -> None:
        while True:
            threading.Thread(target=serve, args=(listener.accept()[0],), daemon=True).start()
    threading.Thread(target=accept, daemon=True).start()
    return f"http://127.0.0.1:{listener.getsockname()[1]}/fhir", opened, released


def trickle(scratch: pathlib.Path) -> None:
    slow, opened, released = _trickling_server()
    fixtures = create_app(Settings.from_env(AUTH_OFF, fixture_fhir=True, fixtures_dir=write_fixtures(scratch / "fx"),
                                            sqlite_path=scratch / "fx.sqlite3"))
    server = make_server("127.0.0.1", 0, fixtures, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    healthy = f"http://127.0.0.1:{server.server_port}/fhir"
    client = create_app(Settings.from_env(AUTH_OFF, sqlite_path=scratch / "s.sqlite3")).test_client()

    def call(fhir_server: str) -> tuple[int, float]:
        started = time.perf_counter()
        response = client.post("/cds-services/avh-patient-view", json={
            "hook": "patient-view", "hookInstance": str(uuid.uuid4()), "fhirServer": fhir_server,
            "context": {"patientId": "pt-pre", "userId": "Practitioner/u"}})
        return response.status_code, time.perf_counter() - started

    call(healthy)                                       # the fixture endpoint's first answer loads it
    with ThreadPoolExecutor(8) as callers:
        started = time.monotonic()
        slow_calls = [callers.submit(call, slow) for _ in range(8)]
        time.sleep(0.1)
        results = [call(healthy) for _ in range(8)]
        for future in slow_calls:
            future.result()
    time.sleep(1.0)
    print(f"trickle: healthy calls {[status for status, _ in results]}, median "
          f"{statistics.median(seconds for _, seconds in results) * 1000:.0f} ms; slow server: {len(opened)} "
          f"connections opened, {len(released)} let go of within {time.monotonic() - started:.1f} s")
    server.shutdown()


def feedback(scratch: pathlib.Path) -> None:
    client = create_app(Settings.from_env(AUTH_OFF, sqlite_path=scratch / "f.sqlite3")).test_client()
    times = []
    for i in range(30):
        card = new_uuid() if i % 2 else str(uuid.uuid4())       # one that looks just issued, and any other
        body = {"feedback": [{"card": card, "outcome": "overridden", "outcomeTimestamp": "2026-11-24T10:00:00Z"}]}
        started = time.perf_counter()
        assert client.post("/cds-services/avh-patient-view/feedback", json=body).status_code == 200
        times.append(time.perf_counter() - started)
    print(f"feedback on an unknown card: median {statistics.median(times) * 1000:.1f} ms, "
          f"max {max(times) * 1000:.1f} ms")


def main() -> int:
    scratch = pathlib.Path(tempfile.mkdtemp(prefix="avh-hostile-"))
    trickle(scratch)
    feedback(scratch)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
