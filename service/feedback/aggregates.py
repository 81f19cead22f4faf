"""The governance report's numbers, counted in the database: a handful of GROUP BY queries over the issued cards
and the feedback on them, the same SQLAlchemy Core on SQLite and PostgreSQL.

Cards are counted by the day they were issued (UTC); the feedback on a card counts with its card, whenever it
came, so "cards with no feedback" and the rates of a period describe the same cards. Outcomes count feedback
entries: a card can get more than one (CDS Hooks allows it), so accepted + overridden = feedback entries, and
cards with feedback + cards with no feedback = cards issued. Feedback about cards this service never issued has
no topic and no issue time: it is counted apart, by the time it was given.

The cards issued, cards with feedback, and accepted and overridden entries per (day, topic, service) come from a
rollup the database keeps with triggers (service/feedback/rollup.py): a year is a few thousand rows, whoever
wrote the raw rows. The rest is read from the feedback rows, which carry their card's topic and issue time
(copied when stored), through partial indexes (store.COVERING_INDEXES): no query joins or scans a year of issued
cards. Each query returns at most one row per (topic, service, day) or per (topic, reason), and the weekly
series, the per-topic and per-service totals and the alert-fatigue window are summed from them here.
"""
from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field

from sqlalchemy import and_, func, literal_column, or_, select, true
from sqlalchemy.exc import SQLAlchemyError

from service.feedback.store import FeedbackStore, StorageUnavailable, feedback, report_days

COMMENT_CHARS = 200          # a comment is shown cut to this many characters
COMMENTS_PER_TOPIC = 10      # the latest comments shown per topic
FATIGUE_DAYS = 30
# Written into the SQL, not bound: PostgreSQL matches a partial index's WHERE (store.COVERING_INDEXES) only
# against a literal, and a prepared statement's generic plan would see a parameter.
ACCEPTED, OVERRIDDEN = literal_column("'accepted'"), literal_column("'overridden'")


@dataclass(frozen=True)
class Filters:
    start: dt.date               # first day of the period, inclusive (UTC)
    end: dt.date                 # last day, inclusive
    service: str | None = None   # one CDS service, or all


@dataclass
class Counts:
    """Cards issued and the feedback on them, for one slice (a topic, a service, a week...)."""
    issued: int = 0
    with_feedback: int = 0       # cards that got at least one feedback entry
    accepted: int = 0            # feedback entries
    overridden: int = 0

    def add(self, other: "Counts") -> None:
        self.issued += other.issued
        self.with_feedback += other.with_feedback
        self.accepted += other.accepted
        self.overridden += other.overridden

    @property
    def no_feedback(self) -> int:
        return self.issued - self.with_feedback

    @property
    def entries(self) -> int:
        return self.accepted + self.overridden

    def as_json(self) -> dict:
        return {"issued": self.issued, "cardsWithFeedback": self.with_feedback, "noFeedback": self.no_feedback,
                "feedbackEntries": self.entries, "accepted": self.accepted, "overridden": self.overridden,
                "feedbackRate": rate(self.with_feedback, self.issued), "acceptanceRate": rate(self.accepted, self.entries),
                "overrideRate": rate(self.overridden, self.entries)}


def rate(part: int, whole: int) -> dict:
    """A rate with the count it rests on; no value when it rests on nothing."""
    return {"value": round(part / whole, 4) if whole else None, "part": part, "of": whole}


@dataclass
class Fatigue:
    topic: str
    counts: Counts
    flagged: bool

    def as_json(self) -> dict:
        return {"topic": self.topic, "flagged": self.flagged, **self.counts.as_json()}


@dataclass
class GovernanceReport:
    filters: Filters
    today: dt.date
    backend: str
    threshold: float
    min_entries: int
    by_topic: dict[str, Counts]
    by_service: dict[str, Counts]
    by_topic_and_service: dict[tuple[str, str], Counts]
    weekly: dict[tuple[dt.date, str], Counts]          # (Monday of the week, topic)
    weeks: list[dt.date]
    reasons: list[dict]                                  # topic, system, code, display, count
    suggestions: list[dict]                              # topic, suggestion (None: not recorded), count
    unknown_cards: Counts
    fatigue: list[Fatigue]
    comments: list[dict] | None = None                   # None: not shown to this viewer
    services_seen: list[str] = field(default_factory=list)

    @property
    def total(self) -> Counts:
        total = Counts()
        for counts in self.by_topic.values():
            total.add(counts)
        return total

    @property
    def fatigue_window(self) -> tuple[dt.date, dt.date]:
        return self.today - dt.timedelta(days=FATIGUE_DAYS - 1), self.today

    def as_json(self) -> dict:
        start, end = self.fatigue_window
        return {
            "period": {"from": self.filters.start.isoformat(), "to": self.filters.end.isoformat(),
                       "service": self.filters.service},
            "database": self.backend,
            "total": self.total.as_json(),
            "byTopic": [{"topic": t, **c.as_json()} for t, c in self.by_topic.items()],
            "byService": [{"service": s, **c.as_json()} for s, c in self.by_service.items()],
            "byTopicAndService": [{"topic": t, "service": s, **c.as_json()}
                                  for (t, s), c in self.by_topic_and_service.items()],
            "weekly": [{"week": w.isoformat(), "topic": t, **c.as_json()} for (w, t), c in self.weekly.items()],
            "overrideReasons": self.reasons,
            "acceptedSuggestions": self.suggestions,
            "unknownCards": {"feedbackEntries": self.unknown_cards.entries, "accepted": self.unknown_cards.accepted,
                             "overridden": self.unknown_cards.overridden},
            "alertFatigue": {"from": start.isoformat(), "to": end.isoformat(), "overrideRateAbove": self.threshold,
                             "minimumFeedbackEntries": self.min_entries,
                             "topics": [f.as_json() for f in self.fatigue]},
            **({"comments": self.comments} if self.comments is not None else {}),
        }


def _moment(day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc)


def _between(column, start: dt.date, end: dt.date):
    return and_(column >= _moment(start), column < _moment(end + dt.timedelta(days=1)))


def _as_date(value) -> dt.date:
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(value)    # SQLite answers text


def monday(day: dt.date) -> dt.date:
    return day - dt.timedelta(days=day.weekday())


def _spans(*spans: tuple[dt.date, dt.date]) -> list[tuple[dt.date, dt.date]]:
    """The days of the given spans as few disjoint spans (the period and the fatigue window mostly overlap)."""
    merged: list[list[dt.date]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1] + dt.timedelta(days=1):
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(start, end) for start, end in merged]


def _service(column, filters: Filters):
    return column == filters.service if filters.service else true()


def _on_known_cards(filters: Filters, start: dt.date | None = None, end: dt.date | None = None):
    """Feedback on cards this service issued between start and end (default: the period's)."""
    return and_(feedback.c.card_known.is_(True), _service(feedback.c.service_id, filters),
                _between(feedback.c.card_issued_at, start or filters.start, end or filters.end))


def _daily_counts(conn, filters: Filters, start: dt.date, end: dt.date):
    """(topic, service, day, Counts) of the cards issued from start to end, read from the per-day rollup that the
    database keeps (service/feedback/rollup.py). A row whose counts all went back to zero (its cards deleted) is
    no row: the raw tables would have none."""
    day = report_days.c.day
    rows = conn.execute(select(report_days.c.topic, report_days.c.service_id, day, report_days.c.cards_issued,
                               report_days.c.cards_with_feedback, report_days.c.accepted, report_days.c.overridden)
                        .where(day >= start, day <= end, _service(report_days.c.service_id, filters),
                               or_(report_days.c.cards_issued != 0, report_days.c.cards_with_feedback != 0)))
    return [(topic, service, _as_date(d), Counts(issued, with_feedback, accepted, overridden))
            for topic, service, d, issued, with_feedback, accepted, overridden in rows]


def _override_reasons(conn, filters: Filters) -> list[dict]:
    group = (feedback.c.card_topic, feedback.c.override_system, feedback.c.override_code)
    query = (select(*group, func.max(feedback.c.override_display), func.count())
             .where(feedback.c.outcome == OVERRIDDEN, _on_known_cards(filters)).group_by(*group))
    rows = [{"topic": t, "system": s, "code": c, "display": d, "count": n} for t, s, c, d, n in conn.execute(query)]
    return sorted(rows, key=lambda r: (r["topic"], -r["count"], str(r["code"])))


def _accepted_suggestions(conn, filters: Filters) -> list[dict]:
    """Which suggestion each accepted entry took (its id; several joined by " + "; None: cards issued before
    suggestions were recorded)."""
    group = (feedback.c.card_topic, feedback.c.accepted_suggestion)
    query = (select(*group, func.count()).where(feedback.c.outcome == ACCEPTED, _on_known_cards(filters))
             .group_by(*group))
    rows = [{"topic": t, "suggestion": s, "count": n} for t, s, n in conn.execute(query)]
    return sorted(rows, key=lambda r: (r["topic"], -r["count"], str(r["suggestion"])))


def _unknown_cards(conn, filters: Filters) -> Counts:
    query = (select(feedback.c.outcome, func.count())
             .where(feedback.c.card_known.is_(False), _between(feedback.c.outcome_at, filters.start, filters.end),
                    _service(feedback.c.service_id, filters))
             .group_by(feedback.c.outcome))
    outcomes = dict(conn.execute(query).all())
    return Counts(accepted=outcomes.get("accepted", 0), overridden=outcomes.get("overridden", 0))


def _comments(conn, filters: Filters, topics: list[str]) -> list[dict]:
    """The latest override comments of each topic, cut to COMMENT_CHARS (a character more is read, to know). One
    short query per topic, each reading its newest comments from a partial index (store.COVERING_INDEXES) and
    stopping after COMMENTS_PER_TOPIC, instead of ranking every comment of the period."""
    comments = []
    for topic in topics:
        query = (select(feedback.c.override_code, feedback.c.outcome_at,
                        func.substr(feedback.c.user_comment, 1, COMMENT_CHARS + 1))
                 .where(feedback.c.card_topic == topic, feedback.c.outcome == OVERRIDDEN,
                        feedback.c.user_comment.is_not(None), feedback.c.user_comment != "", _on_known_cards(filters))
                 .order_by(feedback.c.outcome_at.desc(), feedback.c.id.desc()).limit(COMMENTS_PER_TOPIC))
        comments += [{"topic": topic, "code": code, "at": at.replace(tzinfo=at.tzinfo or dt.timezone.utc).isoformat(),
                      "comment": text[:COMMENT_CHARS] + ("…" if len(text) > COMMENT_CHARS else ""),
                      "truncated": len(text) > COMMENT_CHARS}
                     for code, at, text in conn.execute(query)]
    return comments


def governance_report(store: FeedbackStore, filters: Filters, today: dt.date, threshold: float, min_entries: int,
                      with_comments: bool = False) -> GovernanceReport:
    """Every aggregate of the governance page, read in one transaction (one consistent snapshot)."""
    fatigue_start = today - dt.timedelta(days=FATIGUE_DAYS - 1)

    def read(conn):
        daily = [row for start, end in _spans((filters.start, filters.end), (fatigue_start, today))
                 for row in _daily_counts(conn, filters, start, end)]
        return (daily, _override_reasons(conn, filters),
                _accepted_suggestions(conn, filters), _unknown_cards(conn, filters),
                _comments(conn, filters, sorted({row[0] for row in daily if filters.start <= row[2] <= filters.end}))
                if with_comments else None)
    try:
        store.fill_missing_card_copies()
    except SQLAlchemyError as exc:
        raise StorageUnavailable(store.retry_after, reading=True) from exc
    daily, reasons, suggestions, unknown, comments = store.read(read)

    by_topic, by_service, cross, weekly = (defaultdict(Counts) for _ in range(4))
    window = defaultdict(Counts)
    for topic, service, day, counts in daily:
        if filters.start <= day <= filters.end:
            for slot in (by_topic[topic], by_service[service], cross[(topic, service)], weekly[(monday(day), topic)]):
                slot.add(counts)
        if fatigue_start <= day <= today:
            window[topic].add(counts)
    weeks = [monday(filters.start) + dt.timedelta(weeks=i)
             for i in range((monday(filters.end) - monday(filters.start)).days // 7 + 1)]
    fatigue = [Fatigue(t, c, c.entries >= min_entries and c.overridden > threshold * c.entries)
               for t, c in sorted(window.items())]
    return GovernanceReport(
        filters, today, store.backend, threshold, min_entries,
        by_topic=dict(sorted(by_topic.items())), by_service=dict(sorted(by_service.items())),
        by_topic_and_service=dict(sorted(cross.items())), weekly=dict(sorted(weekly.items())), weeks=weeks,
        reasons=reasons, suggestions=suggestions, unknown_cards=unknown,
        fatigue=sorted(fatigue, key=lambda f: (not f.flagged, f.topic)), comments=comments,
        services_seen=sorted(by_service))
