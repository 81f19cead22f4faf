"""An issuer's signing keys: the inline JWK Set, plus the one fetched from its configured jwks_url.

Fetched keys are cached. An unknown kid (key rotation) or a stale cache triggers a re-fetch, but never
more often than once per `refresh_seconds` per issuer, so a caller spraying random kids cannot make
us hammer the EHR. Keys are only ever fetched from the configured jwks_url, never from a token's jku.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from typing import Callable

import requests
import urllib3
from jwt import PyJWK, PyJWKSet, PyJWTError
from jwt.exceptions import PyJWKSetError

from service.httpread import OutOfTime, TooLarge, Watch, read_capped
from service.security.issuers import Issuer, SecurityConfigError
from service.security.signatures import KeyDoesNotFitAlg, SignatureCheck, signature_check

log = logging.getLogger(__name__)
MAX_JWKS_BYTES = 256 * 1024


def _keys_by_kid(jwks: dict) -> dict[str, dict]:
    """kid -> JWK for the usable asymmetric signing keys of a JWK Set (PyJWKSet checks each key)."""
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
        raise PyJWKSetError("not a JWK Set")
    usable = {k.key_id for k in PyJWKSet.from_dict(jwks).keys if k.key_id}
    return {k["kid"]: k for k in jwks["keys"]
            if isinstance(k, dict) and k.get("kid") in usable and k.get("kty") != "oct" and k.get("use", "sig") == "sig"}


FETCH_ERRORS = (requests.RequestException, urllib3.exceptions.HTTPError, TooLarge, OutOfTime, ValueError, TypeError,
                KeyError, RecursionError, PyJWKSetError)


def fetch_keys(session: requests.Session, jwks_url: str, timeout: float) -> dict[str, dict]:
    """kid -> JWK of the usable signing keys a JWK Set URL serves; raises one of FETCH_ERRORS when it cannot.

    The whole fetch, headers included, lies within `timeout`: the socket is cut when it ends, and the body is
    streamed with a byte cap (a huge or trickling JWK Set costs neither memory nor a thread for long)."""
    watch = Watch()
    cutter = threading.Timer(timeout, watch.cut)
    cutter.start()
    try:
        deadline = time.monotonic() + timeout
        with watch, session.get(jwks_url, timeout=timeout, allow_redirects=False,
                                headers={"Accept": "application/json"}, stream=True) as response:
            try:
                if response.status_code != 200:       # redirects included: never followed
                    raise ValueError(f"HTTP {response.status_code}")
                body = read_capped(response, MAX_JWKS_BYTES, deadline, timeout)
            finally:
                watch.detach()
        return _keys_by_kid(json.loads(body))
    finally:
        cutter.cancel()


class KeySet:
    def __init__(self, issuer: Issuer, session: requests.Session, refresh_seconds: float, cache_seconds: float,
                 timeout: float = 2.0, clock: Callable[[], float] = time.monotonic):
        self.issuer, self.session, self.timeout, self.clock = issuer, session, timeout, clock
        self.refresh_seconds, self.cache_seconds = refresh_seconds, cache_seconds
        self._inline: dict[str, dict] = {}
        if issuer.jwks is not None:
            try:
                self._inline = _keys_by_kid(issuer.jwks)
            except PyJWKSetError as exc:
                raise SecurityConfigError(f"issuer {issuer.iss}: inline jwks has no usable key ({exc})") from exc
        self._fetched: dict[str, dict] = {}
        self._fetched_at: float | None = None
        self._last_attempt: float | None = None
        self._bound: dict[tuple[str, str], tuple[dict, SignatureCheck]] = {}     # (kid, alg) -> (JWK, check)
        self._lock = threading.Lock()

    @property
    def inline_kids(self) -> frozenset[str]:
        """The kids of the usable keys given inline in the issuers file."""
        return frozenset(self._inline)

    def key(self, kid: str, alg: str) -> SignatureCheck | None:
        """The signature check of the key for kid, bound to alg (built once); None when no such key exists or it does
        not fit alg."""
        jwk = self._inline.get(kid) or self._current().get(kid)
        if jwk is None and self._may_fetch():
            jwk = self._refresh().get(kid)
        if jwk is None or jwk.get("alg", alg) != alg:
            return None
        bound = self._bound.get((kid, alg))
        # Bound to this very JWK: a check another thread built of kid's key before a refresh replaced that key
        # (and emptied _bound) must not answer for the new key, nor pass the revoked key's tokens.
        if bound is None or bound[0] is not jwk:
            try:
                bound = jwk, signature_check(PyJWK(jwk, algorithm=alg))
            except (PyJWTError, KeyDoesNotFitAlg):      # the key does not fit alg (RS384 on an EC key, ES384 on P-256)
                return None
            self._bound[(kid, alg)] = bound
        return bound[1]

    def _current(self) -> dict[str, dict]:
        stale = self._fetched_at is None or self.clock() - self._fetched_at > self.cache_seconds
        if stale and self._may_fetch():
            return self._refresh()
        return self._fetched

    def _may_fetch(self) -> bool:
        return bool(self.issuer.jwks_url) and (
            self._last_attempt is None or self.clock() - self._last_attempt >= self.refresh_seconds)

    def _refresh(self) -> dict[str, dict]:
        with self._lock:
            if not self._may_fetch():        # another thread fetched while we waited
                return self._fetched
            self._last_attempt = self.clock()
            try:
                self._fetched = fetch_keys(self.session, self.issuer.jwks_url, self.timeout)
                self._fetched_at = self._last_attempt
                self._bound = {}
                log.info("fetched JWK Set", extra={"fields": {"iss": self.issuer.iss, "keys": len(self._fetched)}})
            except FETCH_ERRORS as exc:
                # Keep the keys we had: an EHR hiccup must not lock out its still-valid keys.
                log.warning("JWK Set fetch failed", extra={"fields": {"iss": self.issuer.iss,
                                                                      "reason": type(exc).__name__}})
            return self._fetched
