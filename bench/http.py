"""CPU per request, throughput and memory over HTTP: the service (a chart seen before, a chart seen for the first
time, authenticated calls), the trivial endpoint and the peer-style walk, all under the same gunicorn settings.

Servers bind 127.0.0.1 only. The load generator is bench/loadgen.py (Python, one event loop).
"""
from __future__ import annotations

import http.client
import itertools
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import orjson

from . import auth, loadgen
from .patients import PATIENT_ID, patient_view_request
from .sweep import SERVICE_PATH, _scratch_dir, bench_settings_env, percentile

ROOT = Path(__file__).resolve().parent.parent
# The production entry point when the repo has one (service/wsgi.py), else the app factory.
SERVICE_APP = "service.wsgi:app" if (ROOT / "service" / "wsgi.py").exists() else "service:create_app()"
TRIVIAL_APP = "bench.trivial:create_app()"
PEER_APP = "bench.peer:create_app()"
# The replay cache of authenticated calls: Redis as in production; database 11 is the benchmark's own.
DEFAULT_REDIS = "redis://127.0.0.1:6379/11"
# Used when the repository has no gunicorn.conf.py: the production shape (a gthread worker of 8 threads
# per core, two at least; access log on), stated explicitly.
DEFAULT_GUNICORN = ["--workers", str(max(2, os.cpu_count() or 1)), "--worker-class", "gthread", "--threads", "8",
                    "--access-logfile", "-"]


def gunicorn_settings(config: str | None) -> list[str]:
    """The gunicorn arguments both apps run with: the repo's config file when there is one."""
    path = Path(config) if config else ROOT / "gunicorn.conf.py"
    if path.exists():
        return ["--config", str(path)]
    if config:
        raise FileNotFoundError(f"gunicorn config {config} not found")
    return list(DEFAULT_GUNICORN)


class PortTaken(RuntimeError):
    """Another process bound the port between our check and gunicorn's bind (e.g. another benchmark)."""


def kernel_port() -> int:
    """A port of 127.0.0.1 free now, as the kernel picks them (outside the ranges runs of the benchmark share)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_port(low: int, high: int) -> int:
    """A port of the range nothing listens on, tried from a random place (fewer clashes with a parallel run)."""
    start = random.randrange(low, high)
    for port in (*range(start, high), *range(low, start)):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise RuntimeError(f"no free port in {low}-{high}")


def _request(port: int, method: str, path: str, body: bytes | None = None,
             conn: http.client.HTTPConnection | None = None, headers: dict | None = None, timeout: float = 10) -> int:
    """One request's status; on a connection of its own (closed after) unless `conn` is given."""
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body, headers or {})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        if own:
            conn.close()


def _post(port: int, body: bytes, conn: http.client.HTTPConnection | None = None, headers: dict | None = None,
          timeout: float = 10) -> int:
    return _request(port, "POST", SERVICE_PATH, body, conn, {"Content-Type": "application/json", **(headers or {})},
                    timeout)


@contextmanager
def gunicorn(app: str, port: int, settings: list[str], body: bytes, extra: list[str] = (), env: dict | None = None,
             headers=None, listener: socket.socket | None = None):
    """A gunicorn master serving `app` on 127.0.0.1:port; yields its pid once it answers the body with 200.

    `headers()` gives each attempt's headers (e.g. a fresh token: an attempt that timed out may have been
    answered by the server, and its token may then not be used again). `listener`: a socket already listening on
    `port`, which gunicorn inherits (`fd://N`): no other process can take the port meanwhile."""
    env = {**os.environ, **bench_settings_env(**(env or {})), "PYTHONPATH": str(ROOT)}
    log = tempfile.TemporaryFile()
    bind = f"fd://{listener.fileno()}" if listener else f"127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "gunicorn", *settings, *extra, "--bind", bind, app]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                            pass_fds=(listener.fileno(),) if listener else ())
    try:
        deadline = time.monotonic() + 30
        ready = headers is None
        while True:
            try:
                if not ready:
                    # Tokens are signed only once a worker answers (any status: the benchmark's other apps have no
                    # /readyz): a Redis the service meets for the first time (a new machine) starts remembering when
                    # the first worker boots, and refuses tokens issued before. Until then the GET raises OSError.
                    _request(port, "GET", "/readyz", timeout=30)
                    ready = True
                status = _post(port, body, headers=headers() if headers else None, timeout=30)
                if not loadgen.listens(port, proc.pid):
                    raise PortTaken(f"127.0.0.1:{port} answers, but not as our gunicorn {app}")
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


def serve(servers: ExitStack, app: str, settings: list[str], ports: tuple[int, int], setup, extra=()) -> tuple[int, int]:
    """Start gunicorn serving `app` on a free port of `ports` inside `servers`: (port, master pid).
    `setup(port)` gives (env, probe body, probe headers function or None). A port another process took first is given up for
    another, twice at most."""
    for attempt in range(3):
        port = free_port(*ports)
        env, body, headers = setup(port)
        try:
            return port, servers.enter_context(gunicorn(app, port, settings, body, extra, env, headers))
        except PortTaken:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def worker_pids(master: int) -> list[int]:
    return sorted(int(p) for p in Path(f"/proc/{master}/task/{master}/children").read_text().split())


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


# What each app is sent. "same": the typical body every time (the chart is seen again: the service answers
# from its caches). "distinct": the typical body with a new patient id each request, so every relevant
# resource and the chart are new to the worker (the caches on, as deployed, filling and evicting).
# "auth": the same body, each request with its own signed token (AVH_CDS_AUTH=required, replay cache in Redis).
@dataclass(frozen=True)
class App:
    name: str
    wsgi: str
    sends: str = "same"


APPS = (App("first_seen", SERVICE_APP, "distinct"), App("auth", SERVICE_APP, "auth"), App("warm", SERVICE_APP),
        App("trivial", TRIVIAL_APP), App("peer", PEER_APP))
FIRST_SEEN_ID = "first-seen-00000000"


def _wait_for_workers(master: int, timeout: float = 30) -> list[int]:
    """The workers once their number has stopped changing (gunicorn forks them one by one)."""
    seen, stable_since, deadline = [], time.monotonic(), time.monotonic() + timeout
    while not seen or time.monotonic() - stable_since < 0.5:
        now = worker_pids(master)
        if now != seen:
            seen, stable_since = now, time.monotonic()
        if time.monotonic() > deadline:
            raise RuntimeError(f"gunicorn {master}: no settled set of workers within {timeout} s")
        time.sleep(0.05)
    return seen


class Client:
    """What one app is sent: the request of each index, and for "auth" the tokens, signed before a round starts and
    handed out in order over its slices (`used`: how many the slices before took)."""

    def __init__(self, app: App, port: int, typical_n: int, key=None):
        self.app, self.port = app, port
        patient = FIRST_SEEN_ID if app.sends == "distinct" else PATIENT_ID
        self.body = orjson.dumps(patient_view_request(typical_n, patient_id=patient))
        self.head = loadgen.request_head(port, SERVICE_PATH, len(self.body))
        self.key, self.tokens, self.used, self.charts = key, [], 0, itertools.count(1)
        self.rate = 500.0           # requests/s, the most a slice saw: how many tokens the next ones need
        self.audience = f"http://127.0.0.1:{port}{SERVICE_PATH}"

    def sign(self, count: int) -> None:
        if self.app.sends == "auth":
            self.tokens, self.used = auth.sign_tokens(self.key, self.audience, count), 0

    def top_up(self, seconds: float, round_seconds: float) -> None:
        """Before a slice of `seconds`: unless twice the fastest rate seen has tokens left, tokens for a round of
        `round_seconds` at that rate, signed anew (a slice that ran out sent fewer requests, or none, in less time
        than the other apps got)."""
        if self.app.sends == "auth" and self.limit() < int(2 * self.rate * seconds) + 50:
            self.sign(int(self.rate * round_seconds * 1.3) + int(2 * self.rate * seconds) + 50)

    def seen(self, done: dict) -> None:
        """A slice's rate: the next tokens are signed for the fastest seen (c = 4 after c = 1)."""
        if done["seconds"]:
            self.rate = max(self.rate, done["requests"] / done["seconds"])

    def probe_headers(self) -> dict | None:
        if self.app.sends != "auth":
            return None
        self.sign(1)
        return {"Authorization": f"Bearer {self.tokens[0]}"}

    def limit(self) -> int | None:
        return len(self.tokens) - self.used if self.app.sends == "auth" else None

    def request(self, i: int) -> tuple[bytes, bytes]:
        """Request i of the current slice."""
        if self.app.sends == "auth":
            return (loadgen.request_head(self.port, SERVICE_PATH, len(self.body),
                                         {"Authorization": f"Bearer {self.tokens[self.used + i]}"}), self.body)
        if self.app.sends == "distinct":
            chart = f"first-seen-{next(self.charts):08d}".encode()
            return self.head, self.body.replace(FIRST_SEEN_ID.encode(), chart)
        return self.head, self.body


def slice_plan(names: list[str], rounds: int, seconds: float, slice_seconds: float) -> tuple[int, list[list]]:
    """(slices per app and round, each round's slices in order as (app, window)).

    Each app gets `seconds` a round, cut in an even number of slices of about `slice_seconds`, run in mirrored
    passes: A B C D E, E D C B A, A B ... Every app's two slices of a window (one pass and its mirror) are centred
    on the same instant, so a machine whose speed drifts linearly over the window costs every app alike, and the
    ratio of two apps' CPU per request in one window compares the same moments. The order starts one app later
    each round. `slice_seconds >= seconds` is one slice an app a round, the window the round: apps one after the
    other (the method before interleaving, which a drifting machine biases; kept to compare them).
    """
    count = 1 if slice_seconds >= seconds else max(2, 2 * round(seconds / slice_seconds / 2))
    plan = []
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        plan.append([(name, i // 2) for i in range(count) for name in (order if i % 2 == 0 else order[::-1])])
    return count, plan


def measure(names: list[str], rounds: int, seconds: float, slice_seconds: float, slicer) -> dict[str, list[list[dict]]]:
    """Run the slice plan: {app: [each round's slices, in order]}. `slicer.round()` is a context holding a round's
    connections, `slicer.slice(app, seconds)` one slice's {"requests", "cpu_seconds", ...}."""
    count, plan = slice_plan(names, rounds, seconds, slice_seconds)
    slices = {name: [] for name in names}
    for order in plan:
        with slicer.round():
            done = {name: [] for name in names}
            for name, window in order:
                one = slicer.slice(name, seconds / count)     # the slicer may charge it more CPU later: not a copy
                one["window"] = window
                done[name].append(one)
        for name in names:
            slices[name].append(done[name])
    return slices


def windows(rounds: list[list[dict]]) -> list[float]:
    """CPU ms per request of each window of each round, in order (its slices' CPU over their requests)."""
    out = []
    for slices in rounds:
        for w in sorted({s["window"] for s in slices}):
            mine = [s for s in slices if s["window"] == w]
            out.append(sum(s["cpu_seconds"] for s in mine) / sum(s["requests"] for s in mine) * 1000)
    return out


def paired(mine: list[list[dict]], theirs: list[list[dict]], difference: bool = False) -> list[float]:
    """One app's CPU per request against another's window by window: ratios (or differences, ms)."""
    return [a - b if difference else a / b for a, b in zip(windows(mine), windows(theirs))]


def spread(values: list[float], digits: int = 3) -> dict:
    """Median, quartiles and range of paired comparisons."""
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else values * 3
    return {"median": round(statistics.median(values), digits), "quartiles": [round(q1, digits), round(q3, digits)],
            "range": [round(min(values), digits), round(max(values), digits)], "pairs": len(values)}


class Slicer:
    """The apps' servers as slices run on them: each app's `connections` kept alive for a round (connected, tokens
    signed, before its first slice), the CPU its workers spent read before each slice. A slice owns its workers'
    CPU up to the app's next slice (`owed`): what a server does after answering (the service's feedback store
    flushing the cards a slice issued, every 0.5 s) happens while other apps' slices run, and read around the slice
    alone it was counted nowhere; the connecting is not counted. `rounds` holds, per round and app, where its
    connections were, how often they were opened again and its CPU by both sources."""

    def __init__(self, clients: dict[str, Client], workers: dict[str, list[int]], connections: int, even: bool,
                 seconds: float):
        self.clients, self.workers, self.connections, self.even, self.seconds = clients, workers, connections, even, seconds
        self.sockets, self.rounds = {}, []
        self.owed: dict[str, tuple[dict[int, float], dict | None]] = {}     # app: (CPU read last, the slice owning it)

    def _connect(self, name: str) -> None:
        self.sockets[name], self.rounds[-1][name]["owners"] = loadgen.connect(
            self.clients[name].port, self.connections, self.workers[name], self.even)

    def _settle(self, name: str) -> dict[int, float]:
        """Reads `name`'s workers' CPU, and charges what they spent since the last reading to the slice owning it."""
        now = loadgen.worker_cpu_seconds(self.workers[name])
        before, owner = self.owed.get(name, (now, None))
        if owner is not None:
            for pid, cpu in now.items():
                owner["worker_cpu"][pid] += cpu - before[pid]
                owner["cpu_seconds"] += cpu - before[pid]
        self.owed[name] = (now, owner)
        return now

    def _cpu(self, name: str) -> tuple[float, float]:
        return (sum(loadgen.worker_cpu_seconds(self.workers[name]).values()),
                sum(loadgen.worker_stat_seconds(self.workers[name]).values()))

    @contextmanager
    def round(self):
        self.rounds.append({name: {"reconnects": 0, "requests": 0, "seconds": 0.0} for name in self.clients})
        for name, client in self.clients.items():
            if client.app.sends == "auth":
                client.sign(int(client.rate * self.seconds * 1.3) + 50)
            self._settle(name)          # the last round's last slice's, up to the connecting
            self._connect(name)
            self.rounds[-1][name]["cpu"] = self._cpu(name)
            self.owed[name] = (loadgen.worker_cpu_seconds(self.workers[name]), self.owed[name][1])
        try:
            yield
            for name, info in self.rounds[-1].items():      # the round's CPU by the two sources
                self._settle(name)
                info["cpu"] = tuple(after - before for after, before in zip(self._cpu(name), info["cpu"]))
        finally:
            for sock in (s for socks in self.sockets.values() for s in socks):
                sock.close()
            self.sockets.clear()

    def slice(self, name: str, seconds: float) -> dict:
        """One slice of `name`'s load on its kept connections: requests, CPU of its workers, latencies."""
        client, workers = self.clients[name], self.workers[name]
        cpu_before = self._settle(name)
        if any(loadgen.closed(sock) for sock in self.sockets[name]):     # idle longer than the server keeps them
            for sock in self.sockets[name]:
                sock.close()
            self._connect(name)
            self.rounds[-1][name]["reconnects"] += 1
            cpu_before = loadgen.worker_cpu_seconds(workers)
        client.top_up(seconds, self.seconds)
        client_before = time.process_time()
        owners = self.rounds[-1][name]["owners"]
        done = loadgen.run(self.sockets[name], client.request, seconds, client.limit(),
                           reopen=lambda i: loadgen.reconnect(client.port, owners[i], workers))
        cpu_after, client_cpu = loadgen.worker_cpu_seconds(workers), time.process_time() - client_before
        client.used += done["requests"] + done["resent"]        # the tokens the closed connections took too
        client.seen(done)
        self.rounds[-1][name]["reconnects"] += done["resent"]
        self.rounds[-1][name]["requests"] += done["requests"]
        self.rounds[-1][name]["seconds"] += done["seconds"]
        done.update(cpu_seconds=sum(cpu_after[p] - cpu_before[p] for p in workers),
                    worker_cpu={p: cpu_after[p] - cpu_before[p] for p in workers}, client_cpu_seconds=client_cpu)
        self.owed[name] = (cpu_after, done)
        return done


def _round_summary(workers: list[int], connections: int, slices: list[dict], info: dict) -> dict:
    """One app's round, its slices together: requests/s, latency, the CPU its workers spent per request; each
    slice's and each window's CPU per request beside."""
    n, seconds = sum(s["requests"] for s in slices), sum(s["seconds"] for s in slices)
    latencies = [x for s in slices for x in s["latencies"]]
    total = sum(s["cpu_seconds"] for s in slices)
    spent = {p: sum(s["worker_cpu"][p] for s in slices) for p in workers}
    statuses = Counter()
    for s in slices:
        statuses.update(s["statuses"])
    return {"concurrency": connections, "requests": n, "seconds": round(seconds, 3),
            "requests_per_s": round(n / seconds, 1),
            "cpu_ms_per_request": round(total / n * 1000, 3),
            "client_cpu_ms_per_request": round(sum(s["client_cpu_seconds"] for s in slices) / n * 1000, 3),
            "p50_ms": round(statistics.median(latencies) * 1000, 2),
            "p99_ms": round(percentile(latencies, 99) * 1000, 2),
            "errors": sum(s["errors"] for s in slices), "statuses": dict(statuses),
            "slice_cpu_ms_per_request": [round(s["cpu_seconds"] / s["requests"] * 1000, 3) for s in slices],
            "window_cpu_ms_per_request": [round(x, 3) for x in windows([slices])],
            # The round's CPU by the process CPU clock and by /proc/<pid>/stat's ticks (idle time between slices
            # included): they agree within the ticks' rounding (loadgen.STAT_ERROR_TICKS a worker).
            "cpu_check_ms": [round(x * 1000, 3) for x in info["cpu"]],
            "reconnects": info["reconnects"],
            # Which worker (by its index in `workers`) each connection was on, and each worker's part of the CPU.
            "connection_workers": [workers.index(p) if p in workers else None for p in info["owners"]],
            "per_connection": [sum(c) for c in zip(*(s["per_connection"] for s in slices))],
            "worker_cpu_share": [round(spent[p] / total, 2) if total else 0 for p in workers],
            "load_average": round(os.getloadavg()[0], 2)}


def throughput(settings: list[str], concurrencies=(1, 4), seconds: float = 3, rounds: int = 5,
               ports=(18600, 18650), redis_url: str = DEFAULT_REDIS, even: bool = True,
               typical_n: int = 100, apps=tuple(app.name for app in APPS), slice_seconds: float = 0.5) -> dict:
    """CPU per request, requests/s and latency of each app of APPS at each concurrency.

    All servers run at once (an idle one costs nothing), each warmed up first. In each of `rounds` rounds every
    app gets `seconds`, in slices of about `slice_seconds` interleaved in mirrored passes (`slice_plan`), on
    connections kept alive for the round. Reported per app and concurrency: every round (and its slices and
    windows), the min/median/max of CPU per request and requests/s over rounds, and the CPU per request against
    the trivial endpoint's and the peer's window by window (median, quartiles and range of the paired ratios;
    for auth, its paired difference from warm).
    """
    key = auth.new_key()
    chosen = [app for app in APPS if app.name in apps]
    names = [app.name for app in chosen]
    clients, workers = {}, {}
    with ExitStack() as servers:
        for app in chosen:
            def setup(port: int, app=app):
                env = {}
                if app.sends == "auth":
                    env.update(auth="required", issuers_file=str(auth.issuer_file(key)),
                               public_url=f"http://127.0.0.1:{port}",
                               **({"redis_url": redis_url} if redis_url else
                                  {"replay_db": str(_scratch_dir() / "replay.sqlite3")}))
                client = clients[app.name] = Client(app, port, typical_n, key)
                return env, client.body, client.probe_headers
            _, master = serve(servers, app.wsgi, settings, ports, setup)
            workers[app.name] = _wait_for_workers(master)
            warm_up = Slicer({app.name: clients[app.name]}, workers, max(concurrencies), even, min(1.0, seconds))
            with warm_up.round():
                warm_up.slice(app.name, min(1.0, seconds))
        results = {name: [] for name in names}
        for c in concurrencies:
            slicer = Slicer(clients, workers, c, even, seconds)
            slices = measure(names, rounds, seconds, slice_seconds, slicer)
            for name in names:
                per_round = [_round_summary(workers[name], c, done, info[name])
                             for done, info in zip(slices[name], slicer.rounds)]
                results[name].append(_summary(name, c, per_round, slices))
    count = slice_plan(names, 1, seconds, slice_seconds)[0]
    return {"apps": {app.name: {"wsgi": app.wsgi, "sends": app.sends} for app in chosen},
            "workers": {name: len(pids) for name, pids in workers.items()}, "even_connections": even,
            "replay_cache": redis_url or "SQLite file", "cpu_source": loadgen.CPU_SOURCE,
            "slices_per_round": count, "slice_seconds": round(seconds / count, 3),
            "results": results}


def _summary(name: str, concurrency: int, rounds: list[dict], slices: dict[str, list[list[dict]]]) -> dict:
    """An app at one concurrency: its rounds' spread, and its windows paired with the trivial endpoint's, the
    peer's and (auth) warm's."""
    range_of = lambda key: [min(r[key] for r in rounds), statistics.median(r[key] for r in rounds),   # noqa: E731
                            max(r[key] for r in rounds)]
    summary = {"concurrency": concurrency, "rounds": len(rounds), "requests": sum(r["requests"] for r in rounds),
               "cpu_ms_per_request": range_of("cpu_ms_per_request"), "requests_per_s": range_of("requests_per_s"),
               "p50_ms": statistics.median(r["p50_ms"] for r in rounds),
               "p99_ms": statistics.median(r["p99_ms"] for r in rounds),
               "worst_round_p99_ms": max(r["p99_ms"] for r in rounds),
               "errors": sum(r["errors"] for r in rounds), "per_round": rounds}
    for base in (b for b in ("trivial", "peer") if b in slices):
        summary[f"cpu_vs_{base}"] = spread(paired(slices[name], slices[base]))
    if name == "auth" and "warm" in slices:
        summary["cpu_over_warm_ms"] = spread(paired(slices[name], slices["warm"], difference=True))
    return summary


def memory(bodies: list[bytes], settings: list[str], requests: int = 10_000, checkpoints=(1, 1000, 5000, 10_000),
           ports=(18600, 18650)) -> dict:
    """RSS of one worker over `requests` requests cycling through `bodies` (distinct patients, each chart and
    its answer remembered). The service runs with --workers 1 here, so that
    worker gets every request."""
    samples = {}
    with ExitStack() as servers:
        port, master = serve(servers, SERVICE_APP, settings, ports, lambda port: ({}, bodies[0], None),
                             extra=["--workers", "1"])
        [worker] = _wait_for_workers(master)
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
