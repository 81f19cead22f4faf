"""`python -m bench.installed_peer`: single-call latency of a chart seen for the first time, avh-cds against a peer
CDS service that is installed and started by a command of yours (issue 18: "single-call latency ahead of the peer's
model-free walk at N = 100, 1k and 10k").

`python -m bench` compares with bench/peer.py, a floor of the peer in our own server that needs nothing installed;
this runs the peer itself, in its own server and interpreter. avh-cds runs under gunicorn as configured (caches on),
the peer as `--peer-cmd` starts it ({port} is filled in); each is sent, one call at a time on one kept-alive
connection, charts of N resources it has never seen (a new patient id each call: FIRST_SEEN_ID replaced), in rounds
that alternate the two. Reported: the median wall time a call (what a clinician waits for, less the network) and
the CPU the server's processes spent a call (/proc, all their threads and children).

HealthChain 0.16.1, its model-free walk with one rule (bench/healthchain_peer.py), in its own virtual environment
(it pins another fhir.resources than avh-cds):

    python3 -m venv /tmp/hc && /tmp/hc/bin/pip install healthchain==0.16.1
    python -m bench.installed_peer --peer-cmd "/tmp/hc/bin/python -m uvicorn bench.healthchain_peer:app \\
        --host 127.0.0.1 --port {port} --log-level warning --no-access-log" \\
        --peer-path /cds/cds-services/avh-patient-view
"""
from __future__ import annotations

import argparse
import http.client
import shlex
import socket
import statistics
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import orjson

from . import loadgen
from .http import FIRST_SEEN_ID, ROOT, SERVICE_APP, gunicorn, gunicorn_settings, kernel_port, _wait_for_workers
from .patients import patient_view_request
from .sweep import SERVICE_PATH


def process_tree(pid: int) -> list[int]:
    """pid and its descendants (a server's workers, a uvicorn --workers supervisor's children)."""
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        try:
            todo += [int(p) for p in Path(f"/proc/{current}/task/{current}/children").read_text().split()]
        except FileNotFoundError:
            continue
    return tree


def distinct_bodies(n: int, count: int, label: str) -> list[bytes]:
    """`count` patient-view requests of n resources, each for a patient no call has named before."""
    body = orjson.dumps(patient_view_request(n, patient_id=FIRST_SEEN_ID))
    return [body.replace(FIRST_SEEN_ID.encode(), f"{label}-{i:08d}".encode()) for i in range(count)]


def sequential(port: int, path: str, pids: list[int], bodies: list[bytes]) -> tuple[float, float]:
    """Median wall ms a call and server CPU ms a call, the bodies sent one at a time on one connection; each answer
    must be a 200 with at least one card (both services find the hemangioma in every body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    walls = []
    try:
        cpu_before = sum(loadgen.worker_cpu_seconds(pids).values())
        for body in bodies:
            started = time.perf_counter()
            conn.request("POST", path, body, {"Content-Type": "application/json"})
            response = conn.getresponse()
            data = response.read()
            walls.append(time.perf_counter() - started)
            if response.status != 200 or b'"cards":[{' not in data:
                raise RuntimeError(f"127.0.0.1:{port}{path} answered {response.status}: {data[:300]!r}")
        cpu = sum(loadgen.worker_cpu_seconds(pids).values()) - cpu_before
    finally:
        conn.close()
    return statistics.median(walls) * 1000, cpu / len(bodies) * 1000


def start_peer(servers: ExitStack, command: str, path: str) -> tuple[int, list[int]]:
    """The peer started on a port the kernel picked, once it answers a call: (port, its processes)."""
    port = kernel_port()
    proc = subprocess.Popen(shlex.split(command.format(port=port)), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    servers.callback(_stop, proc)
    probe = distinct_bodies(100, 1, "probe")
    deadline = time.monotonic() + 60
    while True:
        try:
            sequential(port, path, [proc.pid], probe)
            return port, process_tree(proc.pid)
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the peer did not start: {proc.stderr.read()[-2000:].decode(errors='replace')}")
            time.sleep(0.3)


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def compare(peer_cmd: str, peer_path: str, sizes=(100, 1000, 10_000), rounds: int = 3, config: str | None = None) -> list[dict]:
    with ExitStack() as servers:
        # avh-cds on a socket listening at a port the kernel picked, inherited by gunicorn: no fixed range that
        # another run's server may hold.
        listener = servers.enter_context(socket.create_server(("127.0.0.1", 0)))
        port = listener.getsockname()[1]
        master = servers.enter_context(gunicorn(SERVICE_APP, port, gunicorn_settings(config),
                                                orjson.dumps(patient_view_request(100)), listener=listener))
        workers = _wait_for_workers(master)
        peer_port, peer_pids = start_peer(servers, peer_cmd, peer_path)
        results = []
        for n in sizes:
            count = max(10, min(400, int(4000 / n) * 10))
            samples = {"avh-cds": [], "peer": []}
            for r in range(rounds):
                warm = distinct_bodies(n, 5, f"warm{r}")
                sequential(port, SERVICE_PATH, workers, warm)
                samples["avh-cds"].append(sequential(port, SERVICE_PATH, workers, distinct_bodies(n, count, f"r{r}")))
                sequential(peer_port, peer_path, peer_pids, warm)
                samples["peer"].append(sequential(peer_port, peer_path, peer_pids, distinct_bodies(n, count, f"r{r}")))
            row = {"n": n, "calls_a_round": count, "rounds": rounds}
            for name, values in samples.items():
                row[f"{name}_wall_ms"] = round(statistics.median(v[0] for v in values), 3)
                row[f"{name}_cpu_ms"] = round(statistics.median(v[1] for v in values), 3)
            row["wall_ratio"] = round(row["avh-cds_wall_ms"] / row["peer_wall_ms"], 2)
            row["cpu_ratio"] = round(row["avh-cds_cpu_ms"] / row["peer_cpu_ms"], 2)
            results.append(row)
        return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.installed_peer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peer-cmd", required=True, help="starts the peer on 127.0.0.1:{port}")
    parser.add_argument("--peer-path", required=True, help="the peer's patient-view service path")
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[100, 1000, 10_000])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--config", help="gunicorn config for avh-cds (default: the repo's gunicorn.conf.py)")
    args = parser.parse_args(argv)
    rows = compare(args.peer_cmd, args.peer_path, args.sizes, args.rounds, args.config)
    print("first-seen chart, one call at a time on one kept-alive connection (median of rounds' medians)")
    print(f"{'N':>6} {'calls':>5} {'avh-cds wall':>12} {'peer wall':>9} {'ratio':>5} {'avh-cds CPU':>11} {'peer CPU':>8} {'ratio':>5}")
    for r in rows:
        print(f"{r['n']:>6} {r['calls_a_round']:>5} {r['avh-cds_wall_ms']:>9.2f} ms {r['peer_wall_ms']:>6.2f} ms "
              f"{r['wall_ratio']:>5.2f} {r['avh-cds_cpu_ms']:>8.2f} ms {r['peer_cpu_ms']:>5.2f} ms {r['cpu_ratio']:>5.2f}")
    print(orjson.dumps(rows).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
