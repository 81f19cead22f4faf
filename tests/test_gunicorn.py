"""The production entry point: gunicorn with gunicorn.conf.py and service.wsgi:app, on 127.0.0.1."""
import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from tests.deployment_support import ROOT, Gunicorn, avh_bundle, patient_view_request, sample, without_uuids
from tests.fhir_records import PRE_OP_CARDS
from tests.ports import listening_socket, port_of

SERVICE = "avh-patient-view"


@pytest.fixture
def server(tmp_path):
    gunicorn = Gunicorn(tmp_path / "gunicorn-a.log")
    yield gunicorn
    gunicorn.stop()


def call(base: str, body: dict) -> requests.Response:
    # a new connection per call, so that calls spread over the workers
    return requests.post(f"{base}/cds-services/{SERVICE}", json=body, timeout=10,
                         headers={"Connection": "close"})


def test_gunicorn_serves_health_discovery_calls_and_metrics_summed_over_workers(server):
    base = server.base
    assert requests.get(f"{base}/healthz", timeout=5).json() == {"status": "alive"}
    ready = requests.get(f"{base}/readyz", timeout=5)
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    discovery = requests.get(f"{base}/cds-services", timeout=5)
    assert SERVICE in [s["id"] for s in discovery.json()["services"]]

    # Call, four at a time, until both workers have answered: /metrics must then add up both. On a busy machine
    # the second worker may still be loading the app after the first has answered many calls: wait for it.
    pids, calls, deadline = set(), 0, time.monotonic() + 30
    with ThreadPoolExecutor(4) as pool:
        while len(pids) < 2 and time.monotonic() < deadline:
            for response in pool.map(lambda _: call(base, patient_view_request(avh_bundle())), range(4)):
                assert response.status_code == 200
                assert {c["source"]["topic"]["code"] for c in response.json()["cards"]} == PRE_OP_CARDS
            calls += 4
            pids = {line["pid"] for line in server.access_lines() if line.get("service") == SERVICE}
    assert len(pids) == 2, "the calls never reached the second worker"
    # A call's access line is the last of what its worker records once the answer has been sent (service/api/
    # aftersend.py): with every line written, every call is in the metrics.
    while len(server.access_lines()) < calls and time.monotonic() < deadline + 10:
        time.sleep(0.05)

    text = requests.get(f"{base}/metrics", timeout=5).text
    assert sample(text, "avh_cds_request_duration_seconds_count", service=SERVICE, status="200") == calls
    assert sample(text, "avh_cds_request_duration_seconds_bucket", service=SERVICE, status="200", le="+Inf") == calls
    for topic in PRE_OP_CARDS:
        assert sample(text, "avh_cds_cards_total", service=SERVICE, topic=topic) == calls


def test_access_log_carries_no_query_string_token_or_resource_id(server):
    requests.get(f"{server.base}/healthz?patientId=dep-secret-patient", timeout=5)
    requests.get(f"{server.base}/fhir/Patient/dep-secret-id/_history/1", timeout=5)
    requests.post(f"{server.base}/cds-services/{SERVICE}", timeout=5, json={},
                  headers={"Authorization": "Bearer dep.secret.token", "Referer": "https://x/?patientId=dep-ref"})
    assert server.stop() == 0
    log = server.output()
    # the production app has no /fhir route: the path is none of its routes (the URL map names them), not logged
    assert '"GET /healthz" 200' in log and '"GET (a path no route serves: not logged)" 404' in log
    assert [line["status"] for line in server.access_lines()] == [400]
    for secret in ("dep-secret-patient", "dep-secret-id", "dep.secret.token", "dep-ref", "patientId"):
        assert secret not in log


def test_a_cds_call_is_logged_once_by_the_app_and_other_paths_by_gunicorn(server):
    requests.get(f"{server.base}/healthz", timeout=5)
    assert call(server.base, patient_view_request(avh_bundle())).status_code == 200
    assert requests.get(f"{server.base}/cds-services", timeout=5).status_code == 200
    assert server.stop() == 0
    log = server.output()
    # Each line is written once its answer has been sent (service/api/aftersend.py), by whichever worker answered:
    # the invoke's may come after the discovery's, answered by the other worker meanwhile.
    assert sorted((line["endpoint"], line["status"]) for line in server.access_lines()) == [("discovery", 200),
                                                                                            ("invoke", 200)]
    assert all(isinstance(line["pid"], int) for line in server.access_lines())
    assert '"GET /healthz" 200' in log
    assert '"POST /cds-services' not in log and '"GET /cds-services' not in log     # gunicorn's own lines


class SlowFhir(BaseHTTPRequestHandler):
    """A FHIR server that takes 1.5 s to answer a search with an empty Bundle."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        time.sleep(1.5)
        body = json.dumps({"resourceType": "Bundle", "type": "searchset", "entry": []}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/fhir+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_sigterm_lets_calls_in_flight_finish_then_exits_cleanly(tmp_path):
    """The call in flight also keeps what its answer's close() records after the SIGTERM (service/api/aftersend.py):
    its access line, and its issued cards, written at the worker's exit (the flush interval outlasts the test)."""
    import sqlite3
    slow = ThreadingHTTPServer(("127.0.0.1", 0), SlowFhir)     # a port the kernel picks
    threading.Thread(target=slow.serve_forever, daemon=True).start()
    server = Gunicorn(tmp_path / "gunicorn.log", AVH_CDS_FETCH_TIMEOUT_SECONDS="10",
                      AVH_CDS_FETCH_BUDGET_SECONDS="10", AVH_CDS_ISSUED_FLUSH_SECONDS="600")
    try:
        body = patient_view_request(avh_bundle())
        del body["prefetch"]["observations"]
        body["fhirServer"] = f"http://127.0.0.1:{slow.server_address[1]}/fhir"
        with ThreadPoolExecutor(1) as pool:
            started = time.monotonic()
            in_flight = pool.submit(call, server.base, body)
            time.sleep(0.7)   # the call is now waiting on the slow FHIR server
            server.process.send_signal(signal.SIGTERM)
            answer = in_flight.result()
            assert answer.status_code == 200 and answer.json()["cards"]
            assert time.monotonic() - started >= 1.5   # it did wait for the FHIR server, after the SIGTERM
        assert server.stop() == 0
    finally:
        server.stop()
        slow.shutdown()
        slow.server_close()
    assert "Shutting down: Master" in server.output()
    assert [(line["endpoint"], line["status"]) for line in server.access_lines()] == [("invoke", 200)]
    with sqlite3.connect(tmp_path / "gunicorn.sqlite3") as db:
        written = {uuid for (uuid,) in db.execute("SELECT card_uuid FROM avh_issued_card")}
    assert written == {card["uuid"] for card in answer.json()["cards"]}


def test_two_instances_answer_the_same_call_identically_with_their_own_metrics(tmp_path):
    public = "https://cds.example.org"   # both behind one address, as behind a load balancer
    a = Gunicorn(tmp_path / "a.log", AVH_CDS_PUBLIC_URL=public)
    try:
        b = Gunicorn(tmp_path / "b.log", AVH_CDS_PUBLIC_URL=public)
        try:
            body = patient_view_request(avh_bundle("dep-twin-1"))
            answers = [call(a.base, body), call(b.base, body), call(a.base, body)]
            assert [r.status_code for r in answers] == [200, 200, 200]
            assert without_uuids(answers[0].json()) == without_uuids(answers[1].json())
            # a call's sample is recorded once its answer has been sent (service/api/aftersend.py): a scrape at once
            # may come before the last one's, so each instance is read until it counts its calls (at most 10 s)
            assert counted(a, 2) == 2 and counted(b, 1) == 1
        finally:
            assert b.stop() == 0
    finally:
        assert a.stop() == 0


def counted(instance: Gunicorn, calls: int, wait: float = 10.0) -> float:
    """The request-duration samples /metrics of `instance` counts for SERVICE, once they are `calls` (or more), or
    after `wait` s (the caller's assertion then says how many)."""
    deadline = time.monotonic() + wait
    while True:
        text = requests.get(f"{instance.base}/metrics", timeout=5).text
        found = sample(text, "avh_cds_request_duration_seconds_count", service=SERVICE)
        if found >= calls or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def dockerfile_instruction(name: str) -> str:
    """One Dockerfile instruction's arguments, continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    return next(line.split(None, 1)[1] for line in text.splitlines() if line.startswith(name + " "))


def test_the_image_healthcheck_command_follows_healthz(server):
    command = json.loads(dockerfile_instruction("HEALTHCHECK").split(" CMD ", 1)[1])
    assert command[0] == "python"
    run = [sys.executable, *command[1:]]
    env = {**os.environ, "AVH_CDS_BIND": server.base.removeprefix("http://")}
    assert subprocess.run(run, env=env, capture_output=True, timeout=10).returncode == 0
    assert server.stop() == 0
    assert subprocess.run(run, env=env, capture_output=True, timeout=10).returncode != 0


def test_the_image_runs_this_configuration_as_a_non_root_user():
    assert json.loads(dockerfile_instruction("CMD")) == ["gunicorn", "-c", "gunicorn.conf.py", "service.wsgi:app"]
    assert dockerfile_instruction("FROM").startswith("python:3.11-slim")
    assert dockerfile_instruction("USER") not in {"root", "0"}


def test_the_metrics_directory_gunicorn_makes_is_removed_however_it_exits(tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    clean = Gunicorn(tmp_path / "clean.log", TMPDIR=str(tmp))
    assert [d.name[:16] for d in tmp.iterdir()] == ["avh-cds-metrics-"]
    assert clean.stop() == 0
    with listening_socket() as taken:   # the port is taken: gunicorn cannot bind and exits
        env = {**os.environ, "AVH_CDS_BIND": f"127.0.0.1:{port_of(taken)}", "TMPDIR": str(tmp)}
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        failed = subprocess.run([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "service.wsgi:app"],
                                cwd=ROOT, env=env, capture_output=True, timeout=60)
    assert failed.returncode != 0
    assert list(tmp.iterdir()) == []


def test_issued_cards_queued_in_the_workers_are_written_when_gunicorn_stops(tmp_path):
    import sqlite3
    # A flush interval longer than the test: only the workers' exit can write the rows.
    server = Gunicorn(tmp_path / "gunicorn.log", AVH_CDS_ISSUED_FLUSH_SECONDS="600")
    try:
        uuids = {card["uuid"] for _ in range(6) for card in call(server.base, patient_view_request(avh_bundle())).json()["cards"]}
        assert uuids
        with sqlite3.connect(tmp_path / "gunicorn.sqlite3") as db:
            assert db.execute("SELECT count(*) FROM avh_issued_card").fetchone() == (0,)
        assert server.stop() == 0
    finally:
        server.stop()
    with sqlite3.connect(tmp_path / "gunicorn.sqlite3") as db:
        assert {uuid for (uuid,) in db.execute("SELECT card_uuid FROM avh_issued_card")} == uuids


def test_charts_remembered_across_threads_and_workers_never_mix_patients(server):
    """Twelve patients, each called four times, eight calls at a time over two workers of two threads: every
    answer names only its own patient, repeats its first answer, and every card has a uuid of its own."""
    patients = [f"dep-mix-{i}" for i in range(12)]
    bodies = [patient_view_request(avh_bundle(pid)) for pid in patients for _ in range(4)]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda body: (body["context"]["patientId"], call(server.base, body)), bodies))
    first: dict[str, object] = {}
    uuids = []
    for pid, response in answers:
        assert response.status_code == 200
        cards = response.json()["cards"]
        text = json.dumps(cards)
        assert f"Patient/{pid}" in text and f"Condition/{pid}-vh" in text
        assert not any(f"Patient/{other}\"" in text for other in patients if other != pid)
        assert without_uuids(cards) == first.setdefault(pid, without_uuids(cards))
        uuids += [c["uuid"] for c in cards] + [s["uuid"] for c in cards for s in c.get("suggestions", [])]
    assert len(uuids) == len(set(uuids))


def _resolved_settings(tmp_path, **environ: str) -> dict[str, str]:
    """gunicorn's own reading of gunicorn.conf.py (`--print-config`) in a clean environment plus `environ`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AVH_CDS_", "PROMETHEUS_"))}
    done = subprocess.run([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "--print-config",
                           "service.wsgi:app"], cwd=ROOT, env={**env, "TMPDIR": str(tmp_path), **environ},
                          capture_output=True, text=True, timeout=60, check=True)
    return dict((name.strip(), value.strip()) for name, _, value in
                (line.partition("=") for line in done.stdout.splitlines()) if name.strip())


def test_one_worker_a_core_two_at_least_each_with_threads_for_the_waits(tmp_path):
    settings = _resolved_settings(tmp_path)
    assert settings["worker_class"] == "service.api.worker.KeptAliveWorker"
    assert int(settings["workers"]) == max(2, os.cpu_count())
    assert int(settings["threads"]) == 8
    sized = _resolved_settings(tmp_path, AVH_CDS_WORKERS="3", AVH_CDS_THREADS="2")
    assert (sized["workers"], sized["threads"]) == ("3", "2")
    assert list(tmp_path.iterdir()) == []       # the metrics directory each made is gone
