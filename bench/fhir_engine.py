"""Benchmark: no-prefetch calls against a real FHIR engine under concurrency, to choose the fetch budget.

Starts the real FHIR R4 engine of tests/fhir_engine/ (Medplum's FHIR router, in memory; installed by
tests/fhir_engine/setup.sh) on 127.0.0.1, loads the fixtures into it, and serves the service under
gunicorn with the production config (gunicorn.conf.py) on 127.0.0.1. Then, at each concurrency, that
many clients post patient-view calls with NO prefetch (every key fetched from the engine), cycling
through the fixtures:

1. with an unlimited budget (30 s): how long a complete fetch takes (call latency p50/p90/p99/max);
2. with each budget of --budgets: how many answers are complete (the fixture's cards), partial
   (200 with the data-unavailable card) or 412, and that none carries a card the fixture does not
   expect.

    python -m bench.fhir_engine [--calls 64] [--concurrency 1,4,8,16] [--budgets 0.4,1.0,1.5,2.0] [--json out.json]
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

from service.config import PROJECT_ROOT
from service.fhir.fixtures import load_fixtures
from service.fhir.loader import FhirLoader, resources_in_load_order
from service.fhir.replay import InProcess, hook_request, prefetch_templates
from tests.fhir_engine_support import FhirEngine

from .http import SERVICE_APP, free_port, gunicorn, gunicorn_settings
from .sweep import SERVICE_PATH, make_app, percentile

UNLIMITED = 30.0
DATA_UNAVAILABLE = "data-unavailable"


def _bodies(fixtures, templates, engine_url: str, count: int) -> list[tuple]:
    """(fixture, JSON body) for `count` calls, cycling through the fixtures, each with its own hookInstance."""
    return [(f, json.dumps(hook_request(f, templates, fhir_server=engine_url)).encode())
            for f in (fixtures[i % len(fixtures)] for i in range(count))]


def _run(port: int, calls: list[tuple], concurrency: int) -> list[dict]:
    """Post every call, `concurrency` at a time (one keep-alive connection per client thread)."""
    local = threading.local()

    def post(call):
        fixture, body = call
        if not hasattr(local, "conn"):
            local.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        started = time.perf_counter()
        local.conn.request("POST", SERVICE_PATH, body, {"Content-Type": "application/json"})
        response = local.conn.getresponse()
        payload = json.loads(response.read() or b"null")
        elapsed = (time.perf_counter() - started) * 1000
        return {"ms": elapsed, "status": response.status, "verdict": _verdict(fixture, response.status, payload)}

    with ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(post, calls))


def _verdict(fixture, status: int, payload) -> str:
    if status == 412:
        return "412"
    if status != 200:
        return f"status {status}"
    topics = {c["source"]["topic"]["code"] for c in payload["cards"]}
    if topics - {DATA_UNAVAILABLE} - fixture.expected_topics:
        return "WRONG CARD"
    if topics == fixture.expected_topics:
        return "complete"
    return "partial" if DATA_UNAVAILABLE in topics else "WRONG CARD"   # a card missing and nothing said


def _summary(concurrency: int, results: list[dict]) -> dict:
    ms = sorted(r["ms"] for r in results)
    counts: dict[str, int] = {}
    for r in results:
        counts[r["verdict"]] = counts.get(r["verdict"], 0) + 1
    return {"concurrency": concurrency, "calls": len(results), "p50_ms": round(statistics.median(ms), 1),
            "p90_ms": round(percentile(ms, 90), 1), "p99_ms": round(percentile(ms, 99), 1),
            "max_ms": round(ms[-1], 1), "verdicts": counts}


class Settler:
    """Waits until the engine is idle again between runs (fetches that a short budget gave up on still run
    there): until its heaviest query, a patient's Conditions, takes at most twice its idle time."""

    def __init__(self, engine_url: str, patient_id: str):
        self.url = urlsplit(engine_url)
        self.path = f"{self.url.path}/Condition?patient={patient_id}"
        self.idle_ms = statistics.median(self._time() for _ in range(5))

    def _time(self) -> float:
        conn = http.client.HTTPConnection(self.url.hostname, self.url.port, timeout=60)
        started = time.perf_counter()
        conn.request("GET", self.path)
        conn.getresponse().read()
        conn.close()
        return (time.perf_counter() - started) * 1000

    def settle(self, limit_s: float = 30.0) -> None:
        deadline = time.monotonic() + limit_s
        while self._time() > 2 * self.idle_ms and time.monotonic() < deadline:
            time.sleep(0.2)


def _measure(engine_url: str, fixtures, templates, budget: float, concurrencies, calls: int, probe: bytes,
             settler: Settler) -> list:
    env = {"fhir_servers": engine_url, "fetch_budget_seconds": str(budget),
           "fetch_timeout_seconds": str(max(budget, 2.0)), "log_level": "WARNING"}
    port = free_port(18660, 18700)
    with gunicorn(SERVICE_APP, port, gunicorn_settings(None), probe, env=env):
        _run(port, _bodies(fixtures, templates, engine_url, 2 * len(fixtures)), 4)   # warm-up, not recorded
        rows = []
        for c in concurrencies:
            settler.settle()
            rows.append(_summary(c, _run(port, _bodies(fixtures, templates, engine_url, max(calls, 4 * c)), c)))
    return rows


def _print(title: str, rows: list[dict]) -> None:
    print(f"{title} (load average {os.getloadavg()[0]:.2f})")
    print(f"  {'c':>3} {'calls':>5} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8}  verdicts")
    for r in rows:
        verdicts = ", ".join(f"{k} {v}" for k, v in sorted(r["verdicts"].items()))
        print(f"  {r['concurrency']:>3} {r['calls']:>5} {r['p50_ms']:>8} {r['p90_ms']:>8} {r['p99_ms']:>8} "
              f"{r['max_ms']:>8}  {verdicts}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=64, help="calls per concurrency level (at least 4 x c)")
    parser.add_argument("--concurrency", default="1,4,8,16")
    parser.add_argument("--budgets", default="0.4,1.0,1.5,2.0", help="fetch budgets (s) to count answers under")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    budgets = [float(b) for b in args.budgets.split(",")]
    fixtures = load_fixtures(PROJECT_ROOT / "fhir_fixtures")
    results: dict = {"calls_per_level": args.calls, "budgets": {}}
    with FhirEngine() as engine:
        loader = FhirLoader(engine.base_url)
        report = loader.load(resources_in_load_order(fixtures))
        if report.problems:
            print("loading the fixtures failed:", *report.problems, sep="\n  ", file=sys.stderr)
            return 1
        templates = prefetch_templates(InProcess(make_app(log_level="WARNING")))
        # gunicorn counts as started once this answers 200: a call with its full prefetch, which fetches nothing.
        probe = json.dumps(hook_request(fixtures[0], templates)).encode()
        settler = Settler(engine.base_url, fixtures[0].patient_id)
        results["unlimited"] = _measure(engine.base_url, fixtures, templates, UNLIMITED, concurrencies, args.calls,
                                        probe, settler)
        _print(f"No prefetch, budget {UNLIMITED:g} s (how long a complete fetch takes):", results["unlimited"])
        for budget in budgets:
            rows = _measure(engine.base_url, fixtures, templates, budget, concurrencies, args.calls, probe, settler)
            results["budgets"][str(budget)] = rows
            _print(f"No prefetch, budget {budget:g} s:", rows)
    if args.json:
        with open(args.json, "w") as out:
            json.dump(results, out, indent=2)
    wrong = [r for rows in [results["unlimited"], *results["budgets"].values()] for r in rows
             if any(k not in ("complete", "partial", "412") for k in r["verdicts"])]
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
