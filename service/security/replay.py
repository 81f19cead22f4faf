"""Replay protection: a token's jti may be used once within the token's lifetime.

In-process by default (one cache per worker process); shared Redis (SET NX EX) when
AVH_CDS_REDIS_URL is set, so every worker and host refuses the same replayed token.
"""
from __future__ import annotations

import hashlib
import threading
import time
from typing import Protocol


class ReplayStoreUnavailable(Exception):
    """The shared replay store cannot be asked: refuse the call (503) rather than risk a replay."""


def _key(iss: str, jti: str) -> str:
    return "avh-cds:jti:" + hashlib.sha256(f"{iss}\n{jti}".encode()).hexdigest()


class ReplayCache(Protocol):
    def first_use(self, iss: str, jti: str, ttl_seconds: int) -> bool:
        """Record (iss, jti) for ttl_seconds; False when it was already recorded."""


class MemoryReplayCache:
    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()
        self._next_purge = 0.0

    def first_use(self, iss: str, jti: str, ttl_seconds: int) -> bool:
        key, now = _key(iss, jti), self.clock()
        with self._lock:
            if now >= self._next_purge:
                self._seen = {k: t for k, t in self._seen.items() if t > now}
                self._next_purge = now + 60
            if self._seen.get(key, 0.0) > now:
                return False
            self._seen[key] = now + ttl_seconds
            return True


class RedisReplayCache:
    def __init__(self, url: str):
        import redis
        self._redis = redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        self._errors = redis.RedisError

    def first_use(self, iss: str, jti: str, ttl_seconds: int) -> bool:
        try:
            return bool(self._redis.set(_key(iss, jti), 1, nx=True, ex=max(1, ttl_seconds)))
        except self._errors as exc:
            raise ReplayStoreUnavailable(type(exc).__name__) from exc


def replay_cache(redis_url: str) -> ReplayCache:
    return RedisReplayCache(redis_url) if redis_url else MemoryReplayCache()
