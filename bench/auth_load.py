"""`python -m bench.auth_load`: the service as production runs it, AVH_CDS_AUTH=required, over HTTP.

wrk cannot send a fresh signed JWT per request (every jti is single-use), so this load generator is
Python: it signs all the tokens it will need before the clock starts (a bench issuer with a generated
ES384 key, trusted through an issuers file), then keeps `concurrency` keep-alive connections busy, each
request with the next unused token. A Python client takes CPU from the server on a 2-core machine, so
its requests/s understate what the server can do; the figure that is fair is the server's CPU per call
(user + system time of the gunicorn workers, from /proc, over the requests served). The same client
drives the service with auth off and the trivial endpoint, for comparison.

Replay cache: AVH_CDS_REPLAY_DB, a SQLite file shared by the workers (the documented one-host setting),
or Redis with --redis-url (AVH_CDS_REDIS_URL, the several-hosts setting).
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
import uuid
from pathlib import Path

import jwt
import orjson
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from . import http as bench_http
from .patients import FHIR_SERVER, patient_view_request
from .sweep import SERVICE_PATH, _scratch_dir, percentile

ISS = "https://ehr.bench.invalid"
TYPICAL_N = 100


def issuer_file(key: ec.EllipticCurvePrivateKey) -> Path:
    jwk = {**ECAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": "bench-1", "use": "sig"}
    path = _scratch_dir() / "issuers.json"
    path.write_text(json.dumps({"issuers": [{"iss": ISS, "jwks": {"keys": [jwk]}, "fhir_servers": [FHIR_SERVER]}]}))
    return path


def sign_tokens(key, audience: str, count: int) -> list[str]:
    now = int(time.time())
    return [jwt.encode({"iss": ISS, "aud": audience, "iat": now, "exp": now + 600, "jti": str(uuid.uuid4())},
                       key, algorithm="ES384", headers={"kid": "bench-1", "typ": "JWT"}) for _ in range(count)]


def workers_cpu_seconds(master: int) -> float:
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in bench_http.worker_pids(master):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])          # utime, stime
    return total / ticks


def load(port: int, body: bytes, tokens: list[str] | None, requests: int, concurrency: int) -> dict:
    """`requests` POSTs over `concurrency` keep-alive connections; latency of each, statuses counted."""
    lock = threading.Lock()
    next_index = iter(range(requests))
    latencies, statuses = [], {}

    def client():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while True:
            with lock:
                i = next(next_index, None)
            if i is None:
                break
            headers = {"Content-Type": "application/json"}
            if tokens is not None:
                headers["Authorization"] = f"Bearer {tokens[i]}"
            started = time.perf_counter()
            conn.request("POST", SERVICE_PATH, body, headers)
            response = conn.getresponse()
            response.read()
            elapsed = time.perf_counter() - started
            with lock:
                latencies.append(elapsed)
                statuses[response.status] = statuses.get(response.status, 0) + 1
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    duration = time.perf_counter() - started
    return {"requests": requests, "requests_per_s": round(requests / duration, 1),
            "p50_ms": round(statistics.median(latencies) * 1000, 2),
            "p99_ms": round(percentile(latencies, 99) * 1000, 2), "statuses": statuses}


def run(ports: tuple[int, int], requests: int, concurrency: int, settings: list[str], redis_url: str = "") -> dict:
    body = orjson.dumps(patient_view_request(TYPICAL_N))
    key = ec.generate_private_key(ec.SECP384R1())
    results = {}
    for name, app, auth in (("service_auth_required", bench_http.SERVICE_APP, True),
                            ("service_auth_off", bench_http.SERVICE_APP, False),
                            ("trivial", bench_http.TRIVIAL_APP, False)):
        port = bench_http.free_port(*ports)
        env = {}
        tokens = None
        if auth:
            env = {"auth": "required", "issuers_file": str(issuer_file(key)), "public_url": f"http://127.0.0.1:{port}",
                   **({"redis_url": redis_url} if redis_url else {"replay_db": str(_scratch_dir() / "replay.sqlite3")})}
            # One token for the start-up probe of bench.http.gunicorn, then one per request (warm-up included).
            tokens = sign_tokens(key, f"http://127.0.0.1:{port}{SERVICE_PATH}", 2 * requests + 1)
        with bench_http.gunicorn(app, port, settings, body, env=env,
                                 headers={"Authorization": f"Bearer {tokens.pop()}"} if tokens else None) as master:
            load(port, body, tokens[requests:] if tokens else None, min(requests, 500), concurrency)   # warm-up
            cpu_before = workers_cpu_seconds(master)
            result = load(port, body, tokens[:requests] if tokens else None, requests, concurrency)
            result["server_cpu_ms_per_call"] = round((workers_cpu_seconds(master) - cpu_before) / requests * 1000, 3)
        results[name] = result
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.auth_load", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--ports", type=lambda s: tuple(int(x) for x in s.split("-")), default=(18600, 18690))
    parser.add_argument("--gunicorn-config", help="default: ./gunicorn.conf.py")
    parser.add_argument("--redis-url", default="", help="replay cache in Redis (e.g. redis://127.0.0.1:6379/3) "
                                                        "instead of a SQLite file")
    args = parser.parse_args(argv)
    results = run(args.ports, args.requests, args.concurrency, bench_http.gunicorn_settings(args.gunicorn_config),
                  args.redis_url)
    print(f"Python load generator, concurrency {args.concurrency}, {args.requests} requests per app, typical prefetch, "
          f"replay cache {'Redis' if args.redis_url else 'SQLite file'}")
    print(f"{'app':>22} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'server CPU ms/call':>19}  statuses")
    for name, r in results.items():
        print(f"{name:>22} {r['requests_per_s']:>8.1f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} "
              f"{r['server_cpu_ms_per_call']:>19.3f}  {r['statuses']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
