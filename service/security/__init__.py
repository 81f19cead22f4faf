"""Security of the CDS Hooks endpoints (docs/security.md), installed on the app by create_app.

One guard runs before every CDS route (blueprint "cds": discovery, invoke, feedback) so the routes stay
thin: it authenticates the caller's JWT (unless AVH_CDS_AUTH=off), enforces the input limits and refuses
a fhirServer the caller may not name, all before any route code or network call. After it, the refusal
warning (refusals.py), the JSON access line and CORS. These are steps of the app's own before- and
after-request functions (service/__init__.py), which read the request, the app and g once for all of them.
CORS preflights are answered by flask-cors without authentication.

May import ops (metrics) and the shared root modules (config, errors, jsonbody, nesting); never api, fhir,
feedback, clinical or the app. Layers: docs/architecture.md, held by tests/test_architecture.py.
"""
from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass
from typing import Callable
from pathlib import Path
from urllib.parse import urlsplit

import orjson
from flask import Blueprint, Flask, Request, Response, current_app
from flask_cors import CORS

from service.ops import metrics
from service.config import Settings
from service.errors import ApiError
from service.security.governance import WrongTries
from service.security.issuers import FhirServerPolicy, SecurityConfigError, development_policy, load_issuers
from service.httpread import watched_session
from service.jsonbody import request_json
from service.security.limits import check_limits, within_depth
from service.security.logs import LOGGED_BY_APP, log_access
from service.security.replay import ReplayStoreUnavailable, replay_cache
from service.security.tokens import FORBIDDEN_ALGORITHMS, AuthFailed, Caller, TokenVerifier

__all__ = ["install", "guard", "access_line", "logs_access", "SecurityConfigError"]
log = logging.getLogger(__name__)
OPENAPI = Path(__file__).parent / "openapi.json"
UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")   # fullmatch
CHALLENGE = 'Bearer realm="avh-cds"'
AUTH_OFF_WARNING = "AVH_CDS_AUTH=off: CDS calls are NOT authenticated; development only, never in production"
AUTH_OFF_REMINDER_SECONDS = 60
REPLAY_RETRY_AFTER_SECONDS = 2     # Retry-After of the 503 when the replay cache (Redis) cannot be reached
SANDBOX_WARNING = ("AVH_CDS_TRUST_SANDBOX=1: trusting https://sandbox.cds-hooks.org, whose private key is public "
                   "(anyone can sign its tokens); development only, never in production")
openapi_bp = Blueprint("openapi", __name__)


@dataclass
class Security:
    settings: Settings
    verifier: TokenVerifier | None          # None when AVH_CDS_AUTH=off
    development_fhir: FhirServerPolicy      # fhirServer policy when no issuer is authenticated
    cors_after_request: Callable[[Response], Response] | None = None      # flask-cors's, set by install

    def cors(self, req: Request, response: Response) -> Response:
        """CORS headers on the answer to a browser's call (one with an Origin); any other answer as it is."""
        return self.cors_after_request(response) if "HTTP_ORIGIN" in req.environ else response

    def audience(self, req: Request) -> str:
        """The exact URL `req` called, as the client sees it (AVH_CDS_PUBLIC_URL behind a proxy)."""
        base = self.settings.public_url.rstrip("/")
        return base + req.path if base else req.base_url


def _algorithms(settings: Settings) -> list[str]:
    algorithms = [a.strip() for a in settings.algorithms.split(",") if a.strip()]
    bad = [a for a in algorithms if a in FORBIDDEN_ALGORITHMS or a.upper().startswith("HS") or a.lower() == "none"]
    if bad or not algorithms:
        raise SecurityConfigError(f"AVH_CDS_ALGORITHMS: {bad or 'empty'} not allowed; asymmetric algorithms only")
    return algorithms


def _cors_origins(settings: Settings):
    if settings.cors_origins.strip():
        origins = [o.strip() for o in settings.cors_origins.split(",") if o.strip()]
        return "*" if "*" in origins else origins
    return "*" if settings.auth == "off" or settings.trust_sandbox else []


def build(settings: Settings) -> Security:
    if settings.auth not in {"required", "off"}:
        raise SecurityConfigError(f"AVH_CDS_AUTH must be 'required' or 'off', not {settings.auth!r}")
    public = urlsplit(settings.public_url)
    if settings.public_url and not (public.scheme in ("http", "https") and public.hostname):
        # the scheme left off, the cards' Source links would be relative and every token's aud compared with it wrong
        raise SecurityConfigError(f"AVH_CDS_PUBLIC_URL {settings.public_url[:80]!r} is not an absolute http(s) URL "
                                  "(e.g. https://cds.example.org)")
    issuers = load_issuers(settings.issuers_file, settings.trust_sandbox, settings.fhir_servers)
    verifier = None
    if settings.auth == "required":
        replay = replay_cache(settings.redis_url, settings.replay_db)
        verifier = TokenVerifier(issuers, _algorithms(settings), replay, watched_session(),
                                 clock_skew=settings.clock_skew_seconds,
                                 max_lifetime=settings.max_token_lifetime_seconds,
                                 jwks_refresh_seconds=settings.jwks_refresh_seconds,
                                 jwks_cache_seconds=settings.jwks_cache_seconds)
        if issuers:
            log.info(f"AVH_CDS_AUTH=required: {len(issuers)} trusted issuer(s)", extra={"fields": {"issuers": len(issuers)}})
        else:
            log.warning("AVH_CDS_AUTH=required but no trusted issuer (set AVH_CDS_ISSUERS_FILE, or AVH_CDS_TRUST_SANDBOX=1 "
                        "in development): every CDS call is refused with 401", extra={"fields": {"issuers": 0}})
        if not settings.public_url:
            log.warning("AVH_CDS_PUBLIC_URL unset: a token's aud is compared with the URL built from the Host header")
        if not settings.redis_url and not settings.replay_db:
            log.info("jti replay cache is per process; set AVH_CDS_REPLAY_DB (one host) or AVH_CDS_REDIS_URL "
                     "(several hosts) when running several workers")
    else:
        log.warning(AUTH_OFF_WARNING)
    if settings.trust_sandbox:
        log.warning(SANDBOX_WARNING)
    return Security(settings, verifier, development_policy(settings.fhir_servers))


def install(app: Flask, settings: Settings) -> None:
    security = build(settings)
    app.extensions["avh_security"] = security
    app.extensions["avh_governance_tries"] = WrongTries()    # wrong governance credentials per address, this process
    security.cors_after_request = _cors(app, settings)
    json.loads(OPENAPI.read_text())     # a broken OpenAPI file fails at start-up, not when asked for
    within_depth(settings.max_json_depth)       # the depth check's validator built now, not by the first call
    app.register_blueprint(openapi_bp)


def _cors(app: Flask, settings: Settings) -> Callable[[Response], Response]:
    """flask-cors on `app`, its after-request function taken off the app's list and returned: Security.cors asks it
    only when the request has an Origin (a browser's call).

    With always_send=False it adds nothing to a call without Origin (an EHR's server-to-server call), but it
    still matched the path against its resources and built an empty header set for it: about a fortieth of a
    typical call. The error handlers it wraps are left as they are."""
    before = list(app.after_request_funcs.get(None, ()))
    CORS(app, origins=_cors_origins(settings), allow_headers=["Authorization", "Content-Type"],
         methods=["GET", "POST", "OPTIONS"], max_age=600, allow_private_network=True, always_send=False)
    [cors_after_request] = [f for f in app.after_request_funcs[None] if f not in before]
    app.after_request_funcs[None] = before
    return cors_after_request


def guard(req: Request, app: Flask, call: dict) -> Response | None:
    """Before `req` (to `app`; g's dict is `call`): a CDS call's authentication, input limits and
    fhirServer allowlist; a 401 answer, or an ApiError raised, refuses it. g's attributes are set in its dict, as g's
    own __setattr__ does, without a Python call for each (~60 ns)."""
    if req.blueprint != "cds" or req.method == "OPTIONS":
        return None
    security: Security = app.extensions["avh_security"]
    if security.verifier is None:
        _remind_auth_off()
        call["caller"] = None
        if req.method == "POST":
            _check_body(security, None, req, call)
        return None
    try:
        call["caller"], claim = security.verifier.begin(req.headers.get("Authorization"), security.audience(req))
        try:
            if req.method == "POST":
                _check_body(security, call["caller"], req, call)    # while the replay cache answers
        finally:
            security.verifier.confirm(claim)            # a replayed jti: 401, whatever the body said
    except AuthFailed as exc:
        call["auth_failure"] = str(exc)
        call.pop("caller", None)
        call.pop("refused", None)
        return _unauthorized(metrics.observe_auth_failure(call["auth_failure"]))
    except ReplayStoreUnavailable as exc:
        call.pop("caller", None)
        error = ApiError(503, "replay_cache_unavailable", "avh-cds cannot check token reuse right now; "
                         "retry later", retryAfterSeconds=REPLAY_RETRY_AFTER_SECONDS)
        error.headers = {"Retry-After": str(REPLAY_RETRY_AFTER_SECONDS)}
        raise error from exc
    return None


def _unauthorized(reason: str) -> Response:
    """401 with a JSON body naming the kind of refusal (a fixed code, never text from the token); the full
    reason goes to the access line only."""
    body = {"error": "invalid_token", "reason": reason,
            "message": f"a valid bearer JWT from a trusted issuer is required ({reason})"}
    error = "" if reason == "missing_token" else ', error="invalid_token"'
    return current_app.response_class(orjson.dumps(body), status=401, mimetype="application/json",
                                      headers={"WWW-Authenticate": CHALLENGE + error})


_auth_off_reminded = -AUTH_OFF_REMINDER_SECONDS


def _remind_auth_off() -> None:
    """The start-up warning, again at most once a minute while calls come in (each access line also says
    auth=off): loud enough to be seen in any stretch of log, without a second line for every call."""
    global _auth_off_reminded
    now = time.monotonic()
    if now - _auth_off_reminded >= AUTH_OFF_REMINDER_SECONDS:
        _auth_off_reminded = now
        log.warning(AUTH_OFF_WARNING)


def _is_json(mimetype: str) -> bool:
    return mimetype == "application/json" or (mimetype.startswith("application/") and mimetype.endswith("+json"))


def require_json(req: Request) -> None:
    """415 unless the body of `req` is sent as JSON (application/json or a +json type), with no content coding."""
    # The Content-Type header as an EHR sends it needs no parsing (werkzeug's parse of it: ~0.2 µs).
    environ = req.environ
    if environ.get("CONTENT_TYPE") != "application/json" and not _is_json(req.mimetype):
        raise ApiError(415, "unsupported_media_type", "the request body must be JSON sent as Content-Type: "
                       f"application/json, not {req.mimetype[:60] or 'no Content-Type'!r}")
    if "HTTP_CONTENT_ENCODING" in environ and environ["HTTP_CONTENT_ENCODING"].strip().lower() not in ("", "identity"):
        # Read as it came, a gzip body was "not valid JSON", and a plain one labelled gzip was read all the same.
        coding = environ["HTTP_CONTENT_ENCODING"].strip()
        raise ApiError(415, "unsupported_media_type", "the request body must be sent without a content coding "
                       f"(Content-Encoding: {coding[:40] if coding.isascii() and coding.isprintable() else 'other'!r} "
                       "is not decoded)")


def _check_body(security: Security, caller: Caller | None, req: Request, call: dict) -> None:
    """Media type, limits and fhirServer of a POST (`req`, whose g's dict is `call`), before any route code. With
    authentication on it runs between the token's checks and the replay cache's answer, so a refusal here stands
    only if the token does."""
    require_json(req)
    try:
        body = request_json()
    except (ValueError, RecursionError):
        return                              # the route answers 400 naming the problem
    check_limits(body, security.settings.max_json_depth, security.settings.max_prefetch_resources)
    if not isinstance(body, dict):
        return
    call["hook_instance_sent"] = body.get("hookInstance")     # logged if a uuid (_logged_hook_instance)
    server = body.get("fhirServer")
    if req.endpoint == "cds.invoke" and isinstance(server, str):
        policy = caller.issuer.fhir_servers if caller else security.development_fhir
        if not policy.allows(server):
            call["refused"] = "fhirServer not allowed"
            raise ApiError(403, "fhir_server_not_allowed",
                           f"fhirServer {server[:200]!r} is not a FHIR server this caller may name "
                           f"({'issuer ' + caller.issuer.iss if caller else 'development: ' + policy.describe()}); "
                           "avh-cds contacts no other server")


def logs_access(req: Request) -> bool:
    """Whether `req` gets the app's JSON access line (a CDS call but a CORS preflight): its environ is marked
    LOGGED_BY_APP before the answer goes, so that the server's own access line (written before the answer's close(),
    when the app's is) is not written a second time, saying less."""
    if req.blueprint != "cds" or req.method == "OPTIONS":
        return False
    req.environ[LOGGED_BY_APP] = True
    return True


def access_line(req: Request, app: Flask, call: dict, status: int, answered: float) -> None:
    """After a CDS call `req` (g's dict `call`, read as g.get reads it, `self.__dict__.get`) was answered with
    `status`, the answer ready at `answered` (time.perf_counter): its JSON access line, written once the answer has
    been sent (service/api/aftersend.py); `ms` is from the call's start to the answer ready to send."""
    extensions = app.extensions
    service_id = (req.view_args or {}).get("service_id")
    known = service_id is not None and extensions["avh"].registry.get(service_id) is not None
    hook_instance = call.get("hook_instance")        # the route's, checked by the request schema
    if hook_instance is None:
        hook_instance = _logged_hook_instance(call.get("hook_instance_sent"))
    caller = call.get("caller")
    auth_off = extensions["avh_security"].verifier is None
    fields = {"event": "cds_call", "endpoint": (req.endpoint or "").removeprefix("cds."),
              "service": service_id if known else None, "hookInstance": hook_instance,
              "status": status,
              "ms": round((answered - call.get("started", 0)) * 1000, 1),
              "topics": call.get("card_topics"), "resources": call.get("resource_count"),
              "iss": caller.issuer.iss if caller else None, "auth": "off" if auth_off else None,
              "auth_failure": call.get("auth_failure"), "refused": call.get("refused")}
    log_access("cds call", fields)


def _logged_hook_instance(sent) -> str | None:
    """The hookInstance of a call the route did not answer, logged when it is a uuid (anything else may be text of
    the caller's choosing). Checked here, not by the guard: an answered call's is set by the route, after the request
    schema checked it (the guard's check of every call was ~0.2 µs)."""
    return sent if isinstance(sent, str) and UUID.fullmatch(sent) else None


@openapi_bp.get("/openapi.json")
def openapi():
    return current_app.response_class(OPENAPI.read_bytes(), mimetype="application/json")
