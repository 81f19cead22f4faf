"""A refused CDS call, said once in the log at WARNING: a misconfigured EHR or sandbox must not look like a
patient with nothing to say.

One line per (claimed issuer, kind of refusal) per minute, with the reason and what to check; never the
token, never patient data. The issuer is the one the token claims (unverified: it is what the operator
needs to see to trust the right one), named only in the form an issuer has (logged_issuer); the memory is bounded
whatever callers send.
"""
from __future__ import annotations

import logging
import re
import threading
import time
from urllib.parse import urlsplit

import jwt
from flask import Request, Response

from service.ops.metrics import auth_failure_reason

log = logging.getLogger(__name__)
INTERVAL_SECONDS = 60.0
MAX_KEYS = 1024
HINTS = {
    "missing_token": "the client sent no bearer JWT: turn on the EHR's or sandbox's signing, or run with "
                     "AVH_CDS_AUTH=off in development",
    "untrusted_issuer": "add this issuer to AVH_CDS_ISSUERS_FILE (for the public sandbox: AVH_CDS_TRUST_SANDBOX=1, "
                        "development only)",
    "wrong_audience": "the token's aud must be the exact URL called: set AVH_CDS_PUBLIC_URL to the base URL the "
                      "EHR uses",
    "unknown_key": "the issuer's JWK Set has no key with this kid (check its jwks_url, `avh-cds check-config`)",
    "jku_not_allowed": "list this jku for the issuer in AVH_CDS_ISSUERS_FILE",
    "expired": "the token has expired: check the client's clock (AVH_CDS_CLOCK_SKEW_SECONDS)",
    "not_yet_valid": "the token is not valid yet: check the client's clock (AVH_CDS_CLOCK_SKEW_SECONDS)",
    "algorithm_not_allowed": "the token's alg is not in AVH_CDS_ALGORITHMS",
    "tenant_not_allowed": "list this tenant for the issuer in AVH_CDS_ISSUERS_FILE",
    "fhir_server_not_allowed": "list this fhirServer for the issuer in AVH_CDS_ISSUERS_FILE (AVH_CDS_FHIR_SERVERS "
                               "with auth off or the sandbox preset)",
}


class RefusalLog:
    """Remembers when each (issuer, kind) was last logged; says it again after `interval` seconds."""

    def __init__(self, interval: float = INTERVAL_SECONDS, max_keys: int = MAX_KEYS, clock=time.monotonic):
        self.interval, self.max_keys, self.clock = interval, max_keys, clock
        self._last: dict[tuple[str | None, str], float] = {}
        self._lock = threading.Lock()

    def due(self, iss: str | None, kind: str) -> bool:
        now, key = self.clock(), (iss, kind)
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.interval:
                return False
            if last is None and len(self._last) >= self.max_keys:
                self._last = {k: t for k, t in self._last.items() if now - t < self.interval}
                if len(self._last) >= self.max_keys:
                    return False         # a flood of distinct issuers: the metrics still count every refusal
            self._last[key] = now
            return True


refusals = RefusalLog()


def claimed_issuer(authorization: str | None) -> str | None:
    """The iss a bearer token claims, unverified (only to name it in the log); None when there is none."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    try:
        iss = jwt.decode(token.strip(), options={"verify_signature": False}).get("iss")
    except (jwt.PyJWTError, AttributeError):
        return None
    return logged_issuer(iss) if isinstance(iss, str) else None


NOT_A_URL = "(not a URL)"
MAX_ISSUER_CHARS = 200
# An issuer URL as the log writes it: printable ASCII without a space, quote or backslash (no line of the caller's
# choosing, no escape); anything else the token claims is the caller's text.
URL_CHARACTERS = re.compile(r"[!#-\[\]-~]+")


def logged_issuer(iss: str) -> str:
    """The iss a token claims (unverified: the caller's text), as the refusal line names it: an http(s) URL with a host
    and no user, password, query or fragment (where an EHR's issuer has none, a patient id or a name could be), cut to
    MAX_ISSUER_CHARS; else NOT_A_URL."""
    if not URL_CHARACTERS.fullmatch(iss):
        return NOT_A_URL
    try:
        url = urlsplit(iss)
        host, _ = url.hostname, url.port
    except ValueError:          # an unclosed [ of an IPv6 host, a port that is no number
        return NOT_A_URL
    if url.scheme not in ("https", "http") or not host or "@" in url.netloc or url.query or url.fragment \
            or "?" in iss or "#" in iss:
        return NOT_A_URL
    return iss if len(iss) <= MAX_ISSUER_CHARS else iss[:MAX_ISSUER_CHARS] + "..."


def warn_refused(req: Request, call: dict, response: Response) -> None:
    """After a CDS call `req` (g's dict `call`) refused by authentication (401) or by the fhirServer allowlist (403),
    answered with `response`: the WARNING line."""
    failure, refused = call.get("auth_failure"), call.get("refused")
    if failure is None and refused is None:
        return
    caller = call.get("caller")
    iss = caller.issuer.iss if caller else claimed_issuer(req.headers.get("Authorization"))
    kind = auth_failure_reason(failure) if failure is not None else "fhir_server_not_allowed"
    if refusals.due(iss, kind):
        detail = failure or refused
        log.warning(f"CDS call refused ({response.status_code} {kind}): {detail}; {HINTS.get(kind, 'see docs/security.md')}"
                    " (said once a minute per issuer and reason)",
                    extra={"fields": {"event": "cds_refused", "iss": iss, "reason": kind,
                                      "endpoint": (req.endpoint or "").removeprefix("cds."),
                                      "status": response.status_code}})
