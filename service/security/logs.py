"""Structured logs: one JSON object per line. Ids, timings and counts only: never a token or patient data.

Callers add fields with `extra={"fields": {...}}`; the access line of every CDS call carries
hookInstance, service, status, latency (ms) and card topics.
"""
from __future__ import annotations

import json
import logging
import math
import time
import traceback

from service.fastjson import dumps

access_log = logging.getLogger("service.access")
LOGGED_BY_APP = "avh_cds.access_logged"    # set in the WSGI environ of a call the access line was written for


def log_access(message: str, fields: dict) -> None:
    """access_log.info(message, extra={"fields": <fields that are not None>}) without logging's search of the stack
    for the caller's file, line and function (`Logger.findCaller`, ~15-20 % of an access line's cost): no line of
    ours writes them, so the record gets logging's own "(unknown file)", 0 and "(unknown function)", as with
    `logging._srcfile = None` but for these lines only. Level, filters and handlers are as with access_log.info."""
    if access_log.isEnabledFor(logging.INFO):
        written = {k: v for k, v in fields.items() if v is not None}
        access_log.handle(access_log.makeRecord(access_log.name, logging.INFO, "(unknown file)", 0, message, (),
                                                None, "(unknown function)", {"fields": written}))


MAX_TEXT = 1000     # characters of a message or of a text field: whatever a caller chose is logged cut


def cut(text: str) -> str:
    return text if len(text) <= MAX_TEXT else f"{text[:MAX_TEXT]}... ({len(text) - MAX_TEXT} more characters)"


_second: tuple[float, str] = (math.nan, "")     # the last second written (none yet: NaN equals no second), its text


def utc_timestamp(created: float) -> str:
    """A record's time (`created`, time.time()) as datetime.fromtimestamp(created, timezone.utc).isoformat(
    timespec="milliseconds") writes it (its microseconds rounded half to even, then cut to milliseconds), with the
    date and time of the second worked out once a second: datetime's way cost 3.4 x as much, on every call's access line."""
    global _second
    fraction, whole = math.modf(created)
    microseconds = round(fraction * 1_000_000)
    if microseconds >= 1_000_000:
        whole, microseconds = whole + 1, microseconds - 1_000_000
    elif microseconds < 0:              # before 1970 (a clock set wrong): modf's fraction is negative
        whole, microseconds = whole - 1, microseconds + 1_000_000
    second, text = _second
    if whole != second:
        t = time.gmtime(whole)          # strftime's %Y would not pad a year before 1000 to four digits
        text = f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"
        _second = (whole, text)
    return text + _MILLISECONDS[microseconds // 1000]


# ".mmm+00:00" for each millisecond: an f-string's format spec (`:03d`) was ~2,600 instructions of every log line.
_MILLISECONDS = tuple(f".{ms:03d}+00:00" for ms in range(1000))


def traceback_unquoted(exc_info) -> str:
    """A traceback as logging writes it, but each exception's message left out: a message may quote what a caller
    sent (a KeyError of a JSON key, a requests error's URL naming the patient, a ValueError of a value). Where each
    was raised and its type say what failed; the chain (cause, context) is kept, up to MAX_CHAIN exceptions (walked
    without recursion: a chain longer than the interpreter's recursion limit raised RecursionError in the formatter,
    and logging then printed the record's message and arguments), and an exception group names its members' types."""
    chain, seen, exc = [], set(), exc_info[1]
    while exc is not None and id(exc) not in seen and len(chain) < MAX_CHAIN:
        seen.add(id(exc))
        if exc.__cause__ is not None:
            link, earlier = "\nThe above exception was the direct cause of the following exception:\n\n", exc.__cause__
        elif exc.__context__ is not None and not exc.__suppress_context__:
            link, earlier = "\nDuring handling of the above exception, another exception occurred:\n\n", exc.__context__
        else:
            link, earlier = "", None
        chain.append((exc, link if earlier is not None and id(earlier) not in seen else ""))
        exc = earlier
    lines = [f"({MAX_CHAIN}+ exceptions before: not logged)\n\n"] if exc is not None and id(exc) not in seen else []
    for exc, link in reversed(chain):
        lines += ([link] if link else []) + _unquoted(exc)
    return "".join(lines).rstrip("\n")


MAX_CHAIN = 100


def _unquoted(exc: BaseException) -> list[str]:
    stack = ["Traceback (most recent call last):\n", *traceback.format_tb(exc.__traceback__)] \
        if exc.__traceback__ is not None else []
    members = getattr(exc, "exceptions", None) if isinstance(exc, BaseExceptionGroup) else None
    held = f", holding {', '.join(map(_type_name, members[:10]))}{' ...' if len(members) > 10 else ''}" \
        if members else ""
    return stack + [f"{_type_name(exc)} (its message is not logged{held})\n"]


def _type_name(exc: BaseException) -> str:
    kind = type(exc)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


class JsonLinesFormatter(logging.Formatter):
    formatException = staticmethod(traceback_unquoted)

    def format(self, record: logging.LogRecord) -> str:
        # Written first as it is, and again with its texts cut only when the line is longer than a cut text: a text
        # over MAX_TEXT characters makes a longer line, so a short line had nothing to cut (checking each field of
        # every line was ~1 µs of an access line's ~12).
        fields = getattr(record, "fields", None) or {}
        text = _json_line(self._line(record, record.getMessage(), fields))
        if len(text) <= MAX_TEXT:
            return text
        return _json_line(self._line(record, cut(record.getMessage()),
                                     {name: cut(value) if isinstance(value, str) else value
                                      for name, value in fields.items()}))

    def _line(self, record: logging.LogRecord, message: str, fields: dict) -> dict:
        line = {"ts": utc_timestamp(record.created), "level": record.levelname, "logger": record.name, "msg": message,
                "pid": record.process, **fields}
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return line


def _json_line(line: dict) -> str:
    # orjson (a third of json.dumps' cost: it runs for every call); the stdlib for what orjson refuses (integers
    # over 64 bits).
    try:
        return dumps(line, str).decode()
    except TypeError:
        return json.dumps(line, default=str)


def configure_logging(level: str) -> None:
    """JSON lines on stderr, unless the host (gunicorn --log-config, pytest) already set up logging."""
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(JsonLinesFormatter())
        root.addHandler(handler)
    try:
        root.setLevel(level)
    except ValueError:
        raise ValueError(f"AVH_CDS_LOG_LEVEL={level[:40]!r} is not a log level (DEBUG, INFO, WARNING, ERROR)") from None
