"""The governance report's numbers, counted in the database: a handful of GROUP BY queries over the issued cards
and the feedback on them, the same SQLAlchemy Core on SQLite and PostgreSQL.

Cards are counted by the day they were issued (UTC); the feedback on a card counts with its card, whenever it
came, so "cards with no feedback" and the rates of a period describe the same cards. Outcomes count feedback
entries: a card can get more than one (CDS Hooks allows it), so accepted + overridden = feedback entries, and
cards with feedback + cards with no feedback = cards issued. Feedback about cards this service never issued has
no topic and no issue time: it is counted apart, by the time it was given.

Each query returns at most one row per (topic, service, day) or per (topic, reason): the rows the database
sends back stay few whatever the volume, and the weekly series, the per-topic and per-service totals and the
alert-fatigue window are summed from them here.
"""
from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field

from sqlalchemy import Date, Text, and_, case, cast, func, or_, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import GenericFunction

from service.feedback.store import FeedbackStore, feedback, issued_cards, issued_suggestions

COMMENT_CHARS = 200          # a comment is shown cut to this many characters
COMMENTS_PER_TOPIC = 10      # the latest comments shown per topic
FATIGUE_DAYS = 30


class utc_day(GenericFunction):
    """The UTC calendar day of a stored timestamp. SQLite keeps UTC wall-clock text; PostgreSQL a timestamptz,
    whose date would otherwise follow the session's time zone."""
    type = Date()
    inherit_cache = True


@compiles(utc_day, "sqlite")
def _utc_day_sqlite(element, compiler, **kw):
    return f"date({compiler.process(element.clauses, **kw)})"


@compiles(utc_day, "postgresql")
def _utc_day_postgresql(element, compiler, **kw):
    return f"CAST(({compiler.process(element.clauses, **kw)}) AT TIME ZONE 'UTC' AS DATE)"


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


def _joined_to_card():
    return feedback.join(issued_cards, and_(feedback.c.card_uuid == issued_cards.c.card_uuid,
                                            feedback.c.service_id == issued_cards.c.service_id))


def _service(column, filters: Filters):
    return column == filters.service if filters.service else True


def _daily_counts(conn, filters: Filters, fatigue_start: dt.date, today: dt.date):
    """(topic, service, day, issued, cards with feedback, accepted, overridden) over the period and the fatigue
    window: one pass over the issued cards, outer-joined with the feedback summed per card."""
    per_card = (select(feedback.c.card_uuid, feedback.c.service_id,
                       func.sum(case((feedback.c.outcome == "accepted", 1), else_=0)).label("accepted"),
                       func.sum(case((feedback.c.outcome == "overridden", 1), else_=0)).label("overridden"))
                .group_by(feedback.c.card_uuid, feedback.c.service_id).subquery())
    day = utc_day(issued_cards.c.issued_at)
    query = (select(issued_cards.c.topic, issued_cards.c.service_id, day, func.count(), func.count(per_card.c.card_uuid),
                    func.coalesce(func.sum(per_card.c.accepted), 0), func.coalesce(func.sum(per_card.c.overridden), 0))
             .select_from(issued_cards.outerjoin(per_card, and_(per_card.c.card_uuid == issued_cards.c.card_uuid,
                                                                per_card.c.service_id == issued_cards.c.service_id)))
             .where(or_(_between(issued_cards.c.issued_at, filters.start, filters.end),
                        _between(issued_cards.c.issued_at, fatigue_start, today)),
                    _service(issued_cards.c.service_id, filters))
             .group_by(issued_cards.c.topic, issued_cards.c.service_id, day))
    return [(topic, service, _as_date(d), Counts(*map(int, numbers))) for topic, service, d, *numbers in conn.execute(query)]


def _in_period(filters: Filters):
    return and_(_between(issued_cards.c.issued_at, filters.start, filters.end), _service(issued_cards.c.service_id, filters))


def _override_reasons(conn, filters: Filters) -> list[dict]:
    group = (issued_cards.c.topic, feedback.c.override_system, feedback.c.override_code)
    query = (select(*group, func.max(feedback.c.override_display), func.count()).select_from(_joined_to_card())
             .where(feedback.c.outcome == "overridden", _in_period(filters)).group_by(*group))
    rows = [{"topic": t, "system": s, "code": c, "display": d, "count": n} for t, s, c, d, n in conn.execute(query)]
    return sorted(rows, key=lambda r: (r["topic"], -r["count"], str(r["code"])))


def _accepted_suggestions(conn, filters: Filters) -> list[dict]:
    """Which suggestion each accepted entry took. Feedback names it by uuid (the JSON list of accepted uuids);
    the issued suggestion whose uuid the list holds names it by id. Entries matching none (cards issued before
    suggestions were recorded) are counted as suggestion None."""
    taken = and_(issued_suggestions.c.card_uuid == feedback.c.card_uuid,
                 cast(feedback.c.accepted_suggestions, Text).contains(issued_suggestions.c.suggestion_uuid))
    accepted = and_(feedback.c.outcome == "accepted", _in_period(filters))
    per_suggestion = (select(issued_cards.c.topic, issued_suggestions.c.suggestion, func.count())
                      .select_from(_joined_to_card().join(issued_suggestions, taken)).where(accepted)
                      .group_by(issued_cards.c.topic, issued_suggestions.c.suggestion))
    matched = select(issued_suggestions.c.suggestion_uuid).where(taken).exists()
    unmatched = (select(issued_cards.c.topic, func.count()).select_from(_joined_to_card())
                 .where(accepted, ~matched).group_by(issued_cards.c.topic))
    rows = [{"topic": t, "suggestion": s, "count": n} for t, s, n in conn.execute(per_suggestion)]
    rows += [{"topic": t, "suggestion": None, "count": n} for t, n in conn.execute(unmatched)]
    return sorted(rows, key=lambda r: (r["topic"], -r["count"], str(r["suggestion"])))


def _unknown_cards(conn, filters: Filters) -> Counts:
    query = (select(feedback.c.outcome, func.count())
             .where(feedback.c.card_known.is_(False), _between(feedback.c.outcome_at, filters.start, filters.end),
                    _service(feedback.c.service_id, filters))
             .group_by(feedback.c.outcome))
    outcomes = dict(conn.execute(query).all())
    return Counts(accepted=outcomes.get("accepted", 0), overridden=outcomes.get("overridden", 0))


def _comments(conn, filters: Filters) -> list[dict]:
    """The latest override comments per topic, cut to COMMENT_CHARS (a character more is read, to know)."""
    latest = func.row_number().over(partition_by=issued_cards.c.topic,
                                    order_by=(feedback.c.outcome_at.desc(), feedback.c.id.desc()))
    ranked = (select(issued_cards.c.topic, feedback.c.override_code, feedback.c.outcome_at,
                     func.substr(feedback.c.user_comment, 1, COMMENT_CHARS + 1).label("comment"), latest.label("n"))
              .select_from(_joined_to_card())
              .where(feedback.c.outcome == "overridden", feedback.c.user_comment.is_not(None),
                     feedback.c.user_comment != "", _in_period(filters)).subquery())
    query = select(ranked.c.topic, ranked.c.override_code, ranked.c.outcome_at, ranked.c.comment).where(
        ranked.c.n <= COMMENTS_PER_TOPIC).order_by(ranked.c.topic, ranked.c.n)
    return [{"topic": t, "code": code, "at": at.replace(tzinfo=at.tzinfo or dt.timezone.utc).isoformat(),
             "comment": text[:COMMENT_CHARS] + ("…" if len(text) > COMMENT_CHARS else ""),
             "truncated": len(text) > COMMENT_CHARS}
            for t, code, at, text in conn.execute(query)]


def governance_report(store: FeedbackStore, filters: Filters, today: dt.date, threshold: float, min_entries: int,
                      with_comments: bool = False) -> GovernanceReport:
    """Every aggregate of the governance page, read in one transaction (one consistent snapshot)."""
    fatigue_start = today - dt.timedelta(days=FATIGUE_DAYS - 1)

    def read(conn):
        return (_daily_counts(conn, filters, fatigue_start, today), _override_reasons(conn, filters),
                _accepted_suggestions(conn, filters), _unknown_cards(conn, filters),
                _comments(conn, filters) if with_comments else None)
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
