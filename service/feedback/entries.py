"""CDS Hooks feedback: entries as received -> FeedbackEntry (with an idempotency key); the per-topic report."""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Mapping

from service.errors import ApiError
from service.feedback.store import FeedbackEntry

# Caps on what is stored of each string (docs/orders-feedback.md). An identifier longer than IDENTIFIER_CHARS is
# refused (400 naming the field): cutting it would store another identifier. Free text is cut, so that a long
# comment never costs the clinician's feedback; the idempotency key does not read it.
IDENTIFIER_CHARS = 256         # card, acceptedSuggestions id, overrideReason.reason system and code
DISPLAY_CHARS = 1_000          # overrideReason.reason.display
STORED_COMMENT_CHARS = 4_000   # overrideReason.userComment
UNKNOWN_CARD = "(unknown card)"
TIME_OF_DAY = re.compile(r"\d[T ]\d")    # a date-time: the date, then 'T' (or RFC 3339's space), then the time
NO_REASON = "(no reason given)"


def _timestamp(value: str, index: int) -> dt.datetime:
    """The moment in UTC. One that UTC cannot hold (9999-12-31T23:00:00-05:00 is in the year 10000,
    0001-01-01T00:00:00+05:00 in the year 0) is a 400 naming the field, not an OverflowError."""
    where = f"feedback/{index}/outcomeTimestamp"
    try:
        if not TIME_OF_DAY.search(value):      # a date alone (or a week date) is no date-time
            raise ValueError(value)
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ApiError(400, "invalid_request", f"{where}: {value[:40]!r} is not an ISO 8601 date-time") from None
    try:
        return (moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)).astimezone(dt.timezone.utc)
    except OverflowError:
        raise ApiError(400, "invalid_request", f"{where}: {value[:40]!r} is outside the years 1 to 9999 once "
                       "converted to UTC") from None


def _no_nul(value, where: str) -> None:
    """PostgreSQL cannot store U+0000 in text: a string that is stored is refused on every backend alike, naming the
    field, rather than a 503 a client would retry forever."""
    if isinstance(value, str) and "\x00" in value:
        raise ApiError(400, "invalid_request", f"{where}: contains the NUL character (U+0000), which cannot be "
                       "stored")


def _stored_text(entry: Mapping, where: str):
    """(value, where) of the strings of a feedback entry that are stored: members the service does not read (an
    extension) are ignored, as CDS Hooks asks, NUL or not."""
    yield entry["card"], f"{where}/card"
    for n, suggestion in enumerate(entry.get("acceptedSuggestions", [])):
        yield suggestion["id"], f"{where}/acceptedSuggestions/{n}/id"
    override = entry.get("overrideReason") or {}
    reason = override.get("reason") or {}
    for part in ("system", "code", "display"):
        yield reason.get(part), f"{where}/overrideReason/reason/{part}"
    yield override.get("userComment"), f"{where}/overrideReason/userComment"


def _identifier(value, where: str):
    if isinstance(value, str) and len(value) > IDENTIFIER_CHARS:
        raise ApiError(400, "invalid_request", f"{where}: {len(value):,} characters; at most {IDENTIFIER_CHARS} are "
                       "accepted for an identifier")
    return value


def _cut(value, chars: int):
    """Free text kept to its first `chars` characters."""
    return value[:chars] if isinstance(value, str) else value


def parse_feedback(service_id: str, entries: list[Mapping]) -> list[FeedbackEntry]:
    """Schema-valid entries -> FeedbackEntry. The key is the service, card, outcome, time and what was chosen:
    the same feedback resent (a retry, a replay) maps to the same key and is stored once; the same feedback
    sent to another service is another service's feedback."""
    parsed = []
    for index, e in enumerate(entries):
        where = f"feedback/{index}"
        for value, place in _stored_text(e, where):
            _no_nul(value, place)
        _identifier(e["card"], f"{where}/card")
        when = _timestamp(e["outcomeTimestamp"], index)
        accepted = tuple(sorted(_identifier(s["id"], f"{where}/acceptedSuggestions/{n}/id")
                                for n, s in enumerate(e.get("acceptedSuggestions", []))))
        override = e.get("overrideReason") or {}
        reason = override.get("reason") or {}
        for part in ("system", "code"):
            _identifier(reason.get(part), f"{where}/overrideReason/reason/{part}")
        key_parts = [service_id, e["card"], e["outcome"], when.isoformat(), accepted, reason.get("system"),
                     reason.get("code")]
        key = hashlib.sha256(json.dumps(key_parts, separators=(",", ":")).encode()).hexdigest()
        parsed.append(FeedbackEntry(card_uuid=e["card"], outcome=e["outcome"], outcome_at=when,
                                    accepted_suggestions=accepted, override_system=reason.get("system"),
                                    override_code=reason.get("code"),
                                    override_display=_cut(reason.get("display"), DISPLAY_CHARS),
                                    user_comment=_cut(override.get("userComment"), STORED_COMMENT_CHARS),
                                    idempotency_key=key))
    return parsed


@dataclass
class TopicReport:
    topic: str
    shown: int | None = 0          # None: feedback about cards this deployment never issued
    accepted: int = 0
    overridden: int = 0
    reasons: dict[tuple, list] = field(default_factory=dict)   # (system, code) -> [display, count]

    def as_json(self) -> dict:
        return {"topic": self.topic, "shown": self.shown, "accepted": self.accepted, "overridden": self.overridden,
                "overrideReasons": [{"system": s, "code": c, "display": d, "count": n}
                                    for (s, c), (d, n) in sorted(self.reasons.items(), key=lambda i: (-i[1][1], str(i[0])))]}

    def reasons_text(self) -> str:
        return "; ".join(f"{terminal_text(r['code']) if r['code'] else NO_REASON} x{r['count']}"
                         for r in self.as_json()["overrideReasons"]) or "-"


# Characters a terminal acts on instead of showing: C0 controls and DEL, C1 controls (0x9b is CSI), line and paragraph
# separators, bidirectional overrides and isolates.
_TERMINAL_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def terminal_text(text: str) -> str:
    """A code of the poster's choosing as `avh-cds feedback-report` prints it to a terminal: each control character
    written as its escape (\\x1b), so feedback cannot set the operator's terminal title, colours or lines."""
    return _TERMINAL_CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def build_report(shown: list[tuple], outcomes: list[tuple]) -> list[TopicReport]:
    topics = {topic: TopicReport(topic, count) for topic, count in shown}
    for topic, outcome, system, code, display, count in outcomes:
        row = topics.setdefault(topic or UNKNOWN_CARD, TopicReport(topic or UNKNOWN_CARD, None if topic is None else 0))
        if outcome == "accepted":
            row.accepted += count
        else:
            row.overridden += count
            entry = row.reasons.setdefault((system, code), [display, 0])
            entry[1] += count
    return sorted(topics.values(), key=lambda r: (r.topic == UNKNOWN_CARD, r.topic))


def format_table(rows: list[TopicReport]) -> str:
    header = ("topic", "shown", "accepted", "overridden", "override reasons")
    body = [(r.topic, "-" if r.shown is None else str(r.shown), str(r.accepted), str(r.overridden), r.reasons_text())
            for r in rows]
    total = ("total", str(sum(r.shown or 0 for r in rows)), str(sum(r.accepted for r in rows)),
             str(sum(r.overridden for r in rows)), "")
    table = [header] + body + [total]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]

    def line(cells):
        return "  ".join(c.ljust(w) if i in (0, 4) else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule] + [line(b) for b in body] + [rule, line(total)])
