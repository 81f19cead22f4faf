"""Ports for the tests' servers, chosen by the kernel at run time (port 0), so that two test suites on one
machine never collide, and held from the moment they are chosen, so that no other process can take one
between choosing it and using it (no probe-then-bind race)."""
from __future__ import annotations

import contextlib
import socket
from typing import Iterator


def listening_socket() -> socket.socket:
    """A socket listening on 127.0.0.1 at a port the kernel picked: hand it to a server (a child process
    inherits it with pass_fds; gunicorn takes it as `fd://N`)."""
    return socket.create_server(("127.0.0.1", 0))


def port_of(sock: socket.socket) -> int:
    return sock.getsockname()[1]


@contextlib.contextmanager
def refused_port() -> Iterator[int]:
    """A port on 127.0.0.1 where a connection is refused: bound by this test (so nothing else can listen
    there) but never listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield port_of(sock)
