"""The HTTP load generator of the benchmark, in Python: keep-alive connections driven by one event loop.

One thread, non-blocking sockets and `selectors`: each connection sends its next request as soon as the
previous answer is complete (HTTP/1.1, no pipelining), so `len(connections)` requests are in flight at
any time, as with wrk's `-c`. A request is two prebuilt byte strings (head, body) handed to `sendmsg`; an
answer is read until its Content-Length is in. About 0.07 ms of client CPU a request (recorded in each
round), so on a 2-core machine it leaves most of a core to the server; the figure this benchmark leads
with is the server's own CPU per request (`worker_cpu_seconds`), which the client does not enter at all.

Which worker serves a connection is fixed when a worker accepts it (gunicorn's gthread workers keep a
kept-alive connection for good): `connect` can spread the connections evenly over the workers (each
connection's server-side socket is found in /proc/net/tcp and in the workers' file descriptors), or
leave them where they land and say where that was.
"""
from __future__ import annotations

import os
import select
import selectors
import socket
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

# (head, body) of request number i of a run.
Requests = Callable[[int], tuple[bytes, bytes]]


def request_head(port: int, path: str, body_length: int, headers: dict[str, str] | None = None) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Content-Type: application/json",
             f"Content-Length: {body_length}", *(f"{k}: {v}" for k, v in (headers or {}).items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _cpu_clock(pid: int) -> int:
    """The clock id of a process's CPU time (Linux's MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED)), which
    `clock_getcpuclockid(3)` gives in C: every thread's run time, ended threads included, in nanoseconds."""
    return (~pid << 3) | 2


def _clock_readable() -> bool:
    try:
        time.clock_gettime(_cpu_clock(os.getpid()))
        return True
    except (OSError, OverflowError, AttributeError):
        return False


# Where CPU time is read from. The process CPU clock is the kernel's own count of run time (sum_exec_runtime) at 1 ns:
# what /proc/<pid>/stat shows as utime + stime, cut down to whole clock ticks (10 ms). /proc/<pid>/schedstat holds
# that count too, but for one thread only (the main thread, for a gthread worker serving on others), and summing
# /proc/<pid>/task/*/schedstat loses the threads that ended. docs/performance.md, "Interleaved slices".
CPU_SOURCE = "process CPU clock (ns)" if _clock_readable() else "/proc/<pid>/stat utime + stime (clock ticks)"
# /proc/<pid>/stat's utime and stime are each rounded down to a tick: a reading is up to 2 ticks low, a difference of
# two readings off by less than 2 ticks, a worker.
STAT_ERROR_TICKS = 2


def worker_stat_seconds(workers: list[int]) -> dict[int, float]:
    """User + system CPU of each worker process (all its threads), from /proc/<pid>/stat, in whole clock ticks."""
    ticks, cpu = os.sysconf("SC_CLK_TCK"), {}
    for pid in workers:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        cpu[pid] = (int(fields[11]) + int(fields[12])) / ticks       # utime, stime
    return cpu


def worker_cpu_seconds(workers: list[int]) -> dict[int, float]:
    """CPU time of each worker process (all its threads): the process CPU clock, or /proc/<pid>/stat where that
    clock cannot be read (CPU_SOURCE)."""
    if CPU_SOURCE.startswith("/proc"):
        return worker_stat_seconds(workers)
    return {pid: time.clock_gettime(_cpu_clock(pid)) for pid in workers}


def closed(sock: socket.socket) -> bool:
    """Whether the server has closed this idle kept-alive connection (an end of file waiting to be read)."""
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return False
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:         # reset by the server
        return True


def _inode(server_port: int, client_port: int | None = None) -> int | None:
    """The inode of the server's end of the connection from 127.0.0.1:client_port, or with no client_port of the
    socket listening on server_port (IPv4, as the servers bind)."""
    local, remote = f":{server_port:04X}", f":{client_port:04X}" if client_port else ":0000"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1].endswith(local) and fields[2].endswith(remote) and (client_port or fields[3] == "0A"):
            return int(fields[9])
    return None


def _holder(inode: int | None, pids: list[int]) -> int | None:
    """Which of `pids` has the socket `inode` open."""
    target = f"socket:[{inode}]"
    for pid in pids if inode else ():
        try:
            if any(os.readlink(fd) == target for fd in Path(f"/proc/{pid}/fd").iterdir()):
                return pid
        except FileNotFoundError:      # an fd closed (or the process ended) while we read the directory
            continue
    return None


def listens(port: int, pid: int) -> bool:
    """Whether process `pid` holds the socket listening on 127.0.0.1:port."""
    return _holder(_inode(port), [pid]) == pid


def owner(server_port: int, client_port: int, workers: list[int], wait: float = 2.0) -> int | None:
    """The worker that accepted the connection from client_port (None if none has within `wait` seconds)."""
    deadline = time.monotonic() + wait
    while True:
        pid = _holder(_inode(server_port, client_port), workers)
        if pid is not None or time.monotonic() > deadline:
            return pid
        time.sleep(0.002)


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def reconnect(port: int, worker: int | None, workers: list[int]) -> socket.socket:
    """A new connection to `worker` (one that lands elsewhere is held open so the next lands elsewhere too, and
    closed after), to keep the connections spread as `connect` left them. Gives up after 50 tries and keeps the
    last; with no worker known, the first."""
    parked = []
    for _ in range(50):
        sock = _connect(port)
        if worker is None or owner(port, sock.getsockname()[1], workers) == worker:
            break
        parked.append(sock)
        time.sleep(0.01)
    else:
        sock = parked.pop()
    for other in parked:
        other.close()
    return sock


def connect(port: int, count: int, workers: list[int], even: bool) -> tuple[list[socket.socket], list[int | None]]:
    """`count` connections and the worker holding each. `even`: no worker holds more than its share
    (ceil(count / workers)); a connection that lands on a full worker is held open (so the next one lands
    elsewhere) and closed once the set is complete. Gives up after 50 tries a connection and keeps what landed."""
    share = -(-count // len(workers))
    kept, owners, parked = [], [], []
    for _ in range(50 * count):
        if len(kept) == count:
            break
        sock = _connect(port)
        pid = owner(port, sock.getsockname()[1], workers)
        if even and pid is not None and owners.count(pid) >= share:
            parked.append(sock)
            time.sleep(0.01)        # let a worker that was not running (a busy machine) reach its accept
            continue
        kept.append(sock)
        owners.append(pid)
    while len(kept) < count:
        kept.append(parked.pop() if parked else _connect(port))
        owners.append(owner(port, kept[-1].getsockname()[1], workers))
    for sock in parked:
        sock.close()
    return kept, owners


@dataclass
class _Conn:
    sock: socket.socket
    index: int
    pending: list = field(default_factory=list)     # what is left to send of the current request
    received: bytearray = field(default_factory=bytearray)
    started: float = 0.0
    requests: int = 0


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    raise RuntimeError(f"an answer without Content-Length: {head[:200]!r}")


def run(sockets: list[socket.socket], requests: Requests, seconds: float, max_requests: int | None = None,
        reopen: Callable[[int], socket.socket] | None = None) -> dict:
    """Keep every connection busy for `seconds` (or until `max_requests` have been sent); each answer's
    latency and status. The connections stay open (the caller closes them).

    A kept-alive connection the server closed as idle just before its first request here (after the caller
    checked it with `closed`: a race with the server's keep-alive timer) is replaced by `reopen(index)` (in
    `sockets` too) and sent a new request (a new index: a token sent may have been used); `resent` counts them.
    Any other close is an error."""
    selector = selectors.DefaultSelector()
    conns = [_Conn(s, i) for i, s in enumerate(sockets)]
    latencies, statuses = [], Counter()
    sent, errors, resent = 0, 0, 0
    started = time.perf_counter()
    deadline = started + seconds

    def send_next(conn: _Conn) -> bool:
        nonlocal sent
        if time.perf_counter() >= deadline or (max_requests is not None and sent >= max_requests):
            return False
        head, body = requests(sent)
        sent += 1
        conn.pending, conn.started = [head, body], time.perf_counter()
        return flush(conn)

    def flush(conn: _Conn) -> bool:
        """Send what the socket takes; listen for writing while some is left, for the answer after."""
        while conn.pending:
            try:
                done = conn.sock.sendmsg(conn.pending)
            except BlockingIOError:
                break
            except (BrokenPipeError, ConnectionResetError):     # closed by the server: the read below sees it
                selector.modify(conn.sock, selectors.EVENT_READ, conn)
                return True
            while done and conn.pending:
                first = conn.pending[0]
                if done >= len(first):
                    done -= len(first)
                    conn.pending.pop(0)
                else:
                    conn.pending[0] = memoryview(first)[done:]
                    done = 0
        selector.modify(conn.sock, selectors.EVENT_WRITE if conn.pending else selectors.EVENT_READ, conn)
        return True

    for conn in conns:
        conn.sock.setblocking(False)
        selector.register(conn.sock, selectors.EVENT_READ, conn)
    active = sum(send_next(c) for c in conns)
    while active:
        ready = selector.select(timeout=10)
        if not ready:
            raise RuntimeError("no answer from the server within 10 s")
        for key, events in ready:
            conn: _Conn = key.data
            if events & selectors.EVENT_WRITE:
                flush(conn)
                continue
            try:
                chunk = conn.sock.recv(1 << 18)
            except ConnectionResetError:
                chunk = b""
            if not chunk and reopen is not None and conn.requests == 0 and not conn.received:
                selector.unregister(conn.sock)
                conn.sock.close()
                conn.sock = sockets[conn.index] = reopen(conn.index)
                conn.sock.setblocking(False)
                selector.register(conn.sock, selectors.EVENT_READ, conn)
                resent += 1
                if not send_next(conn):
                    selector.unregister(conn.sock)
                    active -= 1
                continue
            if not chunk:
                raise RuntimeError(f"the server closed connection {conn.index} after {conn.requests} requests")
            conn.received += chunk
            end = conn.received.find(b"\r\n\r\n")
            if end < 0:
                continue
            length = _content_length(bytes(conn.received[:end]))
            if len(conn.received) < end + 4 + length:
                continue
            latencies.append(time.perf_counter() - conn.started)
            status = int(conn.received[9:12])
            statuses[status] += 1
            errors += status != 200
            conn.requests += 1
            del conn.received[:end + 4 + length]
            if not send_next(conn):
                selector.unregister(conn.sock)
                active -= 1
    duration = time.perf_counter() - started
    for conn in conns:
        conn.sock.setblocking(True)
    selector.close()
    return {"requests": len(latencies), "seconds": round(duration, 3), "latencies": latencies,
            "statuses": {str(k): v for k, v in statuses.items()}, "errors": errors, "resent": resent, "per_connection": [c.requests for c in conns]}
