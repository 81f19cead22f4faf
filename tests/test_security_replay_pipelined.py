"""The Redis replay check sent before the body checks and its reply read after them (docs/security.md,
"Replay"): a replayed jti is still a bare 401 with no answer, whatever the body; the connection that carries
the check goes back to the pool on every path; Redis lost between the two halves is a 503."""
import uuid

import pytest
import redis

from service.security import replay
from service.security.replay import RedisReplayCache, ReplayStoreUnavailable
from tests.security_support import FHIR, INVOKE, bearer, hook_request, make_app, token

REDIS_URL = "redis://127.0.0.1:6379/8"      # this test file's own database index


@pytest.fixture
def redis_db():
    db = redis.Redis.from_url(REDIS_URL)
    db.flushdb()
    yield db
    db.flushdb()
    db.close()


@pytest.fixture
def app(tmp_path, redis_db):
    return make_app(tmp_path, AVH_CDS_REDIS_URL=REDIS_URL)


def _pool(app):
    return app.extensions["avh_security"].verifier.replay._redis.connection_pool


def _evaluations(app, monkeypatch) -> list:
    """Counts the calls that reached the route (the prefetch read, before any answer is computed)."""
    kind = type(app.extensions["avh"].prefetch)
    reached, resolve = [], kind.resolve
    monkeypatch.setattr(kind, "resolve", lambda *a, **k: reached.append(1) or resolve(*a, **k))
    return reached


def test_a_replayed_jti_is_a_bare_401_and_no_answer_is_computed(app, monkeypatch):
    client, reached = app.test_client(), _evaluations(app, monkeypatch)
    used = token()
    assert client.post(INVOKE, json=hook_request(), headers=bearer(used)).status_code == 200
    replayed = client.post(INVOKE, json=hook_request(), headers=bearer(used))
    assert replayed.status_code == 401 and replayed.json["reason"] == "replayed_jti"
    assert "cards" not in replayed.json and len(reached) == 1
    assert not _pool(app)._in_use_connections


@pytest.mark.parametrize("refused_body", [
    {"data": b"<xml/>", "content_type": "application/xml"},                         # 415 for a fresh token
    {"json": hook_request(fhir_server="https://elsewhere.example/fhir")},            # 403 for a fresh token
])
def test_a_replayed_jti_is_refused_with_401_whatever_the_body(app, refused_body):
    client, used = app.test_client(), token()
    assert client.post(INVOKE, json=hook_request(fhir_server=FHIR), headers=bearer(used)).status_code == 200
    fresh = client.post(INVOKE, headers=bearer(token()), **refused_body)
    assert fresh.status_code in {403, 415}
    replayed = client.post(INVOKE, headers=bearer(used), **refused_body)
    assert replayed.status_code == 401 and replayed.json["reason"] == "replayed_jti"
    assert not _pool(app)._in_use_connections


def test_an_exception_in_the_body_checks_gives_the_connection_back_with_no_reply_left_on_it(app, monkeypatch):
    def broken(*args):
        raise RuntimeError("a bug in the limits")
    monkeypatch.setattr("service.security.check_limits", broken)
    app.testing = False
    client, used = app.test_client(), token()
    assert client.post(INVOKE, json=hook_request(), headers=bearer(used)).status_code == 500
    assert not _pool(app)._in_use_connections
    monkeypatch.undo()
    # The reply of that check was read: the next call on the same connection reads its own reply, not it.
    assert client.post(INVOKE, json=hook_request(), headers=bearer(used)).json["reason"] == "replayed_jti"
    assert client.post(INVOKE, json=hook_request(), headers=bearer(token())).status_code == 200
    assert len(_pool(app)._available_connections) == 1 and not _pool(app)._in_use_connections


def test_redis_lost_between_sending_the_check_and_reading_it_is_a_503_and_the_connection_is_dropped(redis_db,
                                                                                                   monkeypatch):
    cache = RedisReplayCache(REDIS_URL)
    claim = cache.claim("https://ehr.test", str(uuid.uuid4()), 60)
    connection = claim._connection

    def lost(*args, **kwargs):
        raise redis.ConnectionError("Connection closed by server.")
    monkeypatch.setattr(connection, "read_response", lost)
    with pytest.raises(ReplayStoreUnavailable):
        claim.first_use()
    pool = cache._redis.connection_pool
    assert not pool._in_use_connections and connection._sock is None
    monkeypatch.undo()
    assert cache.claim("https://ehr.test", str(uuid.uuid4()), 60).first_use()     # connected again


def test_redis_having_forgotten_the_script_is_answered_by_sending_the_script(redis_db):
    cache, jti = RedisReplayCache(REDIS_URL), str(uuid.uuid4())
    redis_db.script_flush()
    assert cache.claim("https://ehr.test", jti, 60).first_use()
    redis_db.script_flush()
    assert not cache.claim("https://ehr.test", jti, 60).first_use()
    assert 0 < redis_db.ttl(replay._key("https://ehr.test", jti)) <= 60
