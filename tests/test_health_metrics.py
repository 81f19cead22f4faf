"""GET /healthz, /readyz and /metrics in one process (the gunicorn test covers several workers)."""
import re
import socket
from itertools import cycle
from urllib.parse import quote

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests import security_support as security

from tests.deployment_support import RecordingFhirServer, avh_bundle, patient_view_request, sample
from tests.fhir_records import PRE_OP_CARDS
from tests.ports import listening_socket, port_of, refused_port
from service import create_app
from service.config import Settings
from service.ops.health import Check
from service.clinical.cards import UNCHECKED_TOPIC
from service.ops.metrics import (AUTH_FAILURE_REASONS, OTHER_TOPIC_LABEL, OUTCOMES, UNKNOWN_CARD_LABEL, UNKNOWN_SERVICE,
                                 observe_auth_failure)

SERVICE = "avh-patient-view"
DURATION_COUNT = "avh_cds_request_duration_seconds_count"


def metrics(client) -> str:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    return response.get_data(as_text=True)


def test_healthz_answers_alive_without_touching_dependencies(client, app):
    app.extensions["avh"].readiness.append(Check("database", lambda: 1 / 0))
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json == {"status": "alive"}


def test_readyz_is_ready_once_cards_are_loaded_and_the_database_answers(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json == {"status": "ready", "checks": {"cards": "ok", "database": "ok"}}


def postgres_database(name: str) -> str:
    """A database of our own on the real PostgreSQL server on 127.0.0.1, created when missing."""
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True, connect_timeout=5) as c:
        if c.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
            c.execute(f'CREATE DATABASE "{name}"')
    return f"postgresql://postgres@127.0.0.1:5432/{name}"


def ready(env: dict, tmp_path):
    app = create_app(Settings.from_env({"AVH_CDS_AUTH": "off", **env}, sqlite_path=tmp_path / "feedback.sqlite3"))
    response = app.test_client().get("/readyz")
    return response.status_code, response.json["checks"]


def test_readyz_asks_the_shared_postgresql_and_redis(tmp_path):
    env = {"AVH_CDS_DATABASE_URL": postgres_database("avh_deploy"), "AVH_CDS_AUTH": "required",
           "AVH_CDS_REDIS_URL": "redis://127.0.0.1:6379/2"}
    assert ready(env, tmp_path) == (200, {"cards": "ok", "database": "ok", "redis": "ok"})


@pytest.mark.parametrize("env, failed", [
    ({"AVH_CDS_AUTH": "required", "AVH_CDS_REDIS_URL": "redis://127.0.0.1:{refused}/2"},
     {"redis": "failed (ConnectionError)"}),
])   # the database down is reported without 503: tests/test_hostile_storage.py
def test_readyz_is_503_naming_the_shared_dependency_that_is_down(tmp_path, env, failed):
    with refused_port() as refused:
        status, checks = ready({k: v.format(refused=refused) for k, v in env.items()}, tmp_path)
    assert status == 503
    assert {k: v for k, v in checks.items() if v != "ok"} == failed


def test_readyz_runs_appended_checks_and_answers_503_naming_the_failed_one(client, app):
    def reachable(port):
        return lambda: socket.create_connection(("127.0.0.1", port), timeout=1).close()

    with listening_socket() as listener, refused_port() as refused:
        app.extensions["avh"].readiness.append(Check("redis", reachable(port_of(listener))))
        assert client.get("/readyz").json["checks"] == {"cards": "ok", "database": "ok", "redis": "ok"}
        app.extensions["avh"].readiness.append(Check("search", reachable(refused)))
        response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json["status"] == "not_ready"
    assert response.json["checks"] == {"cards": "ok", "database": "ok", "redis": "ok",
                                       "search": "failed (ConnectionRefusedError)"}


def test_readyz_fails_when_no_card_definitions_are_loaded(client, app):
    app.extensions["avh"].engine.library.definitions.clear()
    response = client.get("/readyz")
    assert response.status_code == 503 and response.json["checks"]["cards"] == "failed (RuntimeError)"


def test_service_call_moves_latency_histogram_and_cards_per_topic(client):
    before = metrics(client)
    response = client.post(f"/cds-services/{SERVICE}", json=patient_view_request(avh_bundle()))
    assert response.status_code == 200
    after = metrics(client)
    assert sample(after, DURATION_COUNT, service=SERVICE, status="200") == \
        sample(before, DURATION_COUNT, service=SERVICE, status="200") + 1
    for topic in PRE_OP_CARDS:
        assert sample(after, "avh_cds_cards_total", service=SERVICE, topic=topic) == \
            sample(before, "avh_cds_cards_total", service=SERVICE, topic=topic) + 1
    assert sample(after, "avh_cds_cards_total", service=SERVICE, topic="adjuvant-radiotherapy") == \
        sample(before, "avh_cds_cards_total", service=SERVICE, topic="adjuvant-radiotherapy")


@pytest.mark.parametrize("path, body, status, label", [
    (f"/cds-services/{SERVICE}", {"hook": "patient-view"}, "400", SERVICE),
    ("/cds-services/no-such-service", {}, "404", "unknown"),   # arbitrary ids never become label values
])
def test_refused_calls_are_timed_by_status_with_bounded_labels(client, path, body, status, label):
    before = sample(metrics(client), DURATION_COUNT, service=label, status=status)
    assert client.post(path, json=body).status_code == int(status)
    text = metrics(client)
    assert sample(text, DURATION_COUNT, service=label, status=status) == before + 1
    assert "no-such-service" not in text


def test_prefetch_fetches_are_timed_and_failures_counted_per_key(client):
    bundle = avh_bundle("dep-fetch-1")
    call = patient_view_request(bundle)
    del call["prefetch"]["observations"], call["prefetch"]["procedures"]
    before = metrics(client)
    with RecordingFhirServer() as fhir:
        call["fhirServer"] = fhir.base_url
        assert client.post(f"/cds-services/{SERVICE}", json=call).status_code == 200
    with refused_port() as refused:
        call["fhirServer"] = f"http://127.0.0.1:{refused}/fhir"   # nothing listens: both fetches fail
        assert client.post(f"/cds-services/{SERVICE}", json=call).status_code == 200
    after = metrics(client)
    for key in ("observations", "procedures"):
        assert sample(after, "avh_cds_prefetch_fetch_duration_seconds_count", key=key) == \
            sample(before, "avh_cds_prefetch_fetch_duration_seconds_count", key=key) + 2
        assert sample(after, "avh_cds_prefetch_failures_total", key=key) == \
            sample(before, "avh_cds_prefetch_failures_total", key=key) + 1
    assert sample(after, "avh_cds_prefetch_failures_total", key="conditions") == \
        sample(before, "avh_cds_prefetch_failures_total", key="conditions")


@pytest.mark.parametrize("message, reason", [
    ("jti replayed", "replayed_jti"),
    ("ExpiredSignatureError: Signature has expired", "expired"),
    ("InvalidAudienceError: Audience doesn't match", "wrong_audience"),
    ("no key 'attacker-chosen-kid-1' for alg ES384 from this issuer", "unknown_key"),
    ("alg 'HS256' not allowed", "algorithm_not_allowed"),
    ("something new 'attacker-chosen-kid-2'", "other"),
])
def test_authentication_failures_are_counted_by_a_bounded_reason(client, message, reason):
    before = sample(metrics(client), "avh_cds_auth_failures_total", reason=reason)
    observe_auth_failure(message)
    text = metrics(client)
    assert sample(text, "avh_cds_auth_failures_total", reason=reason) == before + 1
    assert "attacker-chosen" not in text


def test_metrics_content_type_names_each_parameter_once(client):
    """hard13: /metrics answered `text/plain; version=1.0.0; charset=utf-8; charset=utf-8` (Flask added a charset to
    prometheus_client's, which has one). A duplicate parameter is a malformed media type (RFC 9110 8.3.1; Go's
    mime.ParseMediaType refuses it), and Prometheus 3 fails a scrape whose Content-Type it cannot parse."""
    from email.message import Message
    from prometheus_client import CONTENT_TYPE_LATEST
    header = client.get("/metrics").headers["Content-Type"]
    names = [part.split("=", 1)[0].strip().lower() for part in header.split(";")[1:]]
    assert header == CONTENT_TYPE_LATEST and len(names) == len(set(names))
    message = Message()
    message["Content-Type"] = header
    assert message.get_content_type() == "text/plain" and message.get_param("charset") == "utf-8"


def series(metrics_text: str) -> dict[str, set[tuple]]:
    """Every labelled series of avh-cds's own metrics: family name -> the set of its label-value tuples."""
    found: dict[str, set[tuple]] = {}
    for family in text_string_to_metric_families(metrics_text):
        if family.name.startswith("avh_cds_"):
            for s in family.samples:
                found.setdefault(family.name, set()).add(tuple(sorted((k, v) for k, v in s.labels.items() if k != "le")))
    return found


def hostile_sweep(app, secured, values: list[str]) -> None:
    """What a caller controls, each value once: a service id, a path, a feedback card, a prefetch key, a FHIR
    server, a token's kid, alg, issuer and jti (auth required), an Authorization header (auth off)."""
    client, refused = app.test_client(), secured.test_client()
    for value in values:
        quoted, in_header = quote(value, safe=""), value.encode("ascii", "replace").decode().replace("\n", " ")
        for path in (f"/cds-services/{quoted}", f"/cds-services/{quoted}/feedback", f"/{quoted}"):
            assert client.post(path, json={"hook": value, "feedback": []}).status_code in (404, 405, 308)
        feedback = {"feedback": [{"card": value, "outcome": "overridden", "outcomeTimestamp": "2026-11-24T10:00:00Z",
                                  "overrideReason": {"reason": {"code": value, "system": value}, "userComment": value}}]}
        client.post(f"/cds-services/{SERVICE}/feedback", json=feedback)
        call = patient_view_request(avh_bundle(f"p-{len(value)}"))
        call["prefetch"][value] = {"resourceType": "Bundle", "type": "searchset", "entry": []}
        client.post(f"/cds-services/{SERVICE}", json=call, headers={"Authorization": f"Bearer {in_header}"})
        with refused_port() as port:
            del call["prefetch"]["observations"]
            client.post(f"/cds-services/{SERVICE}", json={**call, "fhirServer": f"http://127.0.0.1:{port}/{quoted}"})
        replayed = security.token(jti=value)
        assert refused.post(f"/cds-services/{SERVICE}", json=call, headers=security.bearer(replayed)).status_code == 200
        for token in (security.token(kid=value), security.token(iss=value), replayed,
                      security.token(alg="HS256", key=b"k" * 32, kid=value), f"{in_header}.{in_header}.{in_header}"):
            assert refused.post(f"/cds-services/{SERVICE}", json=call, headers=security.bearer(token)).status_code == 401


def test_no_caller_can_make_a_new_time_series_whatever_it_sends(app, tmp_path):
    """/metrics is public (docs/deployment.md, "Health and metrics"), so what a caller sends must never become a label
    value: each would be a new time series held in every worker and in Prometheus for good (memory denial of
    service) and would show the caller's text to whoever scrapes. Two sweeps of distinct hostile values through
    every route that records a metric: after the first, the second makes no series, and every label value is one
    of the fixed sets docs/deployment.md names."""
    secured = security.make_app(tmp_path)
    markers = [f"zq{n}x" for n in range(40)]
    values = [f"{m}{tail}" for m, tail in zip(markers, cycle(["", "-é-👀", " space", "a" * 300, "%2e%2e/", '"}\n#']))]
    hostile_sweep(app, secured, values[:20])
    first = metrics(app.test_client())
    hostile_sweep(app, secured, values[20:])
    second = metrics(app.test_client())
    assert series(second) == series(first)
    assert not any(m in first or m in second for m in markers)
    library = app.extensions["avh"].engine.library
    allowed = {"service": {s.id for s in app.extensions["avh"].registry} | {UNKNOWN_SERVICE},
               "topic": set(library.definitions) | {UNCHECKED_TOPIC, UNKNOWN_CARD_LABEL, OTHER_TOPIC_LABEL},
               "key": set(next(iter(app.extensions["avh"].registry)).prefetch),
               "reason": {code for _, code in AUTH_FAILURE_REASONS} | {"other"},
               "outcome": OUTCOMES | {"other"}, "cache": {"charts", "answers"}}
    for family, labelled in series(second).items():
        for labels in labelled:
            for name, value in labels:
                if name == "dependency":
                    continue        # the readiness checks' names: code appends them (other tests here do too)
                if name == "status":
                    assert re.fullmatch(r"[1-5]\d\d", value), (family, value)
                else:
                    assert value in allowed[name], (family, name, value)
    assert any(("service", UNKNOWN_SERVICE) in labels for labels in series(second)[DURATION_COUNT[:-6]])
    assert ("reason", "untrusted_issuer") in set().union(*series(second)["avh_cds_auth_failures"])
    secured.extensions["avh"].store.dispose()
