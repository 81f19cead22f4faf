"""Reading an HTTP answer's body from a server that may be hostile: a byte cap and a deadline, checked as the
body arrives, never after the whole of it has been read.

`requests`' iter_content(n) blocks until n bytes have come, and a read timeout applies to each receive, so a
server sending a byte every 0.2 s (or a gigabyte quickly) held the reader for as long as it liked. Here each
receive takes what has arrived (urllib3's read1, at most 64 KiB), the deadline is checked before it, and the
socket's timeout is cut to what is left.
"""
from __future__ import annotations

import time

import requests

PIECE = 64 * 1024


class TooLarge(Exception):
    """The body is larger than the cap (announced by Content-Length, or as it arrived)."""


class OutOfTime(Exception):
    """The deadline passed before the body ended."""


def read_capped(response: requests.Response, max_bytes: int, deadline: float, timeout: float) -> bytes:
    """The body of a `stream=True` response: at most max_bytes, by the monotonic `deadline`, no receive waiting
    longer than `timeout`."""
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise TooLarge()
    raw, stream = bytearray(), response.raw
    sock = getattr(getattr(stream, "connection", None), "sock", None)
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise OutOfTime()
        if sock is not None:
            sock.settimeout(min(timeout, remaining))
        piece = stream.read1(PIECE, decode_content=True)
        if not piece:
            return bytes(raw)
        raw += piece
        if len(raw) > max_bytes:
            raise TooLarge()
