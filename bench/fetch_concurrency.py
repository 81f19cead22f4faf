"""Benchmark: the fetch phase with six queries, each delayed 100 ms by the FHIR endpoint, vs one query.

Starts avh-cds's fixture FHIR endpoint on 127.0.0.1 (werkzeug, threaded) over one generated patient,
with a FaultInjector delaying every FHIR request by --delay seconds, then times
PrefetchResolver.resolve (the fetch phase only: no card logic) for one query, for the service's six
search queries, and for all seven keys (with the Patient read). Prints medians over --runs.

    python -m bench.fetch_concurrency [--port 18220] [--runs 20] [--delay 0.1]
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path

from werkzeug.serving import make_server

from service import create_app
from service.config import Settings
from service.fhir.faults import Fault, FaultInjector
from service.fhir.prefetch import PrefetchResolver

SNOMED = "http://snomed.info/sct"
AUTH_OFF = {"AVH_CDS_AUTH": "off"}   # the fixture endpoint needs no JWT; the service is not called here


def _patient_bundle(pid: str) -> dict:
    def cond(cid: str, code: str) -> dict:
        return {"resourceType": "Condition", "id": cid, "subject": {"reference": f"Patient/{pid}"},
                "code": {"coding": [{"system": SNOMED, "code": code}]}}
    resources = [{"resourceType": "Patient", "id": pid, "birthDate": "1970-01-01"},
                 cond("c1", "448232005"), cond("c2", "71286001")]
    return {"resourceType": "Bundle", "type": "collection",
            "meta": {"lastUpdated": dt.date.today().isoformat()},
            "entry": [{"resource": r} for r in resources]}


def _median_ms(resolver: PrefetchResolver, templates: dict, request: dict, runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        result = resolver.resolve(templates, request)
        times.append((time.perf_counter() - started) * 1000)
        assert not result.unavailable, result.unavailable
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=18220)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--delay", type=float, default=0.1)
    args = parser.parse_args()
    logging.disable(logging.INFO)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "bench.json").write_text(json.dumps(_patient_bundle("bench-1")))
        settings = Settings.from_env(AUTH_OFF, fixture_fhir=True, fixtures_dir=Path(tmp), fetch_budget_seconds=5.0,
                                     fetch_timeout_seconds=5.0, log_level="WARNING")
        app = create_app(settings)
        app.wsgi_app = FaultInjector(app.wsgi_app, [Fault(r"^/fhir/", delay=args.delay)])
        server = make_server("127.0.0.1", args.port, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            templates = app.extensions["avh"].registry.get("avh-patient-view").prefetch
            searches = {k: v for k, v in templates.items() if "?" in v}
            one = dict(list(searches.items())[:1])
            resolver = PrefetchResolver.from_settings(settings)
            request = {"hook": "patient-view", "hookInstance": str(uuid.uuid4()),
                       "fhirServer": f"http://127.0.0.1:{args.port}/fhir",
                       "context": {"patientId": "bench-1", "userId": "Practitioner/b"}}
            _median_ms(resolver, templates, request, 2)   # warm the connection pool and the threads
            single = _median_ms(resolver, one, request, args.runs)
            six = _median_ms(resolver, searches, request, args.runs)
            seven = _median_ms(resolver, templates, request, args.runs)
        finally:
            server.shutdown()
            thread.join(5)
    print(f"fetch phase, each FHIR request delayed {args.delay * 1000:.0f} ms, median of {args.runs} runs "
          f"(workers={settings.fetch_workers}):")
    print(f"  1 query:                  {single:7.1f} ms")
    print(f"  {len(searches)} queries (searches):     {six:7.1f} ms   = {six / single:.2f} x one query")
    print(f"  {len(templates)} keys (+ Patient read):   {seven:7.1f} ms   = {seven / single:.2f} x one query")


if __name__ == "__main__":
    main()
