"""Reading an HTTP answer's body from a server that may be hostile: a byte cap and a deadline, checked as the
body arrives, never after the whole of it has been read.

`requests`' iter_content(n) blocks until n bytes have come, and a read timeout applies to each receive, so a
server sending a byte every 0.2 s (or a gigabyte quickly) held the reader for as long as it liked. Here each
receive takes what has arrived (urllib3's read1, at most 64 KiB), the deadline is checked before it, and the
socket's timeout is cut to what is left.
"""
from __future__ import annotations

import socket
import threading
import time

import requests
import urllib3
import urllib3.connection
from requests.adapters import HTTPAdapter

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


# --- cutting a fetch off when its call's budget ends, wherever it is blocked -------------------------------------
#
# read_capped bounds the body. Before it, http.client reads the status line and headers one receive at a time, each
# within the socket's timeout: a server sending a header byte every 0.2 s keeps that read going past any budget.
# So a fetch runs under a Watch that knows its socket (the connection classes below tell it, for the thread that
# asked), and the call waiting for it cuts it (shutdown: the blocked receive returns at once) when the budget ends.

_watching = threading.local()


class Watch:
    """The socket one fetch reads from, for as long as it reads; `cut` shuts it down (once the fetch has let go of
    it, its connection may serve another fetch: it is not touched then)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._cut = False

    def __enter__(self) -> "Watch":
        _watching.watch = self
        return self

    def __exit__(self, *exc) -> None:
        _watching.watch = None
        self.detach()

    def detach(self) -> None:
        """The fetch is done with its socket: call it before the connection goes back to the pool."""
        with self._lock:
            self._sock = None

    def attach(self, sock: socket.socket | None) -> None:
        with self._lock:
            self._sock = sock
            if self._cut:
                _shut(sock)

    def cut(self) -> None:
        with self._lock:
            self._cut = True
            _shut(self._sock)


def _shut(sock: socket.socket | None) -> None:
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:             # already closed
            pass


def _attach_to_watch(sock) -> None:
    watch = getattr(_watching, "watch", None)
    if watch is not None:
        watch.attach(sock)


class _WatchedHTTPConnection(urllib3.connection.HTTPConnection):
    def getresponse(self, *args, **kwargs):
        _attach_to_watch(self.sock)
        return super().getresponse(*args, **kwargs)


class _WatchedHTTPSConnection(urllib3.connection.HTTPSConnection):
    def getresponse(self, *args, **kwargs):
        _attach_to_watch(self.sock)
        return super().getresponse(*args, **kwargs)


class _WatchedHTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


class WatchedAdapter(HTTPAdapter):
    """requests' adapter whose connections tell the current thread's Watch which socket they read from."""

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


def watched_session() -> requests.Session:
    """A Session whose fetches a Watch can cut."""
    session = requests.Session()
    for scheme in ("http://", "https://"):
        session.mount(scheme, WatchedAdapter())
    return session
