"""A year of issued cards and feedback, made up but shaped like real use, for the governance page's benchmark
(bench/governance.py) and its tests.

`generate` is deterministic for a seed and returns plain rows in the store's column order; `load` writes them
into a store's tables (COPY on PostgreSQL, multi-row INSERTs on SQLite) after the schema is migrated. Nothing
here is patient data: topics, services, suggestion and reason codes, times, and comments from a fixed list.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import random
import uuid
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

from sqlalchemy import create_engine, text

from service.feedback.store import FeedbackStore, _insert_rows

CARDS = Path(__file__).resolve().parent.parent / "cards"
REASON_SYSTEM = "https://avh-cds.org/fhir/CodeSystem/override-reason"
# topic -> (service, share of the cards, probability that a feedback entry on it is an override)
TOPICS = {
    "surgical-decompression": ("avh-patient-view", 0.16, 0.15),
    "corticosteroids": ("avh-patient-view", 0.16, 0.30),
    "spine-mri": ("avh-patient-view", 0.14, 0.45),
    "preop-cta": ("avh-patient-view", 0.10, 0.55),
    "preop-embolization": ("avh-patient-view", 0.06, 0.40),
    "differential-diagnosis": ("avh-patient-view", 0.08, 0.80),
    "posterior-fixation": ("avh-order-sign", 0.10, 0.20),
    "steroid-duration": ("avh-order-select", 0.08, 0.70),
    "embolization-deferred": ("avh-order-sign", 0.04, 0.35),
    "adjuvant-radiotherapy": ("avh-encounter-discharge", 0.06, 0.25),
    "data-unavailable": ("avh-patient-view", 0.02, 0.90),
}
COMMENTS = ("Discussed at the spine board; plan unchanged.", "Already arranged by neurosurgery.",
            "Not relevant for this admission.", "Imaging done at the referring hospital last week. " * 6, "")
ISSUED = ("card_uuid", "service_id", "topic", "hook_instance", "issued_at")
SUGGESTED = ("suggestion_uuid", "card_uuid", "suggestion")
FEEDBACK = ("idempotency_key", "service_id", "card_uuid", "card_known", "outcome", "outcome_at", "accepted_suggestions",
            "override_system", "override_code", "override_display", "user_comment", "received_at", "card_topic",
            "card_issued_at", "accepted_suggestion")


@dataclass
class Seed:
    issued: list[tuple]          # ISSUED
    suggested: list[tuple]       # SUGGESTED
    feedback: list[tuple]        # FEEDBACK


def _suggestion_ids() -> dict[str, list[str]]:
    ids = {}
    for topic in TOPICS:
        path = CARDS / f"{topic}.json"
        data = json.loads(path.read_text()) if path.exists() else {}
        ids[topic] = [s["id"] for s in data.get("suggestions", [])]
    return ids


def _reasons() -> list[dict]:
    return json.loads((CARDS / "override-reasons.json").read_text())["overrideReasons"]


def generate(cards: int, entries: int, today: dt.date, days: int = 365, seed: int = 17,
             unknown_share: float = 0.01, repeat_share: float = 0.05) -> Seed:
    """`cards` issued over the `days` days ending `today` (UTC), and `entries` feedback entries: most on distinct
    cards, `repeat_share` of them a second entry on a card already answered, `unknown_share` on cards never issued."""
    rng = random.Random(seed)
    new_uuid = lambda: str(uuid.UUID(int=rng.getrandbits(128), version=4))     # noqa: E731
    suggestion_ids, reasons = _suggestion_ids(), _reasons()
    topics = list(TOPICS)
    weights = [TOPICS[t][1] for t in topics]
    first = dt.datetime(today.year, today.month, today.day, tzinfo=dt.timezone.utc) - dt.timedelta(days=days - 1)
    span = days * 86_400
    issued, suggested, offered = [], [], []
    for topic in rng.choices(topics, weights, k=cards):
        card = new_uuid()
        issued.append((card, TOPICS[topic][0], topic, new_uuid(), first + dt.timedelta(seconds=rng.randrange(span))))
        options = [(new_uuid(), sid) for sid in suggestion_ids[topic]]
        suggested += [(s, card, sid) for s, sid in options]
        offered.append(options)
    unknown = int(entries * unknown_share)
    repeats = int(entries * repeat_share)
    answered = rng.sample(range(cards), min(cards, entries - unknown - repeats))
    targets = answered + [rng.choice(answered) for _ in range(repeats)] if answered else []
    feedback = []
    for n, index in enumerate(chain(targets, [None] * unknown)):
        if index is None:
            card, service, topic, issued_at, options = new_uuid(), "avh-patient-view", None, None, []
            when = first + dt.timedelta(seconds=rng.randrange(span))
        else:
            card, service, topic, _, issued_at = issued[index]
            options = offered[index]
            when = min(issued_at + dt.timedelta(minutes=rng.randrange(1, 240)),
                       first + dt.timedelta(seconds=span - 1))
        override = rng.random() < (TOPICS[topic][2] if topic else 0.5)
        key = hashlib.sha256(f"{seed}:{n}".encode()).hexdigest()
        if override:
            reason = rng.choice(reasons + [{}])            # now and then no reason given
            feedback.append((key, service, card, topic is not None, "overridden", when, "[]", reason.get("system"),
                             reason.get("code"), reason.get("display"), rng.choice(COMMENTS) or None, when,
                             topic, issued_at, None))
        else:
            taken = rng.choice(options) if options else (new_uuid(), None)
            feedback.append((key, service, card, topic is not None, "accepted", when, json.dumps([taken[0]]),
                             None, None, None, None, when, topic, issued_at, taken[1]))
    return Seed(issued, suggested, feedback)


def load(store: FeedbackStore, seed: Seed) -> None:
    """Write the rows into the store's (migrated) tables."""
    store.start()
    if store.backend == "postgresql":
        engine = create_engine(store.engine.url)       # without the store's statement timeout: COPY takes a while
        raw = engine.raw_connection()
        try:
            with raw.cursor() as cursor:
                for table, columns, rows in (("avh_issued_card", ISSUED, seed.issued),
                                             ("avh_issued_suggestion", SUGGESTED, seed.suggested),
                                             ("avh_feedback", FEEDBACK, seed.feedback)):
                    with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                        for row in rows:
                            copy.write_row(row)
            raw.commit()
        finally:
            raw.close()
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            for table in ("avh_issued_card", "avh_issued_suggestion", "avh_feedback"):
                conn.execute(text(f"VACUUM ANALYZE {table}"))       # as autovacuum would have, over a year
        engine.dispose()
        return
    with store.engine.begin() as conn:
        stamp = lambda moment: moment.strftime("%Y-%m-%d %H:%M:%S.%f")     # noqa: E731  (as SQLAlchemy writes it)
        _insert_rows(conn, "avh_issued_card", ISSUED, [row[:-1] + (stamp(row[-1]),) for row in seed.issued])
        _insert_rows(conn, "avh_issued_suggestion", SUGGESTED, seed.suggested)
        _insert_rows(conn, "avh_feedback", FEEDBACK, [
            row[:5] + (stamp(row[5]),) + row[6:11] + (stamp(row[11]), row[12], row[13] and stamp(row[13]), row[14])
            for row in seed.feedback])
