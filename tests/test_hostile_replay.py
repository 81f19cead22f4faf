"""Hostile review, replayed tokens (issue 15, items 10 and 11): a token used once must stay used when the
shared replay cache (a real Redis, db 9 of 127.0.0.1:6379) forgets, and an unreachable cache answers a 503
the client can act on. Each test's docstring names the attack."""
import time

import pytest
import redis

from service.security.replay import REMEMBERING_SINCE
from tests.deployment_support import Gunicorn
from tests.ports import refused_port
from tests.security_support import INVOKE, bearer, hook_request, make_app, token

REDIS_URL = "redis://127.0.0.1:6379/9"      # this test file's own database index


@pytest.fixture
def redis_db():
    db = redis.Redis.from_url(REDIS_URL)
    try:
        db.flushdb()
    except redis.ConnectionError as exc:
        pytest.fail(f"Redis for the replay tests is not reachable at 127.0.0.1:6379 ({exc})", pytrace=False)
    yield db
    db.flushdb()
    db.close()


@pytest.fixture
def client(tmp_path, redis_db):
    return make_app(tmp_path, AVH_CDS_REDIS_URL=REDIS_URL).test_client()


def _call(client, tok):
    return client.post(INVOKE, json=hook_request(), headers=bearer(tok))


def test_a_token_used_before_redis_forgot_is_refused_after(client, redis_db):
    """Attack: Redis restarts without persistence (as docker-compose ran it), or is flushed, and forgets every
    jti it saw; a token already used was accepted again."""
    now = int(time.time())
    redis_db.set(REMEMBERING_SINCE, now - 60)           # a Redis that has been running for a minute
    used = token(iat=now - 5, exp=now + 300)
    assert _call(client, used).status_code == 200
    assert _call(client, used).json["reason"] == "replayed_jti"
    redis_db.flushdb()                                   # what a restart without persistence leaves
    replayed = _call(client, used)
    assert replayed.status_code == 401 and replayed.json["reason"] == "issued_before_replay_cache"
    fresh = token(iat=int(time.time()) + 1, exp=int(time.time()) + 300)   # issued after Redis began again
    assert _call(client, fresh).status_code == 200
    assert _call(client, fresh).json["reason"] == "replayed_jti"


def test_redis_unreachable_is_a_503_with_retry_after(tmp_path):
    """Attack (on availability): the replay cache is down; the 503 replay_cache_unavailable carried no
    Retry-After, so a client following the contract could not tell when to retry."""
    with refused_port() as refused:
        client = make_app(tmp_path, AVH_CDS_REDIS_URL=f"redis://127.0.0.1:{refused}/9").test_client()
        response = _call(client, token())
    assert response.status_code == 503 and response.json["error"] == "replay_cache_unavailable"
    assert int(response.headers["Retry-After"]) > 0 and response.json["retryAfterSeconds"] > 0


def _warnings(log: str) -> list[str]:
    return [line for line in log.splitlines() if "[WARNING]" in line and "replay cache" in line]


def test_several_workers_without_a_shared_replay_cache_warn_at_start(tmp_path):
    """Attack: with two workers and neither Redis nor the SQLite replay file, a token replayed to the other
    worker is accepted; start-up said so only at INFO."""
    server = Gunicorn(tmp_path / "alone.log", AVH_CDS_AUTH="required", AVH_CDS_WORKERS="2")
    server.stop()
    assert _warnings(server.output())
    shared = Gunicorn(tmp_path / "shared.log", AVH_CDS_AUTH="required", AVH_CDS_WORKERS="2",
                      AVH_CDS_REPLAY_DB=str(tmp_path / "replay.sqlite3"))
    shared.stop()
    assert not _warnings(shared.output())
