"""The Redis replay check sent before the body checks and its reply read after them (docs/security.md,
"Replay"): a replayed jti is still a bare 401 with no answer, whatever the body; the thread's connection that
carries the check has no reply left on it after any path; Redis lost between the two halves is a 503, and a
connection the server closed meanwhile (a restart) is replaced without failing a call."""
import multiprocessing
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


def _connection(app):
    """This thread's connection to Redis (the one the test client's calls use)."""
    return app.extensions["avh_security"].verifier.replay._connection()


def _nothing_left(app) -> bool:
    """No reply waits unread on this thread's connection (or it was dropped)."""
    connection = _connection(app)
    return connection._sock is None or not connection.can_read()


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
    assert _nothing_left(app)


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
    assert _nothing_left(app)


def test_an_exception_in_the_body_checks_gives_the_connection_back_with_no_reply_left_on_it(app, monkeypatch):
    def broken(*args):
        raise RuntimeError("a bug in the limits")
    monkeypatch.setattr("service.security.check_limits", broken)
    app.testing = False
    client, used = app.test_client(), token()
    assert client.post(INVOKE, json=hook_request(), headers=bearer(used)).status_code == 500
    assert _nothing_left(app)
    monkeypatch.undo()
    # The reply of that check was read: the next call on the same connection reads its own reply, not it.
    assert client.post(INVOKE, json=hook_request(), headers=bearer(used)).json["reason"] == "replayed_jti"
    assert client.post(INVOKE, json=hook_request(), headers=bearer(token())).status_code == 200
    assert _nothing_left(app)


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
    assert connection._sock is None
    monkeypatch.undo()
    assert cache.claim("https://ehr.test", str(uuid.uuid4()), 60).first_use()     # connected again


def test_a_connection_the_server_closed_is_replaced_before_the_check_is_sent(app, redis_db):
    """Redis restarted (or a CLIENT KILL) between two calls: the thread's connection is dead. It is found so
    before the check is sent, as redis-py's pool found it, and the call is answered, not refused with a 503."""
    client = app.test_client()
    assert client.post(INVOKE, json=hook_request(), headers=bearer(token())).status_code == 200
    connection = _connection(app)
    connection.send_command("CLIENT", "ID")
    redis_db.client_kill_filter(_id=connection.read_response())
    assert client.post(INVOKE, json=hook_request(), headers=bearer(token())).status_code == 200
    assert _nothing_left(app)


def test_redis_having_forgotten_the_script_is_answered_by_sending_the_script(redis_db):
    cache, jti = RedisReplayCache(REDIS_URL), str(uuid.uuid4())
    redis_db.script_flush()
    assert cache.claim("https://ehr.test", jti, 60).first_use()
    redis_db.script_flush()
    assert not cache.claim("https://ehr.test", jti, 60).first_use()
    assert 0 < redis_db.ttl(replay._key("https://ehr.test", jti)) <= 60


def _claim_in_forked_worker(cache, parent_connection, results):
    connection = cache._connection()
    results.put((connection is not parent_connection, cache.claim("https://ehr.test", str(uuid.uuid4()), 60).first_use()))


def test_a_forked_worker_makes_its_own_connection(redis_db):
    """A gunicorn worker forked after the app was made must not send on its parent's socket."""
    cache = RedisReplayCache(REDIS_URL)
    assert cache.claim("https://ehr.test", str(uuid.uuid4()), 60).first_use()
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    # A daemon, killed if it hangs (a fork of a multi-threaded test process can block on a lock another thread
    # held): a child left running would make multiprocessing wait for it, forever, when the test session exits.
    worker = context.Process(target=_claim_in_forked_worker, args=(cache, cache._connection(), results), daemon=True)
    worker.start()
    worker.join(10)
    if worker.exitcode is None:
        worker.kill()
        worker.join()
        pytest.fail("the forked worker did not finish within 10 s")
    assert worker.exitcode == 0 and results.get(timeout=5) == (True, True)
    assert cache.claim("https://ehr.test", str(uuid.uuid4()), 60).first_use()
