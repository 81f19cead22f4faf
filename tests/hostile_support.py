"""Servers the hostile tests (tests/test_hostile_*.py) point the service at: real sockets on 127.0.0.1."""
from __future__ import annotations

import socket
import threading
import time


class StreamingServer:
    """Answers every request with `head` (a status line and headers announcing a large body), then `piece` every
    `every` seconds (one byte every 0.2 s by default) until the client hangs up or `most` bytes were sent. Records,
    per connection, when it was opened and when the client let go of it (the first failed send), so a test can
    tell whether the service gave its thread back; `sent` counts the body bytes sent."""

    def __init__(self, head: bytes, piece: bytes = b" ", every: float = 0.2, most: int = 1 << 40):
        self.head, self.piece, self.every, self.most = head, piece, every, most
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
            while not self._stop.wait(self.every) and self.sent < self.most:
                conn.sendall(self.piece)
                with self._lock:
                    self.sent += len(self.piece)
        except OSError:
            pass
        finally:
            with self._lock:
                self.released.append(time.monotonic())
            conn.close()

    def __enter__(self) -> "StreamingServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._listener.close()
        self._thread.join(5)
