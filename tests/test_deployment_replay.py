"""Issue 7's acceptance, end to end: two gunicorn instances on 127.0.0.1 sharing Redis, authentication on.

Needs the security branch (service/security, tests/security_support.py): a token used on one
instance is refused on the other, because the jti replay cache lives in Redis, not in a worker.
"""
import json
import time

import pytest
import redis
import requests

from tests.deployment_support import Gunicorn, avh_bundle, patient_view_request, sample, without_uuids
from tests.security_support import ISS, issuer, token

REDIS_URL = "redis://127.0.0.1:6379/2"
PUBLIC = "https://cds.example.org"   # the address both instances sit behind: every token's aud
SERVICE = "avh-patient-view"
PATH = f"/cds-services/{SERVICE}"


@pytest.fixture
def instances(tmp_path):
    redis.Redis.from_url(REDIS_URL).ping()   # fails loudly when the shared cache is not running
    issuers = tmp_path / "issuers.json"
    issuers.write_text(json.dumps({"issuers": [issuer(fhir_servers=[])]}))
    env = dict(AVH_CDS_AUTH="required", AVH_CDS_ISSUERS_FILE=str(issuers), AVH_CDS_REDIS_URL=REDIS_URL,
               AVH_CDS_PUBLIC_URL=PUBLIC)
    a = Gunicorn(tmp_path / "a.log", **env)
    try:
        b = Gunicorn(tmp_path / "b.log", **env)
    except BaseException:
        a.stop()
        raise
    yield a, b
    assert b.stop() == 0 and a.stop() == 0


def post(instance, body, tok):
    return requests.post(instance.base + PATH, json=body, timeout=10,
                         headers={"Authorization": f"Bearer {tok}", "Connection": "close"})


def test_a_token_used_on_one_instance_is_refused_on_the_other(instances):
    a, b = instances
    body = patient_view_request(avh_bundle("dep-replay-1"))
    tok = token(PATH, aud=PUBLIC + PATH)
    first = post(a, body, tok)
    assert first.status_code == 200 and first.json()["cards"]
    replayed = post(b, body, tok)
    assert replayed.status_code == 401 and replayed.json()["reason"] == "replayed_jti"
    # A fresh token gets the same answer from the other instance.
    second = post(b, body, token(PATH, aud=PUBLIC + PATH))
    assert second.status_code == 200
    assert without_uuids(second.json()) == without_uuids(first.json())

    # A call's histogram sample is recorded once its answer has been sent (service/api/aftersend.py): a scrape may
    # come before that, so wait for the last call's sample before reading the counts.
    metrics_b = _scraped_once_counted(b, status="200")
    assert sample(metrics_b, "avh_cds_auth_failures_total", reason="replayed_jti") == 1
    assert sample(metrics_b, "avh_cds_request_duration_seconds_count", service=SERVICE, status="401") == 1
    assert sample(metrics_b, "avh_cds_request_duration_seconds_count", service=SERVICE, status="200") == 1
    metrics_a = _scraped_once_counted(a, status="200")
    assert sample(metrics_a, "avh_cds_request_duration_seconds_count", service=SERVICE, status="200") == 1
    assert ISS not in metrics_a + metrics_b and tok not in a.output() + b.output()


def test_health_ready_and_metrics_need_no_token_while_cds_calls_do(instances):
    a, _ = instances
    for path in ("/healthz", "/readyz", "/metrics"):
        assert requests.get(a.base + path, timeout=5).status_code == 200, path
    assert requests.get(a.base + "/cds-services", timeout=5).status_code == 401
    assert requests.post(a.base + PATH, json=patient_view_request(avh_bundle()), timeout=5).status_code == 401


def _scraped_once_counted(instance, status: str, wait: float = 10.0) -> str:
    """/metrics of `instance` once it holds a request-duration sample of `status` (or after `wait` s: the caller's
    assertions then say what is missing)."""
    deadline = time.monotonic() + wait
    while True:
        text = requests.get(f"{instance.base}/metrics", timeout=5).text
        if sample(text, "avh_cds_request_duration_seconds_count", service=SERVICE, status=status) or \
                time.monotonic() > deadline:
            return text
        time.sleep(0.05)
