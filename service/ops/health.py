"""Liveness and readiness for load balancers and orchestrators.

GET /healthz: the process answers (no dependency is touched, so a slow database never gets a
healthy worker restarted). GET /readyz: this instance can answer hooks: card definitions are loaded
and every required readiness check on app.extensions["avh"].readiness passes. Storage and replay-cache
code append their own check at start-up, e.g. `avh.readiness.append(Check("database", store.ping,
required=False))`. A check that is not required (the feedback store: hooks answer without it) is
reported, in the body's "degraded" list and the avh_cds_dependency_up gauge, without answering 503: a
load balancer would otherwise take every replica out at once while all of them can serve.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable

from flask import Blueprint, current_app, jsonify

from service.ops import metrics

log = logging.getLogger(__name__)
bp = Blueprint("health", __name__)


@dataclass(frozen=True)
class Check:
    """A named dependency probe: `probe()` returns when the dependency works and raises when it does not.
    `required`: hooks cannot be answered without it."""
    name: str
    probe: Callable[[], object]
    required: bool = True


def cards_loaded(avh) -> Check:
    def probe():
        if not avh.engine.library.definitions or not list(avh.registry):
            raise RuntimeError("no card definitions or no CDS services loaded")
    return Check("cards", probe)


def run_checks(checks: list[Check]) -> dict[str, str]:
    """Each check's outcome: "ok" or "failed (ExceptionType)". Only the exception's type is logged and
    answered: its message may carry a connection string."""
    results = {}
    for check in checks:
        started = time.perf_counter()
        try:
            check.probe()
            results[check.name] = "ok"
        except Exception as exc:  # a failing dependency of any kind means "not ready", not a 500
            log.warning("readiness check %s failed after %.0f ms: %s", check.name,
                        (time.perf_counter() - started) * 1000, type(exc).__name__)
            results[check.name] = f"failed ({type(exc).__name__})"
        metrics.observe_dependency(check.name, results[check.name] == "ok")
    return results


@bp.get("/healthz")
def healthz():
    return jsonify({"status": "alive"})


@bp.get("/readyz")
def readyz():
    checks = current_app.extensions["avh"].readiness
    results = run_checks(checks)
    failed = [check for check in checks if results[check.name] != "ok"]
    ready = not any(check.required for check in failed)
    body = {"status": "ready" if ready else "not_ready", "checks": results}
    degraded = [check.name for check in failed if not check.required]
    if degraded:
        body["degraded"] = degraded
    return jsonify(body), 200 if ready else 503
