"""gunicorn configuration: the production way to run avh-cds.

    gunicorn -c gunicorn.conf.py service.wsgi:app

Every knob is an environment variable (see README.md, "Running in production"). The app itself reads AVH_CDS_*
settings in service/config.py; the variables here size and shape the server process.
"""
import atexit
import logging
import multiprocessing
import os
import shutil
import tempfile
from pathlib import Path

# Production refuses unauthenticated calls unless the operator says otherwise, explicitly.
os.environ.setdefault("AVH_CDS_AUTH", "required")

# Prometheus multiprocess mode: every worker writes its samples to files in this directory and
# GET /metrics adds them up. It must be set before a worker imports prometheus_client, and it must
# belong to this server alone (a second gunicorn on the host gets its own).
if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="avh-cds-metrics-")
    _master_pid = os.getpid()

    @atexit.register
    def _remove_metrics_dir():
        """When the master exits, however it exits (a port already in use included). Not in a forked
        worker (workers inherit atexit hooks), nor after a USR2 upgrade handed the directory on."""
        if os.getpid() == _master_pid and not getattr(_arbiter, "reexec_pid", 0):
            shutil.rmtree(METRICS_DIR, ignore_errors=True)

METRICS_DIR = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])

bind = os.environ.get("AVH_CDS_BIND", "0.0.0.0:8080")
# One worker a core (two at least, so that a worker restarting leaves one answering): a call's own work is CPU
# (~1 ms), and more busy processes than cores only take turns on them, each turn evicting the other's data from the
# CPU's caches. Measured on 2 cores, 4 connections of first-seen charts: 2 workers 1.10 ms CPU a request, 5 workers
# (2 x cores + 1, gunicorn's rule of thumb for sync workers) 1.26-1.41 ms, with fewer requests/s and a longer p99
# (docs/performance.md, "workers"). Waiting is what threads are for: calls waiting on a slow fhirServer hold a
# thread, not a core, so each worker has more of them.
workers = int(os.environ.get("AVH_CDS_WORKERS", max(2, multiprocessing.cpu_count())))
threads = int(os.environ.get("AVH_CDS_THREADS", 8))
# gthread, but a lone kept-alive connection's next request is served by the thread that answered the last one when
# it arrives within 0.5 ms, without the hand-over through the main thread's poller: ~0.15 ms (-12 %) of a first-seen
# call at N = 100, one call at a time (docs/performance.md, "ka20"). Two connections or more: stock gthread.
worker_class = "service.api.worker.KeptAliveWorker"
timeout = int(os.environ.get("AVH_CDS_WORKER_TIMEOUT", 30))      # a worker silent this long is restarted
graceful_timeout = int(os.environ.get("AVH_CDS_GRACEFUL_TIMEOUT", 20))   # on SIGTERM: finish calls in flight
keepalive = int(os.environ.get("AVH_CDS_KEEPALIVE", 5))
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None   # heartbeats off overlay filesystems

accesslog = "-"
errorlog = "-"
loglevel = os.environ.get("AVH_CDS_LOG_LEVEL", "INFO").lower()
logger_class = "service.api.accesslog.AccessLogger"
access_log_format = '%(h)s "%(m)s %(U)s" %(s)s %(B)s %(M)sms pid=%(p)s ua="%(a)s"'
proc_name = "avh-cds"
control_socket_disable = True   # gunicorn >= 27: no runtime control socket (two instances on a host would share one)

_arbiter = None   # the gunicorn Arbiter, once on_starting has run


def pre_request(worker, req):
    """gunicorn's own logs each request at DEBUG (AVH_CDS_LOG_LEVEL=DEBUG) with its path as sent, `GET
    /fhir/Patient/<the patient's id>`: the path as the access line names it (docs/security.md). Named only when
    that line is written: matching the path against the app's URL map costs ~9 us, on every call otherwise."""
    if not worker.log.error_log.isEnabledFor(logging.DEBUG):
        return
    from service.api.accesslog import logged_method, logged_target
    worker.log.debug("%s %s", logged_method(req.method), logged_target(req.path, req.method))


def on_starting(server):
    """Samples left by an earlier server in the same directory would be counted again: start empty."""
    global _arbiter
    _arbiter = server
    METRICS_DIR.mkdir(parents=True, exist_ok=True)
    for stale in METRICS_DIR.glob("*.db"):
        stale.unlink()
    _warn_of_a_replay_cache_per_worker(server)


def _warn_of_a_replay_cache_per_worker(server):
    """With auth required, each worker remembers the tokens it saw unless a shared replay cache is configured: a
    token replayed to another worker is accepted. Said loudly at start-up (docs/security.md)."""
    if (server.cfg.workers > 1 and os.environ.get("AVH_CDS_AUTH", "required") == "required"
            and not os.environ.get("AVH_CDS_REDIS_URL") and not os.environ.get("AVH_CDS_REPLAY_DB")):
        server.log.warning("%d workers, each with its own jti replay cache: a token replayed to another worker is "
                           "accepted; set AVH_CDS_REPLAY_DB (one host) or AVH_CDS_REDIS_URL (several hosts)",
                           server.cfg.workers)


def post_worker_init(worker):
    """Once a worker has loaded the app: what start-up allocated (FHIR model classes, schemas, card templates,
    value sets) is moved out of the garbage collector's sight, so that a collection does not walk it again,
    and young objects are collected less often (a call allocates thousands of decoded dicts, nearly all freed
    by reference counting). Measured: server CPU per typical call 1.95 -> 1.60 ms (BENCHMARKS.md)."""
    import gc
    gc.collect()
    gc.freeze()
    gc.set_threshold(7000, 10, 100)


def post_fork(server, worker):
    """gunicorn's own refusals (request line or headers over its limits) answered in JSON, not HTML."""
    from service.api.gunicorn_errors import answer_errors_in_json
    answer_errors_in_json()


def child_exit(server, worker):
    from prometheus_client import multiprocess
    multiprocess.mark_process_dead(worker.pid)
