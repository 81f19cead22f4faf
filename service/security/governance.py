"""Who may open the governance page (docs/governance.md): its own credential, AVH_CDS_GOVERNANCE_TOKEN, not the
EHR's JWTs. Sent as `Authorization: Bearer <token>`, or as the password of HTTP Basic (any user name) so that a
committee member's browser can ask for it. Compared in constant time; never logged.

With AVH_CDS_AUTH=off (development) and no credential sent, the page is open but shows no comments. With auth
required, no valid credential is a 401, and so is every request when no token is configured.
"""
from __future__ import annotations

import base64
import binascii
import hmac
from dataclasses import dataclass

from service.config import Settings
from service.errors import ApiError

REALM = "avh-cds governance"
CHALLENGES = (f'Bearer realm="{REALM}"', f'Basic realm="{REALM}", charset="UTF-8"')


@dataclass(frozen=True)
class Viewer:
    authorised: bool        # presented the governance credential: may read comments
    how: str                # for the access line: "token", "open (auth off)"


class GovernanceRefused(ApiError):
    def __init__(self, message: str):
        super().__init__(401, "unauthorized", message)

    def response(self):
        body, status, _ = super().response()
        for challenge in CHALLENGES:    # one header each: a browser reads the Basic one and asks for the password
            body.headers.add("WWW-Authenticate", challenge)
        return body, status


def presented_secret(authorization: str | None) -> bytes | None:
    """The secret in a Bearer or Basic Authorization header, or None when there is none (or it is malformed)."""
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value:
        return value.encode()
    if scheme.lower() == "basic" and value:
        try:
            decoded = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return None
        return decoded.partition(b":")[2] or None
    return None


def governance_viewer(settings: Settings, authorization: str | None) -> Viewer:
    token = settings.governance_token.encode()
    secret = presented_secret(authorization)
    if secret is not None:
        if token and hmac.compare_digest(secret, token):
            return Viewer(True, "token")
        raise GovernanceRefused("the governance credential is wrong (AVH_CDS_GOVERNANCE_TOKEN, as a Bearer token "
                                "or as the password of HTTP Basic)")
    if settings.auth == "off":
        return Viewer(False, "open (auth off)")
    if not token:
        raise GovernanceRefused("the governance page is closed: AVH_CDS_GOVERNANCE_TOKEN is not set on this server")
    raise GovernanceRefused("the governance page needs its credential: AVH_CDS_GOVERNANCE_TOKEN, as a Bearer token "
                            "or as the password of HTTP Basic")
