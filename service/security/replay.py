"""Replay protection: a token's jti may be used once within the token's lifetime.

In-process by default (one cache per worker process); a SQLite file when AVH_CDS_REPLAY_DB is set
(shared by the workers of one host); shared Redis (SET NX EX) when AVH_CDS_REDIS_URL is set, so every
worker and host refuses the same replayed token.
"""
from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
import time
from contextlib import closing
from typing import Protocol

from service.security.issuers import SecurityConfigError


class ReplayStoreUnavailable(Exception):
    """The shared replay store cannot be asked: refuse the call (503) rather than risk a replay."""


class IssuedBeforeStart(Exception):
    """The token was issued before the replay store began remembering (Redis restarted or was flushed): it may
    have been used already, in the time the store has forgotten."""


def _key(iss: str, jti: str) -> str:
    return "avh-cds:jti:" + hashlib.sha256(f"{iss}\n{jti}".encode()).hexdigest()


class Claim(Protocol):
    def first_use(self) -> bool:
        """False when (iss, jti) was already recorded. Called exactly once, on every path: it gives back what the
        claim holds (a Redis connection)."""


class ReplayCache(Protocol):
    def claim(self, iss: str, jti: str, ttl_seconds: int, issued_at: float | None = None) -> Claim:
        """Record (iss, jti) for ttl_seconds; the claim says whether this was its first use. `issued_at` (the
        token's iat) lets a store that can forget (Redis) refuse what was issued before it last started
        remembering. A store may answer later than it is asked (Redis: the reply is read by Claim.first_use)."""


class Decided:
    """The claim of a store that answers at once (in-process, SQLite)."""

    def __init__(self, first: bool):
        self._first = first

    def first_use(self) -> bool:
        return self._first


class AnsweringAtOnce:
    def claim(self, iss: str, jti: str, ttl_seconds: int, issued_at: float | None = None) -> Decided:
        return Decided(self.first_use(iss, jti, ttl_seconds))


class MemoryReplayCache(AnsweringAtOnce):
    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()
        self._next_purge = 0.0

    def first_use(self, iss: str, jti: str, ttl_seconds: int, issued_at: float | None = None) -> bool:
        key, now = _key(iss, jti), self.clock()
        with self._lock:
            if now >= self._next_purge:
                self._seen = {k: t for k, t in self._seen.items() if t > now}
                self._next_purge = now + 60
            if self._seen.get(key, 0.0) > now:
                return False
            self._seen[key] = now + ttl_seconds
            return True


# One round trip: the moment this Redis began remembering (set by the first call that finds it unset: after a
# restart without persistence, or a FLUSH, it is gone with the jtis), the token's iat against it, then SET NX EX.
FIRST_USE = """
local since = redis.call('GET', KEYS[1])
if not since then
  redis.call('SET', KEYS[1], ARGV[1])
  since = ARGV[1]
end
if tonumber(ARGV[2]) < tonumber(since) then
  return -1
end
if redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[3]) then
  return 1
end
return 0
"""
REMEMBERING_SINCE = "avh-cds:replay-since"


def _bulk_strings(values) -> bytes:
    """Values as RESP bulk strings (str or int)."""
    out = []
    for value in values:
        data = str(value).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def _command_head(command: str, script: str) -> bytes:
    """EVAL/EVALSHA `script` 2 REMEMBERING_SINCE: the RESP array of the 8 parts, up to the jti's key."""
    return b"*8\r\n" + _bulk_strings([command, script, 2, REMEMBERING_SINCE])


class RedisReplayCache:
    """SET NX EX per token. Redis as commonly run keeps nothing across a restart, so it records when it began
    remembering (REMEMBERING_SINCE, whole seconds) and refuses a token issued before that: such a token may have
    been used in the time it forgot. Tokens live minutes, so after a restart only the few calls in flight then
    are refused (401; the EHR's next call carries a new token).

    The script is sent as soon as the token's signature and claims are checked, and its reply is read later in
    the call (PendingRedisClaim): the worker's thread goes on checking the body while Redis answers, instead of
    sleeping in recv and waking with cold caches (~0.1-0.15 ms of CPU a call).

    Each thread of each worker process has its own connection (redis-py's Connection: the URL's host, port,
    database, password and TLS, the timeouts), used by this thread alone, so a call takes no lock and keeps no
    pool's books: the pool's share of the claim was ~0.04 ms a call. The pool is kept for start-up and the
    readiness probe."""

    def __init__(self, url: str):
        import redis
        self._redis = redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        self._errors = redis.RedisError
        self._no_script = redis.exceptions.NoScriptError
        self._lost = (redis.ConnectionError, redis.TimeoutError, OSError)
        self._local = threading.local()
        sha = hashlib.sha1(FIRST_USE.encode()).hexdigest()
        # The command packed here, not by redis-py's generic encoder (a third of the client's CPU for it): the
        # constant head once, the key and the three numbers per call.
        self._evalsha = _command_head("EVALSHA", sha)
        self._eval = _command_head("EVAL", FIRST_USE)
        try:
            self._mark_start()
        except self._errors:
            pass                    # Redis down at start: the first call that reaches it marks it

    def _mark_start(self) -> None:
        """Record when this Redis began remembering, unless it already has: done at start-up and by each readiness
        probe too, so that a token minted just before the first call after a (re)start is not refused for being a
        second older than that call."""
        self._redis.set(REMEMBERING_SINCE, int(time.time()), nx=True)

    def ping(self) -> None:
        """Raises when Redis cannot be reached (GET /readyz)."""
        self._mark_start()

    def _connection(self):
        """This thread's connection, made on its first claim (and again in a forked worker: a socket must not be
        shared across a fork)."""
        local = self._local
        if getattr(local, "pid", None) != os.getpid():
            pool = self._redis.connection_pool
            local.connection, local.pid = pool.connection_class(**pool.connection_kwargs), os.getpid()
        return local.connection

    def _stale(self, connection) -> bool:
        """As redis-py's pool checks a connection before handing it out: the server closed it (a restart, a
        CLIENT KILL) or something is there to read before we have asked."""
        try:
            return connection.can_read()
        except self._lost:
            return True

    def claim(self, iss: str, jti: str, ttl_seconds: int, issued_at: float | None = None) -> "PendingRedisClaim":
        now = int(time.time())
        operands = (_key(iss, jti), now, int(now if issued_at is None else issued_at), max(1, ttl_seconds))
        connection = self._connection()
        try:
            connection.connect()                # when it is not: Redis down is a 503 after one try
            if self._stale(connection):
                connection.disconnect()         # sending connects it again
            connection.send_packed_command([self._evalsha + _bulk_strings(operands)])
        except BaseException as exc:
            connection.disconnect()
            if isinstance(exc, self._errors):
                raise ReplayStoreUnavailable(type(exc).__name__) from exc
            raise
        return PendingRedisClaim(self, connection, operands)


class PendingRedisClaim:
    """The script sent on this thread's connection, its reply not yet read. first_use() reads it (and
    disconnects first if anything went wrong: a half-read reply must not reach the next call)."""

    def __init__(self, cache: RedisReplayCache, connection, operands: tuple):
        self._cache, self._connection, self._operands = cache, connection, operands

    def first_use(self) -> bool:
        cache, connection = self._cache, self._connection
        try:
            try:
                outcome = connection.read_response()
            except cache._no_script:            # Redis restarted or flushed its scripts: send the script itself
                connection.send_packed_command([cache._eval + _bulk_strings(self._operands)])
                outcome = connection.read_response()
        except BaseException as exc:
            connection.disconnect()
            if isinstance(exc, cache._errors):
                raise ReplayStoreUnavailable(type(exc).__name__) from exc
            raise
        if outcome == -1:
            raise IssuedBeforeStart()
        return outcome == 1


class SqliteReplayCache(AnsweringAtOnce):
    """One row per (iss, jti) until it expires; the upsert is a single atomic statement across processes."""
    PURGE_EVERY = 500

    def __init__(self, path: str):
        self.path = path
        self._local = threading.local()
        self._calls = 0
        try:
            with closing(self._connect()) as db:
                db.execute("CREATE TABLE IF NOT EXISTS jti (key TEXT PRIMARY KEY, expires REAL NOT NULL)")
        except sqlite3.Error as exc:
            raise SecurityConfigError(f"AVH_CDS_REPLAY_DB {path}: {exc}") from exc

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=2.0, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        # No disk flush per token (WAL with NORMAL: a commit survives any process crash; only a power cut or
        # kernel crash can lose the last ones). The cost of FULL was one fsync per call, most of p99 at c=4;
        # the risk of NORMAL is that a token used in the last instant before such a crash is accepted once
        # more within what is left of its lifetime (exp: 5 minutes at most).
        db.execute("PRAGMA synchronous=NORMAL")
        return db

    def _db(self) -> sqlite3.Connection:
        """One connection per thread and process (a connection must not cross a gunicorn fork)."""
        if getattr(self._local, "pid", None) != os.getpid():
            self._local.db, self._local.pid = self._connect(), os.getpid()
        return self._local.db

    def first_use(self, iss: str, jti: str, ttl_seconds: int, issued_at: float | None = None) -> bool:
        now = time.time()
        try:
            db = self._db()
            stored = db.execute("INSERT INTO jti VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET expires = excluded.expires "
                                "WHERE jti.expires <= ?", (_key(iss, jti), now + ttl_seconds, now)).rowcount == 1
            self._calls += 1
            if self._calls % self.PURGE_EVERY == 0:
                db.execute("DELETE FROM jti WHERE expires <= ?", (now,))
            return stored
        except sqlite3.Error as exc:
            raise ReplayStoreUnavailable(type(exc).__name__) from exc


def replay_cache(redis_url: str, sqlite_path: str) -> ReplayCache:
    if redis_url:
        return RedisReplayCache(redis_url)
    return SqliteReplayCache(sqlite_path) if sqlite_path else MemoryReplayCache()
