"""gunicorn's own refusals (a request line or headers over its limits, a malformed request) answered in JSON.

gunicorn answers these before the app sees the request, with an HTML page (414, 431, 400). Its workers write
that page through `gunicorn.util.write_error`; gunicorn.conf.py's post_fork puts `write_json_error` in its
place, so every answer the service gives is JSON naming the problem.
"""
from __future__ import annotations

import json

from gunicorn import util

ERRORS = {400: "bad_request", 403: "forbidden", 414: "uri_too_long", 417: "expectation_failed",
          431: "headers_too_large", 500: "internal_error", 501: "not_implemented"}
MESSAGE_CHARS = 300


def write_json_error(sock, status_int: int, reason: str, mesg: str) -> None:
    """What gunicorn.util.write_error writes, as JSON: {"error", "message"}; the message (which may quote the
    request) is cut to MESSAGE_CHARS and written in ASCII."""
    body = json.dumps({"error": ERRORS.get(status_int, reason.lower().replace(" ", "_")),
                       "message": (mesg or reason)[:MESSAGE_CHARS]}).encode("ascii")
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode("latin-1")
    util.write_nonblock(sock, head + body)


def answer_errors_in_json() -> None:
    util.write_error = write_json_error
