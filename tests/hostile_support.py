"""Servers the hostile tests (tests/test_hostile_*.py) point the service at: real sockets on 127.0.0.1."""
from __future__ import annotations

import socket
import threading
import time


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class TricklingServer:
    """Answers every request with `head` (a status line and headers announcing a large body), then one byte every
    `every` seconds until the client hangs up. Records, per connection, when it was opened and when the client
    let go of it (the first failed send), so a test can tell whether the service gave its thread back."""

    def __init__(self, head: bytes, every: float = 0.2):
        self.head, self.every = head, every
        self.opened: list[float] = []
        self.released: list[float] = []
        self.sent = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        self._listener.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with self._lock:
            self.opened.append(time.monotonic())
        try:
            conn.settimeout(5)
            request = b""
            while b"\r\n\r\n" not in request:
                data = conn.recv(65536)
                if not data:
                    return
                request += data
            conn.sendall(self.head)
            while not self._stop.wait(self.every):
                conn.sendall(b" ")
                with self._lock:
                    self.sent += 1
        except OSError:
            pass
        finally:
            with self._lock:
                self.released.append(time.monotonic())
            conn.close()

    def __enter__(self) -> "TricklingServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._listener.close()
        self._thread.join(5)
