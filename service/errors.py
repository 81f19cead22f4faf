"""Every error is JSON that says what was wrong; no stack trace ever reaches a client."""
from __future__ import annotations

import logging
from urllib.parse import quote, urlsplit

from flask import Flask, current_app, jsonify, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import RequestRedirect

log = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(self, status: int, error: str, message: str, **extra):
        super().__init__(message)
        self.status, self.error, self.message, self.extra = status, error, message, extra
        self.headers: dict[str, str] = {}

    def response(self):
        body = {"error": self.error, "message": self.message, **self.extra}
        return jsonify(body), self.status, self.headers


def http_error(exc: HTTPException):
    names = {413: "body_too_large", 404: "not_found", 405: "method_not_allowed"}
    body = {"error": names.get(exc.code, exc.name.lower().replace(" ", "_")), "message": exc.description}
    if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
        return method_not_allowed(exc.valid_methods, path_as_sent())
    return jsonify(body), exc.code


def method_not_allowed(methods, path: str):
    """405 naming the methods `path` answers, in the body and in Allow (which HTTP requires of a 405)."""
    allowed = sorted(methods)
    body = {"error": "method_not_allowed", "allowed": allowed,
            "message": f"{request.method[:20]} is not allowed on {path[:200]}; it answers {', '.join(allowed)}"}
    return jsonify(body), 405, {"Allow": ", ".join(allowed)}


def match_without_slash(method: str) -> tuple[str | None, MethodNotAllowed | None]:
    """(the request's path less its trailing slashes, None) when a route (not the one that has the request) answers
    it for `method`; (that path, the 405) when routes there answer other methods only; else (None, None). The URL map
    is bound to the request through Flask's public create_url_adapter (the adapter the request was routed with, or
    one made as it was made)."""
    path = request.path
    bare = path.rstrip("/")
    if bare == path or not bare:
        return None, None
    try:
        endpoint, _ = current_app.create_url_adapter(request).match(bare, method=method)
    except MethodNotAllowed as exc:
        return bare, exc
    except HTTPException:           # no route there either (a 404), or one that redirects
        return None, None
    return (bare, None) if endpoint != request.endpoint else (None, None)


def slash_target() -> str:
    """The request's path less its trailing slashes, the query kept. The path's bytes as sent are escaped again (a
    '?', '#' or control character in an id stays in the path, and a header can carry it), and it starts with one
    slash: `GET //pathway/` matches /pathway, but a Location of `//pathway` is another host's URL."""
    environ = request.environ
    path = (environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")).encode("latin-1", "replace").strip(b"/")
    path = b"/" + path
    return quote(path, safe="/:@!$&'()*+,;=") + query_kept()


def query_kept() -> str:
    """'?' and the request's query as sent, its bytes escaped again (a tab, a '#', a byte not UTF-8 stay in it), or
    '' when it has none."""
    query = quote(request.query_string, safe="%=&;+/?:@!$'()*,")
    return "?" + query if query else ""


def without_slash():
    """308 to slash_target()."""
    return moved(slash_target(), "this URL has no trailing slash")


def moved(location: str, why: str):
    """308 to `location` (a path on this site), its body JSON naming it as every answer of this service is JSON
    (werkzeug's is a small HTML page)."""
    return jsonify({"error": "permanent_redirect", "message": f"{why}: {location}", "location": location}), 308, \
        {"Location": location}


def not_found(exc: NotFound):
    """A URL typed with a trailing slash (/pathway/, /cds-services/): GET and HEAD are redirected (308) to the route
    without it, the one URL of each page and JSON answer. A POST is not: a CDS call's URL is exact (its JWT's aud
    names it, and a redirect would have the client send the patient's data twice), so it stays a 404 naming the URL.
    A method the route without it does not answer (GET /cds-services/{id}/) gets that route's 405 at once."""
    method = request.method
    bare, refused = match_without_slash("GET" if method == "HEAD" else method)
    if bare is None:
        return http_error(exc)
    if refused is not None:
        return method_not_allowed(refused.valid_methods or (), bare)
    if method in ("GET", "HEAD"):
        return without_slash()
    return http_error(NotFound(no_slash(bare)))


def no_slash(bare: str) -> str:
    """What a 404 of a call with a trailing slash says: the URL to call instead."""
    return f"no route {request.method[:20]} {request.path[:200]}: the URL has no trailing slash ({bare[:200]})"


def routing_redirect(exc: RequestRedirect):
    """werkzeug's redirect of a path it matched once its doubled slashes were merged (/fhir//metadata,
    /cds-services//{id}), or of an empty path to '/' (its message says which: redirected_because). Flask answered it as
    raised: an HTML page whose Location was absolute, built from the Host header (the sender's: a redirect to a host
    of its choosing, which a shared cache would keep for others). Now as a trailing slash is answered (not_found): a
    GET or HEAD redirected (308, JSON) to the path and the query as sent (query_kept: werkzeug's URL, split, lost a
    tab or a '#' and replaced a byte not UTF-8); any other method a 404 naming the URL (a CDS call is not sent
    twice)."""
    path = "/" + urlsplit(exc.new_url).path.lstrip("/")
    if request.method in ("GET", "HEAD"):
        return moved(path + query_kept(), redirected_because())
    return http_error(NotFound(f"no route {request.method[:20]} {path_as_sent()[:200]}: the URL is {path[:200]}"))


def path_as_sent() -> str:
    """The request's path, its leading slashes as sent (werkzeug's request.path has one: `//cds-services/x` is
    /cds-services/x there)."""
    path, sent = request.path, request.environ.get("PATH_INFO", "")
    return "/" * (len(sent) - len(sent.lstrip("/")) - 1) + path if sent.startswith("//") else path


def redirected_because() -> str:
    """What a routing redirect's message says of the URL as sent: werkzeug redirects an empty path (a request for
    the app's root without its slash) and one with doubled slashes; any other redirect (a rule written with a
    trailing slash, called without it: none is) names the route's URL."""
    sent = request.environ.get("PATH_INFO", "")
    if not sent:
        return "this URL has an empty path"
    return "this URL has doubled slashes" if "//" in sent else "this URL is served at"


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        return exc.response()

    app.register_error_handler(HTTPException, http_error)
    app.register_error_handler(NotFound, not_found)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error")  # the traceback stays in the server log
        return jsonify({"error": "internal_error", "message": "avh-cds failed to process this request"}), 500
