"""Prometheus metrics: what operations watch (latency, cards, prefetch, authentication).

Other modules call the small observe_* helpers; the helpers never take patient data, and every
label has a bounded set of values (service ids from the registry, card topics, prefetch keys,
fixed failure reasons), so the number of time series stays small.

Under gunicorn with several workers, gunicorn.conf.py sets PROMETHEUS_MULTIPROC_DIR before any
worker imports this module: each worker then writes its samples to files there and GET /metrics
adds them up across workers (prometheus-client multiprocess mode).
"""
from __future__ import annotations

import os
import time
from contextlib import contextmanager
from functools import cache

from flask import Blueprint, Flask, Request, Response
from prometheus_client import (CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Gauge, Histogram,
                               generate_latest)
from prometheus_client import multiprocess

from service import lru

PREFIX = "avh_cds"
# Latency buckets around the targets that matter: 500 ms (spec) and 5 s (Da Vinci CRD).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

REQUEST_SECONDS = Histogram(f"{PREFIX}_request_duration_seconds",
                            "Time to answer a CDS service call, by service and HTTP status",
                            ["service", "status"], buckets=LATENCY_BUCKETS)
CARDS = Counter(f"{PREFIX}_cards", "Cards returned, by service and card topic", ["service", "topic"])
PREFETCH_FETCH_SECONDS = Histogram(f"{PREFIX}_prefetch_fetch_duration_seconds",
                                   "Time to fetch one missing prefetch key from the fhirServer", ["key"],
                                   buckets=LATENCY_BUCKETS)
PREFETCH_FAILURES = Counter(f"{PREFIX}_prefetch_failures", "Prefetch keys that could not be had, by key", ["key"])
AUTH_FAILURES = Counter(f"{PREFIX}_auth_failures", "Requests refused by authentication, by reason", ["reason"])
# 1 when the dependency answered the last readiness check, 0 when it did not; across workers, the lowest.
DEPENDENCY_UP = Gauge(f"{PREFIX}_dependency_up", "Whether a dependency answered the last GET /readyz (1) or not (0)",
                      ["dependency"], multiprocess_mode="livemin")
# A worker's caches of chart facts and patient-view answers (service/lru.py); summed over workers.
CACHE_ENTRIES = Gauge(f"{PREFIX}_cache_entries", "Entries in the per-worker caches, summed over workers", ["cache"],
                      multiprocess_mode="livesum")
CACHE_BYTES = Gauge(f"{PREFIX}_cache_bytes", "Approximate bytes held by the per-worker caches, summed over workers",
                    ["cache"], multiprocess_mode="livesum")
CACHE_PUBLISH_SECONDS = 1.0
FEEDBACK_STORE_FAILURES = Counter(f"{PREFIX}_feedback_store_failures",
                                  "Writes to the feedback store that failed (feedback answered 503, issued cards kept "
                                  "waiting)")
FEEDBACK_OUTCOMES = Counter(f"{PREFIX}_feedback_outcomes", "Feedback entries stored (a resent one counts once), by "
                            "the card's topic and the outcome", ["topic", "outcome"])

UNKNOWN_SERVICE = "unknown"
# Feedback labels: a card this service never issued, a topic it does not know (an old or foreign row) and an
# outcome outside CDS Hooks' two each fold into one value, so a caller cannot make new time series.
UNKNOWN_CARD_LABEL, OTHER_TOPIC_LABEL = "unknown_card", "other"
OUTCOMES = frozenset({"accepted", "overridden"})
bp = Blueprint("metrics", __name__)


# The labelled series of the per-call metrics, looked up once per label pair (labels() checks and locks
# each time); the label sets are bounded, so are these caches.
_cards_of = cache(CARDS.labels)
_request_seconds_of = cache(REQUEST_SECONDS.labels)


def observe_cards(service_id: str, topics: list[str]) -> None:
    """Count the cards of one answer by topic (call once per successful service call)."""
    for topic in topics:
        _cards_of(service_id, topic).inc()


def feedback_labels(topic: str | None, outcome: str, known_topics) -> tuple[str, str]:
    """The bounded (topic, outcome) labels of one stored feedback entry; known_topics: the card library's."""
    if topic is None:
        topic = UNKNOWN_CARD_LABEL
    elif topic not in known_topics:
        topic = OTHER_TOPIC_LABEL
    return topic, outcome if outcome in OUTCOMES else "other"


def observe_feedback(outcomes, known_topics) -> None:
    """Count stored feedback entries, given their (topic or None for an unknown card, outcome)."""
    for topic, outcome in outcomes:
        FEEDBACK_OUTCOMES.labels(*feedback_labels(topic, outcome, known_topics)).inc()


def observe_prefetch_fetch(key: str, seconds: float) -> None:
    """One fetch of a missing prefetch key from the fhirServer, all pages, failed or not."""
    PREFETCH_FETCH_SECONDS.labels(key).observe(seconds)


@contextmanager
def prefetch_fetch_timer(key: str):
    started = time.perf_counter()
    try:
        yield
    finally:
        observe_prefetch_fetch(key, time.perf_counter() - started)


def observe_dependency(name: str, up: bool) -> None:
    DEPENDENCY_UP.labels(name).set(1 if up else 0)


def observe_feedback_store_failure() -> None:
    FEEDBACK_STORE_FAILURES.inc()


_caches_published = 0.0


def publish_cache_sizes() -> None:
    """This worker's cache sizes into the gauges (each worker writes its own; /metrics sums them)."""
    global _caches_published
    _caches_published = time.monotonic()
    for name, (entries, weight) in lru.sizes().items():
        CACHE_ENTRIES.labels(name).set(entries)
        CACHE_BYTES.labels(name).set(weight)


def observe_prefetch_failure(key: str) -> None:
    PREFETCH_FAILURES.labels(key).inc()


# Why a token was refused -> the label counted. Matched against the start of the refusal's message
# (the AuthFailed messages of service/security/tokens.py, PyJWT's exception names); anything else is
# "other". The label is never built from the message itself: a token's kid or alg must not become
# a time series of its own.
AUTH_FAILURE_REASONS = (
    ("no bearer token", "missing_token"), ("malformed token", "malformed_token"),
    ("alg ", "algorithm_not_allowed"), ("no kid", "no_kid"), ("iss not trusted", "untrusted_issuer"),
    ("jku not allowed", "jku_not_allowed"), ("no key ", "unknown_key"), ("ExpiredSignatureError", "expired"),
    ("ImmatureSignatureError", "not_yet_valid"), ("InvalidIssuedAtError", "not_yet_valid"),
    ("InvalidAudienceError", "wrong_audience"), ("InvalidSignatureError", "bad_signature"),
    ("InvalidIssuerError", "untrusted_issuer"), ("MissingRequiredClaimError", "missing_claim"),
    ("token lifetime", "lifetime_too_long"), ("tenant not allowed", "tenant_not_allowed"),
    ("jti replayed", "replayed_jti"), ("jti unknown", "issued_before_replay_cache"), ("DecodeError", "malformed_token"), ("InvalidJTIError", "malformed_token"),
)


def auth_failure_reason(message: str) -> str:
    return next((code for start, code in AUTH_FAILURE_REASONS if message.startswith(start)), "other")


def observe_auth_failure(message: str) -> str:
    """Count a refused request by the kind of refusal (see AUTH_FAILURE_REASONS); that kind is returned."""
    reason = auth_failure_reason(message)
    AUTH_FAILURES.labels(reason).inc()
    return reason


def _service_label(req: Request, app: Flask) -> str:
    """The CDS service the call `req` named: its id when the registry has it, else UNKNOWN_SERVICE."""
    service_id = (req.view_args or {}).get("service_id", "")
    return service_id if app.extensions["avh"].registry.get(service_id) else UNKNOWN_SERVICE


def init_app(app: Flask) -> None:
    """GET /metrics. The timing of every CDS service call, whatever answers it (the route, an error handler,
    authentication), is taken by the app's after-request function, from the start its before-request function
    notes (g.started) to the answer ready to send, and observed (`observe_request`) once the answer has been sent."""
    app.register_blueprint(bp)


def observe_request(req: Request, app: Flask, call: dict, status: int, answered: float) -> None:
    """After the CDS service call `req` (g's dict `call`) was answered with `status`, the answer ready at `answered`
    (time.perf_counter): its duration. Called once the answer has been sent (service/api/aftersend.py), for the calls
    the app's after-request function says are the histogram's (service/__init__.py: a CDS call, not a preflight)."""
    started = call.get("started")
    if started is not None:
        _request_seconds_of(_service_label(req, app), str(status)).observe(answered - started)
        if time.monotonic() - _caches_published >= CACHE_PUBLISH_SECONDS:
            publish_cache_sizes()


def _registry():
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry
    return REGISTRY


@bp.get("/metrics")
def metrics():
    publish_cache_sizes()       # this worker's, up to date; the others' as of their last call (within a second)
    return Response(generate_latest(_registry()), content_type=CONTENT_TYPE_LATEST)   # as it is: it has its charset
