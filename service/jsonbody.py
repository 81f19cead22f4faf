"""The request body, decoded once per request and shared by the security guard and the routes.

Decoding is the floor of a call's cost (7 MB of prefetch: ~100 ms with orjson); decoding twice, once per reader,
doubled it. It is decoded as orjson decodes it, but for the entries of prefetch Bundles, read later by prefetch
(service/lazyjson.py).
"""
from __future__ import annotations

from typing import Any

from flask.globals import _cv_app, _cv_request
from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge
from werkzeug.wsgi import get_content_length

from service.lazyjson import decode

INPUT_TERMINATED = "wsgi.input_terminated"    # a server that ends the input itself: werkzeug reads it to the limit


def request_json() -> Any:
    """The decoded body; raises ValueError (orjson.JSONDecodeError) when it is not JSON, and
    RequestEntityTooLarge (413) when it is larger than the body limit."""
    call = _cv_app.get().g      # g from Flask's context variable once (its proxy's lookup is a Python call), not per use
    if "decoded_body" not in call:
        call.decoded_body = decode(request_body())
    return call.decoded_body


def request_body() -> bytes:
    """The body, read once per request. One sent without Content-Length (chunked) is cut at the limit by werkzeug,
    silently: when anything is left after the limit, it is a 413, not the first bytes of a body read as if they were
    all."""
    req = _cv_request.get().request
    data = getattr(req, "_cached_data", None)       # where werkzeug's get_data keeps it: its readers see the same
    if data is None:
        length = content_length(req.environ)
        data = req._cached_data = _read_to_limit(req) if length is None else _read_length(req, length)
    return data


def content_length(environ: dict) -> int | None:
    """werkzeug's get_content_length(environ), its usual case (a Content-Length of ASCII digits, no Transfer-Encoding)
    read without its three Python calls and regular expression (~3,000 instructions a call). Past 18 digits werkzeug
    reads it: int() refuses more than 4,300 digits (ValueError), which werkzeug reads as 0."""
    length = environ.get("CONTENT_LENGTH")
    if type(length) is str and len(length) <= 18 and length.isdigit() and length.isascii() \
            and "HTTP_TRANSFER_ENCODING" not in environ:
        return int(length)
    return get_content_length(environ)


def _read_length(req, length: int) -> bytes:
    """A body of a given Content-Length, read as werkzeug's get_data reads it (413 over the body limit; a body cut
    short ends there under a server that ends the input itself, as gunicorn does, else it is a 400), but with one
    read: werkzeug reads 64 KiB at a time, each into a new zeroed buffer, and copies the body twice more (~50,000
    instructions of a small body's call, ~100,000 at 73 KB)."""
    limit = req.max_content_length
    if limit is not None and length > limit:
        raise RequestEntityTooLarge()
    stream, chunks, left = req.environ["wsgi.input"], [], length
    while left > 0:
        try:
            chunk = stream.read(left)
        except (OSError, ValueError) as exc:
            raise ClientDisconnected() from exc
        if not chunk:
            if INPUT_TERMINATED in req.environ:
                break
            raise ClientDisconnected()
        chunks.append(chunk)
        left -= len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _read_to_limit(req) -> bytes:
    data = req.get_data(cache=True)
    limit = req.max_content_length      # the request's own limit, else the app's MAX_CONTENT_LENGTH
    if limit is not None and len(data) >= limit and req.environ["wsgi.input"].read(1):
        raise RequestEntityTooLarge()
    return data
