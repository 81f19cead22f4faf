"""Who may open the governance page (docs/governance.md): its own credential, AVH_CDS_GOVERNANCE_TOKEN, not the
EHR's JWTs. Sent as `Authorization: Bearer <token>`, or as the password of HTTP Basic (any user name) so that a
committee member's browser can ask for it. Compared in constant time; never logged.

With AVH_CDS_AUTH=off (development) and no credential sent, the page is open but shows no comments. With auth
required, no valid credential is a 401, and so is every request when no token is configured. The credential is read
whatever AVH_CDS_AUTH says (with auth off the CDS routes read no Authorization at all): a wrong one is a 401, and so
is a malformed one (`malformed_credential`, naming what is wrong), never taken for none.

An address (client_address: behind trusted proxies, the one they saw) that sent WRONG_TRIES_PER_MINUTE wrong credentials within a minute gets a 429 with Retry-After for
any credential it sends until the oldest of them is a minute old (WrongTries, per process): the right one too,
or the answer would tell a guesser when it had found it.
"""
from __future__ import annotations

import base64
import binascii
import hmac
import math
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Callable

from service.config import Settings
from service.errors import ApiError

REALM = "avh-cds governance"
CHALLENGES = (f'Bearer realm="{REALM}"', f'Basic realm="{REALM}", charset="UTF-8"')


@dataclass(frozen=True)
class Viewer:
    authorised: bool        # presented the governance credential: may read comments
    how: str                # for the access line: "token", "open (auth off)"


class GovernanceRefused(ApiError):
    def __init__(self, message: str, error: str = "unauthorized"):
        super().__init__(401, error, message)

    def response(self):
        body, status, _ = super().response()
        for challenge in CHALLENGES:    # one header each: a browser reads the Basic one and asks for the password
            body.headers.add("WWW-Authenticate", challenge)
        return body, status


WRONG_TRIES_PER_MINUTE = 10
ADDRESSES_KEPT = 10_000      # the addresses whose wrong tries are remembered, at most (the oldest are forgotten)


class TooManyWrongTries(ApiError):
    def __init__(self, retry_after: int):
        super().__init__(429, "too_many_attempts",
                         f"too many wrong governance credentials from this address; try again in {retry_after} s",
                         retryAfterSeconds=retry_after)
        self.headers = {"Retry-After": str(retry_after)}


class WrongTries:
    """When each address sent a wrong credential, over the last minute; in memory, per worker process."""

    def __init__(self, limit: int = WRONG_TRIES_PER_MINUTE, window: float = 60.0,
                 clock: Callable[[], float] = time.monotonic):
        self.limit, self.window, self.clock = limit, window, clock
        self._tries: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def check(self, address: str) -> None:
        """TooManyWrongTries when this address is over the limit."""
        with self._lock:
            tries = self._tries.get(address)
            if tries is None:
                return
            now = self.clock()
            while tries and tries[0] <= now - self.window:
                tries.popleft()
            if len(tries) >= self.limit:
                raise TooManyWrongTries(max(1, math.ceil(tries[0] + self.window - now)))

    def wrong(self, address: str) -> None:
        with self._lock:
            tries = self._tries.setdefault(address, deque(maxlen=self.limit))
            tries.append(self.clock())
            self._tries.move_to_end(address)
            while len(self._tries) > ADDRESSES_KEPT:
                self._tries.popitem(last=False)


def client_address(environ: dict, trusted_hops: int) -> str:
    """The address wrong tries are counted by: the connection's, or, behind `trusted_hops` proxies that each append
    the address they were called from to X-Forwarded-For (AVH_CDS_TRUSTED_PROXY_HOPS), the one the first of them
    saw, `trusted_hops` from the right: what a client wrote further left is its own say, never read. Without it,
    every client behind the compose nginx had the proxy's address, and one guesser held up everyone's credential."""
    address = environ.get("REMOTE_ADDR") or ""
    if trusted_hops > 0:
        forwarded = environ.get("HTTP_X_FORWARDED_FOR", "").split(",")
        if len(forwarded) >= trusted_hops and forwarded[-trusted_hops].strip():
            address = forwarded[-trusted_hops].strip()
    return address[:64]


def _malformed(problem: str) -> GovernanceRefused:
    return GovernanceRefused(f"the Authorization header is malformed: {problem} (the governance credential is "
                             "`Bearer <token>` or HTTP Basic `user:password` in base64)", "malformed_credential")


def presented_secret(authorization: str | None) -> bytes | None:
    """The secret in a Bearer or Basic Authorization header, or None when there is none (no header, or a blank one).
    Any other header is refused naming what is wrong in it, never echoing it: it may be the token itself."""
    if not authorization or not authorization.strip():
        return None
    scheme, _, value = authorization.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer":
        if not value:
            raise _malformed("Bearer with no token")
        return value.encode()
    if scheme.lower() != "basic":
        raise _malformed("its scheme is neither Bearer nor Basic")
    try:
        decoded = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _malformed("the Basic credential is not base64") from None
    _, colon, password = decoded.partition(b":")
    if not colon:
        raise _malformed("the Basic credential is not user:password")
    if not password:
        raise _malformed("the Basic credential has no password")
    return password


def governance_viewer(settings: Settings, authorization: str | None, address: str, tries: WrongTries) -> Viewer:
    token = settings.governance_token.encode()
    secret = presented_secret(authorization)
    if secret is not None:
        tries.check(address)
        if token and hmac.compare_digest(secret, token):
            return Viewer(True, "token")
        tries.wrong(address)
        raise GovernanceRefused("the governance credential is wrong (AVH_CDS_GOVERNANCE_TOKEN, as a Bearer token "
                                "or as the password of HTTP Basic)")
    if settings.auth == "off":
        return Viewer(False, "open (auth off)")
    if not token:
        raise GovernanceRefused("the governance page is closed: AVH_CDS_GOVERNANCE_TOKEN is not set on this server")
    raise GovernanceRefused("the governance page needs its credential: AVH_CDS_GOVERNANCE_TOKEN, as a Bearer token "
                            "or as the password of HTTP Basic")
