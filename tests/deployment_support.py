"""What the deployment tests share: a small AVH patient as a fixture Bundle, the patient-view call
made from it, and a real HTTP FHIR server on 127.0.0.1 that keeps what is PUT into it."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests

from prometheus_client.parser import text_string_to_metric_families

from tests.ports import listening_socket, port_of
from tests.fhir_records import COMPRESSION, HEMANGIOMA_OF_SPINE, PRE_OP_CARDS, condition, fixture_bundle, patient

ROOT = Path(__file__).resolve().parent.parent


def avh_bundle(patient_id: str = "dep-avh-1", anchor: str = "2026-01-10") -> dict:
    """A pre-operative patient in the pathway (hemangioma + cord compression), as a fixture Bundle."""
    resources = [
        condition(COMPRESSION, onset=f"{anchor}T08:00:00Z", patient_id=patient_id, id=f"{patient_id}-cc"),
        # the Patient after the Condition that references it: the loader must reorder
        patient("1971-05-02", patient_id, gender="female"),
        condition(HEMANGIOMA_OF_SPINE, onset=anchor, patient_id=patient_id, id=f"{patient_id}-vh"),
    ]
    return fixture_bundle(resources, PRE_OP_CARDS, last_updated=f"{anchor}T00:00:00Z")


def patient_view_request(bundle: dict) -> dict:
    resources = [e["resource"] for e in bundle["entry"]]
    patient = next(r for r in resources if r["resourceType"] == "Patient")
    conditions = [r for r in resources if r["resourceType"] == "Condition"]
    empty = {"resourceType": "Bundle", "type": "searchset", "entry": []}
    return {"hook": "patient-view", "hookInstance": str(uuid.uuid4()),
            "context": {"patientId": patient["id"], "userId": "Practitioner/dep-1"},
            "prefetch": {"patient": patient,
                         "conditions": {"resourceType": "Bundle", "type": "searchset",
                                        "entry": [{"resource": c} for c in conditions]},
                         **{k: empty for k in ("observations", "procedures", "medicationRequests",
                                               "serviceRequests", "diagnosticReports",
                                               "medicationAdministrations")}}}


def without_uuids(value):
    """A CDS response with every `uuid` left out: two instances mint their own for the same cards."""
    if isinstance(value, dict):
        return {k: without_uuids(v) for k, v in value.items() if k != "uuid"}
    if isinstance(value, list):
        return [without_uuids(v) for v in value]
    return value


class RecordingFhirServer:
    """A real HTTP FHIR server on 127.0.0.1: PUT [type]/[id] stores, GET [type]/[id] reads back.

    `failures_before_success` makes the first PUTs answer 503, as a FHIR server still starting does;
    PUTs to the paths in `refuse` answer 422 with an OperationOutcome, as a validating server does."""

    def __init__(self, failures_before_success: int = 0, refuse: frozenset = frozenset()):
        self.stored, self.puts, self.refuse = {}, [], refuse
        self.failures_left = failures_before_success
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _answer(self, status: int, body: dict | None = None):
                data = json.dumps(body).encode() if body is not None else b""
                self.send_response(status)
                self.send_header("Content-Type", "application/fhir+json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                path = self.path.removeprefix("/fhir/")
                if "?" in path:   # a search: every stored resource of the type (parameters ignored)
                    rtype = path.split("?", 1)[0]
                    return self._answer(200, {"resourceType": "Bundle", "type": "searchset", "entry": [
                        {"resource": r} for r in server.stored.values() if r["resourceType"] == rtype]})
                if path == "metadata":
                    return self._answer(200, {"resourceType": "CapabilityStatement", "status": "active"})
                if path in server.stored:
                    return self._answer(200, {**server.stored[path], "meta": {"versionId": "1"}})
                return self._answer(404, {"resourceType": "OperationOutcome",
                                          "issue": [{"severity": "error", "code": "not-found"}]})

            def do_PUT(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                path = self.path.removeprefix("/fhir/")
                server.puts.append((path, self.headers["Content-Type"]))
                if server.failures_left > 0:
                    server.failures_left -= 1
                    return self._answer(503)
                if path in server.refuse:
                    return self._answer(422, {"resourceType": "OperationOutcome",
                                              "issue": [{"severity": "error", "code": "processing"}]})
                created = path not in server.stored
                server.stored[path] = body
                return self._answer(201 if created else 200, body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)    # a port the kernel picks
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/fhir"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def sample(metrics_text: str, name: str, **labels) -> float:
    """One sample's value in a Prometheus text exposition (0 when the series does not exist yet)."""
    for family in text_string_to_metric_families(metrics_text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


class Gunicorn:
    """One gunicorn master started as production starts it (gunicorn.conf.py, service.wsgi:app), with its
    output in a file. It listens on a port the kernel picked: the test opens the listening socket and gunicorn
    inherits it (AVH_CDS_BIND=fd://N), so two suites never collide and no other process can take the port."""

    def __init__(self, log_path: Path, config: str = "gunicorn.conf.py", **env):
        self.log_path = log_path
        listener = listening_socket()
        self.base = f"http://127.0.0.1:{port_of(listener)}"
        environ = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
        # AVH_CDS_AUTH=off unless the test says otherwise: most calls here carry no JWT.
        environ.update({"AVH_CDS_BIND": f"fd://{listener.fileno()}", "AVH_CDS_WORKERS": "2", "AVH_CDS_THREADS": "2",
                        "AVH_CDS_AUTH": "off", "AVH_CDS_SQLITE_PATH": str(log_path.with_suffix(".sqlite3")),
                        **env})
        self.log = open(log_path, "w")
        with listener:      # gunicorn holds its own copy; this one closes, so a stopped server refuses calls
            self.process = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", config,
                                             "service.wsgi:app"], cwd=ROOT, env=environ, pass_fds=(listener.fileno(),),
                                            stdout=self.log, stderr=subprocess.STDOUT)
        try:
            self._wait_until_up()
        except BaseException:   # never leave a server running behind a failed start
            self.stop()
            raise

    def _wait_until_up(self, seconds: float = 30.0) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"gunicorn exited with {self.process.returncode}:\n{self.output()}")
            try:
                if requests.get(f"{self.base}/healthz", timeout=2).status_code == 200:
                    return
            except requests.RequestException:   # not listening yet, or a worker still booting
                time.sleep(0.2)
        raise AssertionError(f"gunicorn did not answer /healthz within {seconds} s:\n{self.output()}")

    def output(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text()

    def access_lines(self) -> list[dict]:
        """The app's JSON access lines (event cds_call), in the order written."""
        lines = (json.loads(line) for line in self.output().splitlines() if line.startswith("{"))
        return [line for line in lines if line.get("event") == "cds_call"]

    def stop(self) -> int:
        """SIGTERM, as an orchestrator stops a container: gunicorn finishes calls in flight, then exits."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        return self.process.returncode
