"""Verification of the JWT a CDS client sends (CDS Hooks 2.0, "Trusting CDS Clients").

Order matters: everything that needs no key and no network (alg, kid, iss, jku) is checked before a
key is looked up, so a forged or foreign token never makes us fetch anything.
"""
from __future__ import annotations

import base64
import time
from dataclasses import dataclass

import jwt
import orjson
import requests

from service.security.issuers import Issuer
from service.security.keys import KeySet
from service.security.replay import Claim, IssuedBeforeStart, ReplayCache

# Never accepted, whatever the configuration says: "none" and the symmetric (shared-secret) algorithms.
FORBIDDEN_ALGORITHMS = frozenset({"none", "HS256", "HS384", "HS512"})


class AuthFailed(Exception):
    """The caller is not authenticated. The reason is for the log only; the client sees a bare 401."""


@dataclass(frozen=True)
class Caller:
    issuer: Issuer
    jti: str
    tenant: str | None


class TokenVerifier:
    def __init__(self, issuers: dict[str, Issuer], algorithms: list[str], replay: ReplayCache,
                 session: requests.Session, *, clock_skew: int, max_lifetime: int,
                 jwks_refresh_seconds: float, jwks_cache_seconds: float):
        self.issuers, self.algorithms, self.replay = issuers, list(algorithms), replay
        self.clock_skew, self.max_lifetime = clock_skew, max_lifetime
        self.keys = {iss: KeySet(issuer, session, jwks_refresh_seconds, jwks_cache_seconds)
                     for iss, issuer in issuers.items()}

    def begin(self, authorization: str | None, audience: str) -> tuple[Caller, Claim]:
        """Everything but the replay cache's answer: the token's signature and claims are checked and its jti is
        sent to the replay cache. The caller is authenticated only once `confirm` has returned; the claim must be
        confirmed on every path (it may hold a Redis connection)."""
        try:
            return self._begin(authorization, audience)
        except (TypeError, ValueError, KeyError, OverflowError) as exc:
            # A header or claim of a type the checks in _verify do not foresee (a list where a string belongs,
            # ...): the token is malformed, and the caller gets a 401, never a 500.
            raise AuthFailed(f"malformed token ({type(exc).__name__})") from None

    @staticmethod
    def confirm(claim: Claim) -> None:
        """The replay cache's answer: AuthFailed when the jti was used before (or may have been)."""
        try:
            if not claim.first_use():
                raise AuthFailed("jti replayed")
        except IssuedBeforeStart:
            raise AuthFailed("jti unknown: the token was issued before the replay cache last started") from None

    def _begin(self, authorization: str | None, audience: str) -> tuple[Caller, Claim]:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthFailed("no bearer token")
        token = token.strip()
        try:
            header, unverified = _peek(token)
        except ValueError as exc:
            raise AuthFailed(f"malformed token ({type(exc).__name__})") from None
        alg, kid = header.get("alg"), header.get("kid")
        if header.get("typ") is not None and str(header["typ"]).upper() != "JWT":
            raise AuthFailed("malformed token (typ is not JWT)")   # CDS Hooks fixes typ to "JWT"
        if alg not in self.algorithms:
            raise AuthFailed(f"alg {str(alg)[:20]!r} not allowed")
        if not isinstance(kid, str) or not kid:
            raise AuthFailed("no kid in the token header")
        issuer = self.issuers.get(unverified.get("iss")) if isinstance(unverified.get("iss"), str) else None
        if issuer is None:
            raise AuthFailed("iss not trusted")
        jku = header.get("jku")
        if jku is not None and (not isinstance(jku, str) or jku not in issuer.jku):
            raise AuthFailed("jku not allowed for this issuer")
        key = self.keys[issuer.iss].key(kid, alg)
        if key is None:
            raise AuthFailed(f"no key {kid[:64]!r} for alg {alg} from this issuer")
        try:
            claims = jwt.decode(token, key=key, algorithms=[alg], audience=audience, issuer=issuer.iss,
                                leeway=self.clock_skew,
                                options={"require": ["iss", "aud", "exp", "iat", "jti"], "verify_jti": True})
        except jwt.PyJWTError as exc:
            raise AuthFailed(f"{type(exc).__name__}: {str(exc)[:120]}") from None
        if int(claims["exp"]) - int(claims["iat"]) > self.max_lifetime:
            raise AuthFailed("token lifetime longer than allowed")
        if not isinstance(claims["jti"], str) or not claims["jti"]:
            raise AuthFailed("malformed token (jti is not a non-empty string)")
        tenant = claims.get("tenant")
        if tenant is not None and not isinstance(tenant, str):
            raise AuthFailed("malformed token (tenant is not a string)")
        if issuer.tenants and tenant not in issuer.tenants:
            raise AuthFailed("tenant not allowed for this issuer")
        ttl = int(claims["exp"]) + self.clock_skew - int(time.time()) + 1
        claim = self.replay.claim(issuer.iss, claims["jti"], ttl, issued_at=claims["iat"])
        return Caller(issuer=issuer, jti=claims["jti"], tenant=tenant), claim


def _peek(token: str) -> tuple[dict, dict]:
    """The header and claims of a token, unverified: they only choose the issuer and the key. jwt.decode then
    parses the token once, strictly, and verifies all of it (a token read here otherwise than PyJWT reads it
    fails there). PyJWT's own unverified parse checks every base64 character in Python: ~50 µs a call."""
    header, payload, _ = token.split(".")
    return _segment(header), _segment(payload)


def _segment(segment: str) -> dict:
    value = orjson.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value
