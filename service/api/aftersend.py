"""Bookkeeping a caller does not wait for: done once the answer's bytes are out.

A WSGI server calls the answer's `close()` after it has written the last byte (PEP 3333; gunicorn's
`handle_request`: `resp.write(...)`, `resp.close()`, its own access log, then the iterable's `close()`; werkzeug's
server likewise), and Flask's response calls then the functions given to `call_on_close`. What a call only records
about itself (the JSON access line, the request histogram, the card counters, the issued cards queued for the
feedback join) is done there, so it no longer sits between the request and the answer (docs/performance.md,
"defer17"). The CPU is the same; a one-call-at-a-time caller has its cards sooner.

Each step is guarded on its own: the answer has gone, so a step that raises can no longer turn it into a 500, and
the steps after it still run. Its failure is logged here, by the step's name and the exception's type, its
traceback without messages (JsonLinesFormatter): a message may quote what the caller sent.

Under gunicorn's gthread worker `close()` runs on the request thread before the kept-alive connection goes back to
the poller: a next request on that connection starts after it (the work is the same under the GIL whichever
thread did it; a background thread was measured and not kept, see docs/performance.md, "defer17"). A server that
never calls `close()` (against PEP 3333) would lose these records.
"""
from __future__ import annotations

import logging
from typing import Callable

from flask import Response

log = logging.getLogger(__name__)


def after_sent(response: Response, step: Callable, *args) -> None:
    """`step(*args)` once `response` has been sent (its close()), after the steps given before it; a failure
    logged, never raised. One close function a response runs them all."""
    steps = response.__dict__.get("_after_sent")
    if steps is None:
        steps = response._after_sent = []
        response.call_on_close(lambda: _run(steps))
    steps.append((step, args))


def _run(steps: list) -> None:
    """Each step once, however often close() is called (PEP 3333 asks for once; werkzeug's response runs its
    call_on_close functions on every close())."""
    todo = steps.copy()
    steps.clear()
    for step, args in todo:
        try:
            step(*args)
        except Exception:
            log.exception("%s failed after the answer was sent (the caller had its answer; nothing of the call is "
                          "in this line)", getattr(step, "__qualname__", "a step"))
