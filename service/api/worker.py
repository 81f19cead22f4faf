"""gunicorn's gthread worker, serving a lone kept-alive connection's next request on the thread that answered.

gunicorn.conf.py names it (`worker_class`). Imports gunicorn only: the master loads it, as it loads the access logger.
"""
from __future__ import annotations

import select
import socket

from gunicorn.workers.gthread import ThreadWorker


class KeptAliveWorker(ThreadWorker):
    """gthread, except that after a kept-alive answer, when this connection is the worker's only one, the thread waits
    up to `wait_seconds` for the next request and serves it itself. Stock gthread hands the connection back to the
    main thread (woken through its method queue), which polls it again, is woken by the request and submits it to the
    pool, which wakes a thread: ~0.15 ms of a call's 1.36 ms at N = 100 on 2 cores (docs/performance.md, ka20).

    Only when the connection is alone (`nr_conns` counts every connection the worker holds: in the pool, kept alive
    in the poller, waiting for a first request): connections each held by a thread contend for the GIL, the poller
    between their requests is cheaper (c = 4 got slower). Only a request whose head has arrived whole (or was read
    ahead already) is served here; anything else, nothing within the wait included, goes back to the poller as stock.
    Everything else is the stock `handle`, once a request: errors, keep-alive, `alive`, max_requests, HEAD, chunks."""

    wait_seconds = 0.0005     # the next call of a client calling one at a time is on the socket by then
    most_in_a_row = 100       # then the connection goes through the main thread once, as stock
    peek_bytes = 8192         # a request head longer than this is served the stock way
    served_on_the_same_thread = 0   # requests served by the loop below (read by tests/test_gunicorn_worker.py)

    def handle(self, conn):
        keepalive = super().handle(conn)
        for _ in range(self.most_in_a_row - 1):
            if keepalive is not True or not self._next_request_is_here(conn):
                break
            self.served_on_the_same_thread += 1
            keepalive = super().handle(conn)
        return keepalive

    def _next_request_is_here(self, conn) -> bool:
        """Whether the connection, this worker's only one, has a whole request head to serve within the wait.
        Never blocks longer than the wait: the socket is readable when it is peeked."""
        if not self.alive or self.nr_conns != 1 or conn.is_http2 or self.cfg.is_ssl:
            return False
        if conn.parser.unreader.buf.getvalue():    # pipelined, read ahead with the last request
            return True
        try:
            readable, _, _ = select.select((conn.sock,), (), (), self.wait_seconds)
            if not readable or self.nr_conns != 1:     # another connection came meanwhile: stock
                return False
            head = conn.sock.recv(self.peek_bytes, socket.MSG_PEEK)
        except (OSError, ValueError):   # ValueError: a descriptor past select's 1024
            return False
        # b"": the client closed; the stock handle closes the connection as it does after the poller
        return head == b"" or b"\r\n\r\n" in head
