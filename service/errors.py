"""Every error is JSON that says what was wrong; no stack trace ever reaches a client."""
from __future__ import annotations

import logging
from urllib.parse import quote, urlsplit

from flask import Flask, jsonify, redirect, request
from flask.globals import request_ctx
from werkzeug.exceptions import HTTPException, NotFound
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
    return jsonify(body), exc.code


def route_without_slash(method: str) -> str | None:
    """The request's path less its trailing slashes, when a route (not the one that has the request) answers it for
    `method`; else None."""
    path, adapter = request.path, request_ctx.url_adapter
    bare = path.rstrip("/")
    if bare == path or not bare or adapter is None:
        return None
    try:
        endpoint, _ = adapter.match(bare, method=method)
    except HTTPException:           # no route there either (a 404, a 405), or one that redirects
        return None
    return bare if endpoint != request.endpoint else None


def without_slash():
    """308 to the request's path less its trailing slashes, the query kept. The path's bytes as sent are escaped
    again (a '?', '#' or control character in an id stays in the path, and a header can carry it), and it starts with
    one slash: `GET //pathway/` matches /pathway, but a Location of `//pathway` is another host's URL."""
    environ = request.environ
    path = (environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")).encode("latin-1", "replace").strip(b"/")
    path = b"/" + path
    query = quote(request.query_string, safe="%=&;+/?:@!$'()*,")
    return redirect(quote(path, safe="/:@!$&'()*+,;=") + ("?" + query if query else ""), 308)


def not_found(exc: NotFound):
    """A URL typed with a trailing slash (/pathway/, /cds-services/): GET and HEAD are redirected (308) to the route
    without it, the one URL of each page and JSON answer. A POST is not: a CDS call's URL is exact (its JWT's aud
    names it, and a redirect would have the client send the patient's data twice), so it stays a 404 naming the URL."""
    method = request.method
    bare = route_without_slash("GET" if method == "HEAD" else method)
    if bare is None:
        return http_error(exc)
    if method in ("GET", "HEAD"):
        return without_slash()
    return http_error(NotFound(f"no route {method} {request.path[:200]}: the URL has no trailing slash ({bare[:200]})"))


def exact_call_url(exc: Exception) -> Exception:
    """werkzeug answers a path with doubled slashes (`/cds-services//avh-patient-view`: what a client sends that joins
    a discovery URL typed with a trailing slash and a service id, as the CDS Hooks sandbox does) with a 308 to the
    path merged, whatever the method. As for a trailing slash (not_found), a GET or HEAD may follow it; a POST is
    not redirected (a CDS call's URL is exact): a 404 naming the merged URL, instead of the client sending the
    patient's data again to a URL its JWT's aud does not name."""
    if isinstance(exc, RequestRedirect) and request.method not in ("GET", "HEAD", "OPTIONS"):
        merged = urlsplit(exc.new_url).path
        return NotFound(f"no route {request.method} {request.path[:200]}: the URL has no doubled slash ({merged[:200]})")
    return exc


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
