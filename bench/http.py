"""Throughput and memory over HTTP: the service and the trivial baseline under the same gunicorn settings.

Servers bind 127.0.0.1 only. The load generator is wrk with one thread (bench/wrk_post.lua POSTs the body):
an event loop in C, so on a 2-core machine it leaves the cores to the server instead of starving it.
"""
from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

from .sweep import SERVICE_PATH, bench_settings_env

ROOT = Path(__file__).resolve().parent.parent
LUA = Path(__file__).with_name("wrk_post.lua")
# The production entry point when the repo has one (service/wsgi.py), else the app factory.
SERVICE_APP = "service.wsgi:app" if (ROOT / "service" / "wsgi.py").exists() else "service:create_app()"
TRIVIAL_APP = "bench.trivial:create_app()"
# Used when the repository has no gunicorn.conf.py: the production shape (2 x cores + 1 gthread
# workers of 4 threads, access log on), stated explicitly.
DEFAULT_GUNICORN = ["--workers", str(2 * (os.cpu_count() or 1) + 1), "--worker-class", "gthread", "--threads", "4",
                    "--access-logfile", "-"]


def gunicorn_settings(config: str | None) -> list[str]:
    """The gunicorn arguments both apps run with: the repo's config file when there is one."""
    path = Path(config) if config else ROOT / "gunicorn.conf.py"
    if path.exists():
        return ["--config", str(path)]
    if config:
        raise FileNotFoundError(f"gunicorn config {config} not found")
    return list(DEFAULT_GUNICORN)


def free_port(low: int, high: int) -> int:
    for port in range(low, high):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise RuntimeError(f"no free port in {low}-{high}")


def _post(port: int, body: bytes, conn: http.client.HTTPConnection | None = None, headers: dict | None = None) -> int:
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("POST", SERVICE_PATH, body, {"Content-Type": "application/json", **(headers or {})})
    response = conn.getresponse()
    response.read()
    return response.status


@contextmanager
def gunicorn(app: str, port: int, settings: list[str], body: bytes, extra: list[str] = (), env: dict | None = None,
             headers: dict | None = None):
    """A gunicorn master serving `app` on 127.0.0.1:port; yields its pid once it answers the body with 200
    (sent with `headers`, e.g. a token, on the first attempt the server accepts)."""
    env = {**os.environ, **bench_settings_env(**(env or {})), "PYTHONPATH": str(ROOT)}
    log = tempfile.TemporaryFile()
    cmd = [sys.executable, "-m", "gunicorn", *settings, *extra, "--bind", f"127.0.0.1:{port}", app]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                status = _post(port, body, headers=headers)
                if status != 200:
                    raise RuntimeError(f"{app} answered {status} on the benchmark body")
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise RuntimeError(f"gunicorn {app} did not start: {log.read()[-2000:].decode(errors='replace')}")
                time.sleep(0.2)
        yield proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def worker_pids(master: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(master)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def wrk(port: int, body_file: str, connections: int, seconds: float) -> dict:
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (apt-get install -y wrk)")
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", "-s", str(LUA),
           f"http://127.0.0.1:{port}{SERVICE_PATH}"]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "BENCH_BODY": body_file},
                         timeout=seconds + 30).stdout
    line = next((l for l in out.splitlines() if l.startswith("BENCH_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk gave no result: {out[-1000:]}")
    raw = json.loads(line[len("BENCH_JSON "):])
    return {"concurrency": connections, "requests": raw["requests"],
            "requests_per_s": round(raw["requests"] / (raw["duration_us"] / 1e6), 1),
            "p50_ms": raw["p50_us"] / 1000, "p99_ms": raw["p99_us"] / 1000, "max_ms": raw["max_us"] / 1000,
            "errors": raw["socket_errors"] + raw["non_2xx"]}


# (name, WSGI app, service settings): the service as deployed, the same with its model cache off
# (every chart seen for the first time), and the decode-only baseline.
APPS = (("service", SERVICE_APP, {}), ("service_cold", SERVICE_APP, {"model_cache_size": "0"}),
        ("trivial", TRIVIAL_APP, {}))


def throughput(body: bytes, settings: list[str], concurrencies=(1, 4, 16), seconds: float = 5, rounds: int = 3,
               ports=(18600, 18650)) -> dict:
    """Requests/s and latency of each app at each concurrency.

    All servers run at once (an idle one costs nothing) and take turns in `rounds` rounds, in a rotating
    order, so a burst of load from elsewhere on the machine hits every app alike. Each figure is the
    median over rounds; `share_of_trivial` is the median of the per-round ratios.
    """
    with tempfile.NamedTemporaryFile(suffix=".json") as f, ExitStack() as servers:
        f.write(body)
        f.flush()
        ports_of = {}
        for name, app, env in APPS:
            ports_of[name] = port = free_port(*ports)
            servers.enter_context(gunicorn(app, port, settings, body, env=env))
            wrk(port, f.name, max(concurrencies), min(2.0, seconds))         # warm-up, not recorded
        runs = {name: {c: [] for c in concurrencies} for name, _, _ in APPS}
        for c in concurrencies:
            for r in range(rounds):
                for name, _, _ in APPS[r % len(APPS):] + APPS[:r % len(APPS)]:
                    runs[name][c].append(wrk(ports_of[name], f.name, c, seconds))
    result = {name: [_summary(c, runs[name][c]) for c in concurrencies] for name in runs}
    for name in ("service", "service_cold"):
        for summary, c in zip(result[name], concurrencies):
            summary["share_of_trivial"] = round(statistics.median(
                mine["requests_per_s"] / base["requests_per_s"] for mine, base in zip(runs[name][c], runs["trivial"][c])), 3)
            # The trivial endpoint's rounds can differ twofold (at c=4 its few connections sometimes all land
            # on one worker): its best round is what it can do, and the share against it is the robust one.
            summary["share_of_trivial_best"] = round(
                summary["requests_per_s"] / max(r["requests_per_s"] for r in runs["trivial"][c]), 3)
    return result


def _summary(concurrency: int, rounds: list[dict]) -> dict:
    median = lambda key: statistics.median(r[key] for r in rounds)   # noqa: E731
    return {"concurrency": concurrency, "rounds": len(rounds), "requests": sum(r["requests"] for r in rounds),
            "requests_per_s": round(median("requests_per_s"), 1), "p50_ms": median("p50_ms"),
            "p99_ms": median("p99_ms"), "worst_round_p99_ms": max(r["p99_ms"] for r in rounds),
            "errors": sum(r["errors"] for r in rounds), "per_round": rounds}


def memory(bodies: list[bytes], settings: list[str], requests: int = 10_000, checkpoints=(1, 1000, 5000, 10_000),
           ports=(18600, 18650)) -> dict:
    """RSS of one worker over `requests` requests cycling through `bodies` (distinct patients, so the
    model cache fills to its bound and then evicts). The service runs with --workers 1 here, so that
    worker gets every request."""
    port = free_port(*ports)
    samples = {}
    with gunicorn(SERVICE_APP, port, settings, bodies[0], extra=["--workers", "1"]) as master:
        [worker] = worker_pids(master)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        # The start-up probe already sent request 1.
        samples[1] = rss_kib(worker)
        for i in range(2, requests + 1):
            status = _post(port, bodies[(i - 1) % len(bodies)], conn)
            if status != 200:
                raise RuntimeError(f"request {i} answered {status}")
            if i in checkpoints:
                samples[i] = rss_kib(worker)
        conn.close()
    first, last = sorted(checkpoints)[1], max(checkpoints)
    return {"requests": requests, "distinct_patients": len(bodies), "rss_kib": {str(k): v for k, v in samples.items()},
            "growth_fraction": round((samples[last] - samples[first]) / samples[first], 4),
            "between": [first, last]}
