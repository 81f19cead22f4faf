"""In-process size sweep: request bytes -> response bytes through the WSGI app, against orjson.loads.

Each repetition times one full WSGI call (body read, JSON decode, schema checks, prefetch, record,
facts, cards, response encoding) of the service as deployed, one of the service with its caches
off (every relevant resource validated again: the cost of a chart seen for the first time), one of the
peer-style walk (bench/peer.py) and, on the same body, one `orjson.loads`, so all four see the same
machine state (caches, garbage collector, noisy neighbours). The garbage collector is set as a gunicorn
worker sets it (gunicorn.conf.py's post_worker_init), for every subject alike.
"""
from __future__ import annotations

import ast
import atexit
import functools
import gc
import io
import logging
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import orjson

from .patients import FHIR_SERVER, patient_view_request

SERVICE_PATH = "/cds-services/avh-patient-view"
GUNICORN_CONF = Path(__file__).resolve().parent.parent / "gunicorn.conf.py"


@functools.cache
def _scratch_dir() -> Path:
    """A directory for this run's feedback store, removed when the process exits."""
    path = Path(tempfile.mkdtemp(prefix="avh-cds-bench-"))
    atexit.register(shutil.rmtree, path, True)
    return path


def bench_settings_env(max_body_bytes: int = 64 << 20, **more: str) -> dict[str, str]:
    """The environment the benchmark runs the service with.

    Auth off (the benchmark measures the pathway, not JWT checks); the body and prefetch limits raised,
    because 10,000 resources are 7 MB and over the 5,000-resource default; the synthetic EHR's fhirServer
    allowed (it is never contacted: every key is prefetched); the feedback store in a scratch file.
    """
    return {"AVH_CDS_AUTH": "off", "AVH_CDS_MAX_BODY_BYTES": str(max_body_bytes),
            "AVH_CDS_MAX_PREFETCH_RESOURCES": "100000", "AVH_CDS_FHIR_SERVERS": FHIR_SERVER,
            "AVH_CDS_SQLITE_PATH": str(_scratch_dir() / "feedback.sqlite3"),
            **{f"AVH_CDS_{k.upper()}": v for k, v in more.items()}}


def make_app(**more: str):
    from service import create_app
    from service.config import Settings
    return create_app(Settings.from_env({**os.environ, **bench_settings_env(**more)}))


def _environ(body: bytes) -> dict:
    return {"REQUEST_METHOD": "POST", "PATH_INFO": SERVICE_PATH, "QUERY_STRING": "", "SCRIPT_NAME": "",
            "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1",
            "CONTENT_TYPE": "application/json", "CONTENT_LENGTH": str(len(body)), "HTTP_HOST": "127.0.0.1",
            "wsgi.input": io.BytesIO(body), "wsgi.url_scheme": "http", "wsgi.errors": io.StringIO(),
            "wsgi.version": (1, 0), "wsgi.multithread": False, "wsgi.multiprocess": False, "wsgi.run_once": False}


def call(app, body: bytes) -> tuple[str, bytes]:
    """One request through the WSGI callable: (status line, response body)."""
    status = []
    chunks = app(_environ(body), lambda s, headers, exc_info=None: status.append(s))
    try:
        data = b"".join(chunks)
    finally:
        getattr(chunks, "close", lambda: None)()
    return status[0], data


def production_collector() -> None:
    """Set the garbage collector as a production worker has it: run gunicorn.conf.py's `post_worker_init`,
    taken alone from the file (loading the whole config would set the server's environment up)."""
    tree = ast.parse(GUNICORN_CONF.read_text())
    [hook] = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "post_worker_init"]
    namespace: dict = {}
    exec(compile(ast.Module(body=[hook], type_ignores=[]), str(GUNICORN_CONF), "exec"), namespace)
    namespace["post_worker_init"](None)


def default_collector(threshold: tuple[int, int, int]) -> None:
    """Undo production_collector (in a process that goes on, e.g. a test)."""
    gc.unfreeze()
    gc.set_threshold(*threshold)


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def measure_size(app, cold_app, peer_app, n: int, repeats: int) -> dict:
    body = orjson.dumps(patient_view_request(n))
    status, data = call(app, body)                     # warm-up, and a check the answer is a real one
    if not status.startswith("200"):
        raise RuntimeError(f"N={n}: the service answered {status}: {data[:300]!r}")
    cards = [c["source"]["topic"]["code"] for c in orjson.loads(data)["cards"]]
    timings = {name: [] for name in ("service", "cold", "peer", "loads")}
    cpu = {name: [] for name in timings}
    for _ in range(repeats):
        for name, step in (("service", lambda: call(app, body)), ("cold", lambda: call(cold_app, body)),
                           ("peer", lambda: call(peer_app, body)), ("loads", lambda: orjson.loads(body))):
            started, cpu_started = time.perf_counter(), time.process_time()
            step()
            cpu[name].append(time.process_time() - cpu_started)
            timings[name].append(time.perf_counter() - started)
    result = {"n": n, "body_bytes": len(body), "repeats": repeats, "cards": cards}
    for name, samples in timings.items():
        result[f"{name}_median_ms"] = round(statistics.median(samples) * 1000, 3)
        result[f"{name}_p99_ms"] = round(percentile(samples, 99) * 1000, 3)
        # CPU time of the process during the call: what the call cost, however busy the machine was.
        result[f"{name}_cpu_median_ms"] = round(statistics.median(cpu[name]) * 1000, 3)
    loads = statistics.median(timings["loads"])
    result["ratio_median"] = round(statistics.median(timings["service"]) / loads, 2)
    result["cold_ratio_median"] = round(statistics.median(timings["cold"]) / loads, 2)
    result["cold_vs_peer"] = round(statistics.median(timings["cold"]) / statistics.median(timings["peer"]), 2)
    cpu_of = {name: statistics.median(samples) for name, samples in cpu.items()}
    result["cpu_ratio"] = round(cpu_of["service"] / cpu_of["loads"], 2)
    result["cold_cpu_ratio"] = round(cpu_of["cold"] / cpu_of["loads"], 2)
    result["cold_vs_peer_cpu"] = round(cpu_of["cold"] / cpu_of["peer"], 2)
    return result


def repeats_for(n: int, budget_seconds: float = 8.0) -> int:
    """Enough repetitions for a p99 to mean something on small N, without minutes on large N."""
    return max(10, min(400, int(budget_seconds / (n * 30e-6 + 2.5e-3))))


def run(sizes=(10, 100, 1000, 10_000), repeats: int | None = None) -> list[dict]:
    from . import peer
    logging.disable(logging.WARNING)   # one warning line per request would be timed too
    threshold = gc.get_threshold()
    try:
        app, cold_app, peer_app = make_app(), make_app(model_cache_size="0"), peer.create_app()
        production_collector()
        return [measure_size(app, cold_app, peer_app, n, repeats or repeats_for(n)) for n in sizes]
    finally:
        default_collector(threshold)
        logging.disable(logging.NOTSET)
