"""gunicorn access log that cannot carry patient data or credentials.

Whatever access_log_format says, only these atoms have values: the client address, method, path
(FHIR resource ids replaced by {id}), status, size, duration, pid and user agent. The query string
(FHIR searches name the patient), the referer (the sandbox's page address names the patient), and
every header (Authorization carries the JWT) are never logged.

A CDS call is logged once: the app's JSON `cds_call` line (service/security/logs.py) says more than this
line would (service, hookInstance, card topics, issuer, refusal), so this one is left out for it.

`avh-cds serve` (werkzeug's development server) writes its request lines the same way: DevelopmentAccessLog.
"""
from __future__ import annotations

import logging
import re
from urllib.parse import unquote, urlsplit

from gunicorn.glogging import Logger
from werkzeug.serving import WSGIRequestHandler

from service.fhir.types import known_type
from service.security.logs import LOGGED_BY_APP, cut, traceback_unquoted

log = logging.getLogger(__name__)
SAFE_ATOMS = frozenset("hlmsbBHTDMLpat")
# gunicorn's refusal of a request it could not parse, and its error's kind (`Invalid HTTP request line`): what
# follows the kind quotes the request line or a header, which may name the patient (`?patient=...`).
INVALID_REQUEST = re.compile(r"(?P<head>Invalid request from ip=\S*: )(?P<kind>[^:'\"]*)", re.DOTALL)


def printable(text: str) -> str:
    """What the client sent, on one line and cut: a newline in a decoded path (%0a) or a user agent would
    otherwise start a line of the attacker's choosing, e.g. a forged JSON log line."""
    return cut(text.encode("unicode_escape").decode("ascii").replace('"', '\\"'))


# The routes the app serves (`tests/test_review16c.py` checks this against its URL map): a path is logged as the
# pattern of the route it names, a segment the caller chose ({id}) replaced; any other path is the caller's text (a
# 404 on /cds-services/<a record number>/x, /pathway/<a name>), logged as NOT_A_ROUTE.
ROUTES = frozenset({"/", "/metrics", "/openapi.json", "/favicon.ico", "/pathway", "/governance", "/healthz", "/readyz",
                    "/cds-services", "/cds-services/{id}", "/cds-services/{id}/feedback", "/cds-services/{id}/explain",
                    "/fhir", "/fhir/metadata"})
NOT_A_ROUTE = "(a path no route serves: not logged)"


def redact_path(path: str) -> str:
    """A path as the logs name it: the route's pattern (/cds-services/{id}/feedback, /fhir/Patient/{id}/...: a
    service id or a resource id may be a patient's identifier, and the FHIR type is named only when it is one), or
    NOT_A_ROUTE. Doubled slashes count once (//fhir/Patient/abc is served as /fhir/Patient/abc: werkzeug merges
    them); a trailing slash is kept (the app answers it with the URL without it)."""
    if path == "-":                         # no path read
        return path
    if not path.startswith("/"):
        return NOT_A_ROUTE
    parts = [part for part in path.split("/") if part]
    slash = "/" if parts and path.endswith("/") else ""
    if parts[:1] == ["fhir"] and len(parts) > 1 and parts[1] != "metadata":
        if not known_type(parts[1]):
            return "/fhir/(not a FHIR resource type)"
        return f"/fhir/{parts[1]}" + ("/{id}" if len(parts) > 2 else "") + ("/..." if len(parts) > 3 else "") + slash
    if parts[:1] == ["cds-services"] and len(parts) > 1:
        parts[1] = "{id}"
    route = "/" + "/".join(parts)
    return route + slash if route in ROUTES else NOT_A_ROUTE


class AccessLogger(Logger):
    def setup(self, cfg):
        """gunicorn's error log writes a traceback without the messages of its exceptions (traceback_unquoted)."""
        super().setup(cfg)
        for handler in self.error_log.handlers:
            if handler.formatter is not None:
                handler.formatter.formatException = traceback_unquoted

    def warning(self, msg, *args, **kwargs):
        """gunicorn's own warnings quote what the client sent (`Invalid request from ip=...: Invalid HTTP request
        line: 'GET /fhir/Condition?patient=...'`): the kind of refusal only; any other cut."""
        text = msg % args if args else msg
        refused = INVALID_REQUEST.match(text)
        if refused:
            text = f"{refused['head']}{refused['kind'].strip()} (what was sent is not logged)"
        super().warning(cut(text), **kwargs)

    def exception(self, msg, *args, **kwargs):
        """`Error handling request <method> <uri>`: the method and URI as the access line names them (no query string,
        FHIR ids replaced)."""
        if msg.startswith("Error handling request") and args:
            args = (*map(logged_method, args[:-1]), logged_target(str(args[-1])))
        super().exception(msg, *args, **kwargs)

    def access(self, resp, req, environ, request_time):
        if not environ.get(LOGGED_BY_APP):
            super().access(resp, req, environ, request_time)

    def atoms(self, resp, req, environ, request_time):
        atoms = {k: v for k, v in super().atoms(resp, req, environ, request_time).items() if k in SAFE_ATOMS}
        atoms["U"] = logged_path(environ)
        atoms["m"] = logged_method(atoms.get("m") or "-")
        atoms["a"] = printable(atoms.get("a") or "-")
        return atoms


class DevelopmentAccessLog(WSGIRequestHandler):
    """`avh-cds serve`'s request line, as gunicorn's: the path with FHIR ids replaced and no query string (werkzeug
    wrote the request line whole: `GET /fhir/Condition?patient=...`); a CDS call has the app's line instead."""

    def log_request(self, code="-", size="-") -> None:
        if getattr(self, "environ", {}).get(LOGGED_BY_APP):
            return
        target = getattr(self, "path", None)     # never set for a request line http.server could not parse
        path = logged_target(target) if isinstance(target, str) else "-"
        self.log("info", '"%s %s" %s %s', logged_method(self.command or "-"), path, getattr(code, "value", code), size)

    def log_error(self, format: str, *args) -> None:
        """http.server's refusal of a request it could not parse quotes the request line (`code 400, message Bad
        request syntax ('GET /fhir/Condition?patient=...')`): its code only."""
        if format.startswith("code %d") and args:
            self.log("error", "code %d: the request line was refused (not logged)", args[0])
        else:
            super().log_error(format, *args)


# HTTP's methods (RFC 9110, RFC 5789): any other is a word the caller chose (`DOEJANE /healthz`, which gunicorn and
# werkzeug pass on, and a 405 answers), logged as OTHER_METHOD.
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "-"})
OTHER_METHOD = "(another method)"


def logged_method(method: object) -> str:
    return method if method in HTTP_METHODS else OTHER_METHOD


def logged_target(target: str) -> str:
    """A request target as sent (`/fhir/Patient/abc?x=y`, percent-encoded) as the access line names its path."""
    return printable(redact_path(unquote(urlsplit(target).path)))


def logged_path(environ: dict) -> str:
    """A request's path as the access line names it."""
    return printable(redact_path(environ.get("PATH_INFO") or "-"))


def errors_unquoted(wsgi_app):
    """`avh-cds serve`'s app: an exception escaping Flask (a streamed body failing) is logged here, by the request's
    route and without its message (traceback_unquoted), and werkzeug's development server is given one with a fixed
    message instead: it wrote its own `Error on request` traceback, each exception's message in it (a KeyError of a
    JSON key, a URL naming the patient). Its answer (a 500, or the connection closed mid-body) is unchanged."""
    def app(environ, start_response):
        try:
            return _Body(wsgi_app(environ, start_response), environ)
        except Exception as exc:
            raise _logged(exc, environ) from None
    return app


class _Body:
    def __init__(self, body, environ: dict):
        self.body, self.environ = body, environ

    def __iter__(self):
        try:
            yield from self.body
        except Exception as exc:
            raise _logged(exc, self.environ) from None

    def close(self) -> None:
        close = getattr(self.body, "close", None)
        if close is not None:
            try:
                close()
            except Exception as exc:
                raise _logged(exc, self.environ) from None


def _logged(exc: Exception, environ: dict) -> RuntimeError:
    log.error("error on request %s %s", logged_method(environ.get("REQUEST_METHOD", "-")), logged_path(environ),
              exc_info=(type(exc), exc, exc.__traceback__))
    return RuntimeError("the request failed: logged by service.api.accesslog without its message")
