"""gunicorn access log that cannot carry patient data or credentials.

Whatever access_log_format says, only these atoms have values: the client address, method, path
(the pattern of the app's route it matches, its variables {id}: redact_path), status, size, duration, pid and user
agent. The query string (FHIR searches name the patient), the referer (the sandbox's page address names the patient),
and every header (Authorization carries the JWT) are never logged.

A CDS call is logged once: the app's JSON `cds_call` line (service/security/logs.py) says more than this
line would (service, hookInstance, card topics, issuer, refusal), so this one is left out for it.

`avh-cds serve` (werkzeug's development server) writes its request lines the same way: DevelopmentAccessLog.
"""
from __future__ import annotations

import logging
import re
from urllib.parse import unquote, urlsplit

from gunicorn.glogging import Logger
from werkzeug.exceptions import HTTPException, MethodNotAllowed
from werkzeug.routing import Map, RequestRedirect
from werkzeug.serving import WSGIRequestHandler

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


NOT_A_ROUTE = "(a path no route serves: not logged)"
# A rule's <variable>, with its converter's name when it has one (`<path:rest>`, `<fhir_type:rtype>`).
VARIABLE = re.compile(r"<(?:(?P<converter>[^:<>()]+)(?:\([^<>]*\))?:)?(?P<name>[^:<>]+)>")
# Matching a path again when werkzeug redirects it (a rule with a trailing slash, an alias) at most this often.
REDIRECTS = 2


class Routes:
    """The URL map of the app this process serves, bound once: a path is logged as the pattern of the rule it
    matches (rule.rule, each <variable> replaced by {id}: a service id or a FHIR resource id may be a patient's
    identifier), whatever the rule; a path no rule matches is the caller's text (a 404 on
    /cds-services/<a record number>/x, /pathway/<a name>) and is logged as NOT_A_ROUTE. A converter may say how
    its value is logged (a `logged(value)` method: service/fhir/types.py names a FHIR resource type when it is
    one). The path is matched for the request's method (POST /fhir/Condition/_search is the search's rule, a GET
    there the read of the id `_search`); for a method no rule there answers, for the first method one does."""

    def __init__(self, url_map: Map):
        self.adapter = url_map.bind("localhost")
        self.converters = url_map.converters

    def pattern(self, path: str, method: str) -> str:
        try:
            for _ in range(REDIRECTS + 1):
                try:
                    rule, arguments = self._match(path, method)
                except RequestRedirect as redirect:
                    path = urlsplit(redirect.new_url).path
                    continue
                return VARIABLE.sub(lambda variable: self._logged(variable, arguments), rule.rule)
        except HTTPException:      # no rule (a 404)
            pass
        return NOT_A_ROUTE

    def _match(self, path: str, method: str):
        try:
            return self.adapter.match(path, method=method, return_rule=True)
        except MethodNotAllowed as refused:     # a route, of other methods (POST /cds-services/{id})
            return self.adapter.match(path, method=sorted(refused.valid_methods or ("GET",))[0], return_rule=True)

    def _logged(self, variable: re.Match, arguments: dict) -> str:
        logged = getattr(self.converters.get(variable["converter"] or "default"), "logged", None)
        return "{id}" if logged is None else logged(arguments.get(variable["name"]))


_routes: Routes | None = None


def log_routes_of(app) -> None:
    """The app this process serves (create_app calls it): gunicorn's access logger and `avh-cds serve`'s request
    handler run outside its context and name a path by its URL map. Until an app is made every path is
    NOT_A_ROUTE; in a process that made several (tests), the last one made."""
    global _routes
    _routes = Routes(app.url_map)


def redact_path(path: str, method: str = "GET") -> str:
    """A path as the logs name it: the pattern of the route it matches (/cds-services/{id}/feedback,
    /fhir/Patient/{id}), or NOT_A_ROUTE. Doubled slashes count once (//fhir/Patient/abc is answered by
    /fhir/Patient/abc's route: a redirect there, or a 404 naming it); a trailing slash is kept on the route without
    it (/pathway/: the app answers it with the URL without it)."""
    if path == "-":                         # no path read
        return path
    if not path.startswith("/") or _routes is None:
        return NOT_A_ROUTE
    merged = "/" + "/".join(part for part in path.split("/") if part)
    route = _routes.pattern(merged, method)
    if merged == "/" or not path.endswith("/"):
        return route
    if route == NOT_A_ROUTE:                # a rule taking the slash (a catch-all)
        return _routes.pattern(merged + "/", method)
    return route if route.endswith("/") else route + "/"


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
            method = str(args[0]) if len(args) > 1 else "GET"
            args = (*map(logged_method, args[:-1]), logged_target(str(args[-1]), method))
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

    def make_environ(self):
        """PATH_INFO of a target with leading doubled slashes as sent (`//fhir/metadata`), as gunicorn's: http.server
        replaced them by one (gh-87389) before werkzeug read the path, so `avh-cds serve` served what production
        answers as doubled slashes (a GET's 308, a call's 404: SlashesMerged in service/__init__.py). The target as
        sent is the request line's second word, as http.server split it."""
        environ = super().make_environ()
        words = self.requestline.split()
        if len(words) > 1 and words[1].startswith("//"):
            url = urlsplit(words[1])
            environ["PATH_INFO"] = unquote(f"//{url.netloc}{url.path}").encode().decode("latin-1")
        return environ

    def log_request(self, code="-", size="-") -> None:
        if getattr(self, "environ", {}).get(LOGGED_BY_APP):
            return
        target = getattr(self, "path", None)     # never set for a request line http.server could not parse
        path = logged_target(target, self.command or "GET") if isinstance(target, str) else "-"
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


def logged_target(target: str, method: str = "GET") -> str:
    """A request target as sent (`/fhir/Patient/abc?x=y`, percent-encoded) as the access line names its path. A target
    with leading doubled slashes is a path (`//fhir/metadata`), not a host and a path as urlsplit reads it: its
    first segment is put back, as werkzeug's development server does making PATH_INFO."""
    url = urlsplit(target)
    path = f"/{url.netloc}{url.path}" if url.netloc and not url.scheme else url.path
    return printable(redact_path(unquote(path), method))


def logged_path(environ: dict) -> str:
    """A request's path as the access line names it."""
    return printable(redact_path(environ.get("PATH_INFO") or "-", environ.get("REQUEST_METHOD") or "GET"))


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
