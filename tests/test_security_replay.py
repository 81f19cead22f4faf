"""jti replay cache: in-process, SQLite shared by the workers of one host, Redis shared by all hosts."""
import multiprocessing
import os
import uuid

import pytest
import redis

from service.security.replay import SqliteReplayCache
from tests.ports import refused_port
from tests.security_support import INVOKE, bearer, hook_request, issuer, loopback_only, make_app, token

__all__ = ["loopback_only"]
REDIS_URL = "redis://127.0.0.1:6379/1"


@pytest.fixture
def shared_redis():
    client = redis.Redis.from_url(REDIS_URL)
    client.ping()
    before = set(client.keys("avh-cds:jti:*"))
    yield client
    created = set(client.keys("avh-cds:jti:*")) - before
    if created:
        client.delete(*created)


def test_replay_is_refused_across_app_instances_sharing_redis(tmp_path, shared_redis):
    first = make_app(tmp_path, AVH_CDS_REDIS_URL=REDIS_URL).test_client()
    second = make_app(tmp_path, AVH_CDS_REDIS_URL=REDIS_URL).test_client()
    tok = token()
    assert first.post(INVOKE, json=hook_request(), headers=bearer(tok)).status_code == 200
    assert second.post(INVOKE, json=hook_request(), headers=bearer(tok)).status_code == 401
    assert second.post(INVOKE, json=hook_request(), headers=bearer(token())).status_code == 200
    ttl = max(shared_redis.ttl(k) for k in shared_redis.keys("avh-cds:jti:*"))
    assert 0 < ttl <= 300 + 30 + 1                      # kept for the token's lifetime plus the clock skew


def test_unreachable_redis_refuses_with_503_rather_than_risking_a_replay(tmp_path):
    with refused_port() as refused:
        client = make_app(tmp_path, AVH_CDS_REDIS_URL=f"redis://127.0.0.1:{refused}/0").test_client()
        response = client.post(INVOKE, json=hook_request(), headers=bearer(token()))
    assert response.status_code == 503 and response.json["error"] == "replay_cache_unavailable"


def test_each_issuer_has_its_own_jti_space(tmp_path):
    other = issuer(iss="https://other-ehr.test")
    client = make_app(tmp_path, [issuer(), other]).test_client()
    jti = str(uuid.uuid4())
    assert client.post(INVOKE, json=hook_request(), headers=bearer(token(jti=jti))).status_code == 200
    other_token = token(jti=jti, iss="https://other-ehr.test")
    assert client.post(INVOKE, json=hook_request(), headers=bearer(other_token)).status_code == 200


def test_replay_is_refused_across_app_instances_sharing_a_sqlite_file(tmp_path):
    path = str(tmp_path / "replay.sqlite3")
    first = make_app(tmp_path, AVH_CDS_REPLAY_DB=path).test_client()
    second = make_app(tmp_path, AVH_CDS_REPLAY_DB=path).test_client()
    tok = token()
    assert first.post(INVOKE, json=hook_request(), headers=bearer(tok)).status_code == 200
    assert second.post(INVOKE, json=hook_request(), headers=bearer(tok)).status_code == 401


def test_sqlite_entry_can_be_reused_only_after_it_expires(tmp_path):
    cache = SqliteReplayCache(str(tmp_path / "replay.sqlite3"))
    assert cache.first_use("iss", "a", 300) and not cache.first_use("iss", "a", 300)
    assert cache.first_use("iss", "b", -1)                  # already expired when recorded
    assert cache.first_use("iss", "b", 300)


def _race(path, jti, results):
    results.put(SqliteReplayCache(path).first_use("iss", jti, 300))


def test_sqlite_lets_exactly_one_of_several_processes_use_a_jti(tmp_path):
    path, jti = str(tmp_path / "replay.sqlite3"), str(uuid.uuid4())
    SqliteReplayCache(path)
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    workers = [context.Process(target=_race, args=(path, jti, results)) for _ in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(10)
    assert sorted(results.get(timeout=5) for _ in workers) == [False, False, False, True]


def _use_then_die(path, jti):
    SqliteReplayCache(path).first_use("iss", jti, 300)
    os._exit(0)                                     # no clean shutdown: as a killed worker


def test_sqlite_does_not_flush_to_disk_per_token_yet_a_killed_worker_loses_nothing(tmp_path):
    path, jti = str(tmp_path / "replay.sqlite3"), str(uuid.uuid4())
    cache = SqliteReplayCache(path)
    assert cache._db().execute("PRAGMA synchronous").fetchone() == (1,)     # NORMAL: no fsync per commit
    worker = multiprocessing.get_context("spawn").Process(target=_use_then_die, args=(path, jti))
    worker.start()
    worker.join(10)
    assert worker.exitcode == 0 and not cache.first_use("iss", jti, 300)
