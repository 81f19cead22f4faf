"""The governance report's per-day rollup (service/feedback/rollup.py), on SQLite and the real PostgreSQL: rows
written around the service (multi-row INSERTs, UPDATEs, DELETEs typed as SQL) are counted by the database's
triggers, and the numbers stay equal to SQL run by hand over the raw tables; a database made before the rollup
(schema version 2) is back-filled by the migration; on PostgreSQL, two transactions giving a card its first
feedback at once count the card once."""
import datetime as dt
import json
import threading
from pathlib import Path

import pytest
from sqlalchemy import create_engine, insert, text

from service.feedback.store import MIGRATIONS, database_url, feedback, issued_cards, schema_version
from tests.test_governance import (TODAY, assert_report_matches, expected, just_counts, make_app, seed,  # noqa: F401
                                   storage)

HAND_COUNT = """
SELECT ic.topic, count(DISTINCT ic.card_uuid) AS issued,
       count(DISTINCT f.card_uuid) AS with_feedback,
       sum(CASE WHEN f.outcome = 'accepted' THEN 1 ELSE 0 END) AS accepted,
       sum(CASE WHEN f.outcome = 'overridden' THEN 1 ELSE 0 END) AS overridden
  FROM avh_issued_card ic
  LEFT JOIN avh_feedback f ON f.card_uuid = ic.card_uuid AND f.service_id = ic.service_id AND f.card_known = :known
 WHERE ic.issued_at >= :start AND ic.issued_at < :end
 GROUP BY ic.topic ORDER BY ic.topic
"""


def _url(storage) -> str:
    return database_url(storage.get("database_url", ""), storage.get("sqlite_path", Path()))


def by_hand(engine, start: dt.date, end: dt.date) -> dict:
    """Per topic, counted by SQL over the raw tables (a join, as docs/governance.md shows), not the rollup."""
    moment = lambda d: dt.datetime(d.year, d.month, d.day, tzinfo=dt.timezone.utc)      # noqa: E731
    with engine.connect() as conn:
        rows = conn.execute(text(HAND_COUNT), {"known": True, "start": moment(start),
                                               "end": moment(end + dt.timedelta(days=1))}).all()
    return {topic: {"issued": issued, "cardsWithFeedback": answered, "noFeedback": issued - answered,
                    "feedbackEntries": int(accepted or 0) + int(overridden or 0), "accepted": int(accepted or 0),
                    "overridden": int(overridden or 0)} for topic, issued, answered, accepted, overridden in rows}


def _card(uuid, topic, when, service="avh-patient-view"):
    return {"card_uuid": uuid, "service_id": service, "topic": topic, "hook_instance": "h", "issued_at": when}


def _entry(key, card, topic, issued_at, outcome, known=True, service="avh-patient-view", copies=True):
    return {"idempotency_key": key, "service_id": service, "card_uuid": card, "card_known": known, "outcome": outcome,
            "outcome_at": issued_at + dt.timedelta(minutes=5), "accepted_suggestions": [],
            "override_code": "not-applicable" if outcome == "overridden" else None,
            "received_at": issued_at + dt.timedelta(minutes=5),
            "card_topic": topic if copies else None, "card_issued_at": issued_at if copies else None}


def test_rows_written_as_sql_around_the_service_are_counted_by_the_database(storage):
    app = make_app(storage)                       # migrated: the rollup and its triggers exist
    client = app.test_client()
    engine = create_engine(_url(storage))
    noon = dt.datetime(TODAY.year, TODAY.month, TODAY.day, 12, tzinfo=dt.timezone.utc)
    yesterday = noon - dt.timedelta(days=1)
    start, end = TODAY - dt.timedelta(days=6), TODAY

    def check():
        data = client.get(f"/governance?format=json&from={start}&to={end}").json
        assert {r["topic"]: just_counts(r) for r in data["byTopic"]} == by_hand(engine, start, end)
        return data

    with engine.begin() as conn:              # one multi-row INSERT per table, as an import would
        conn.execute(insert(issued_cards), [_card("a1", "spine-mri", noon), _card("a2", "spine-mri", yesterday),
                                            _card("a3", "spine-mri", noon), _card("b1", "corticosteroids", noon)])
        conn.execute(insert(feedback), [_entry("k1", "a1", "spine-mri", noon, "accepted"),
                                        _entry("k2", "a1", "spine-mri", noon, "overridden"),       # a second entry
                                        _entry("k3", "a2", "spine-mri", yesterday, "overridden"),
                                        _entry("k4", "b1", "corticosteroids", noon, "accepted", known=False)])
    data = check()
    assert {r["topic"]: (r["issued"], r["cardsWithFeedback"], r["accepted"], r["overridden"]) for r in data["byTopic"]} == \
        {"spine-mri": (3, 2, 1, 2), "corticosteroids": (1, 0, 0, 0)}

    with engine.begin() as conn:              # rows changed and removed by hand
        conn.execute(text("UPDATE avh_feedback SET card_known = :known, card_topic = 'corticosteroids', "
                          "card_issued_at = :at WHERE idempotency_key = 'k4'"), {"known": True, "at": noon})
        conn.execute(text("UPDATE avh_feedback SET outcome = 'accepted' WHERE idempotency_key = 'k2'"))
        conn.execute(text("DELETE FROM avh_feedback WHERE idempotency_key = 'k3'"))
        conn.execute(text("DELETE FROM avh_issued_card WHERE card_uuid = 'a3'"))
        conn.execute(text("UPDATE avh_issued_card SET topic = 'preop-cta' WHERE card_uuid = 'a2'"))
    data = check()
    assert {r["topic"]: (r["issued"], r["cardsWithFeedback"], r["accepted"], r["overridden"]) for r in data["byTopic"]} == \
        {"spine-mri": (1, 1, 2, 0), "corticosteroids": (1, 1, 1, 0), "preop-cta": (1, 0, 0, 0)}

    with engine.begin() as conn:              # a feedback row without its card's copies: the report fills them in
        conn.execute(insert(feedback), [_entry("k5", "a2", None, yesterday, "overridden", copies=False)])
    data = check()
    assert [r for r in data["byTopic"] if r["topic"] == "preop-cta"][0]["overridden"] == 1

    with engine.begin() as conn:              # everything deleted: no topic left, as the raw tables say
        conn.execute(text("DELETE FROM avh_feedback"))
        conn.execute(text("DELETE FROM avh_issued_card"))
    assert check()["byTopic"] == []
    engine.dispose()
    app.extensions["avh"].store.dispose()


def test_a_database_made_before_the_rollup_is_counted_by_the_migration(storage, seed):  # noqa: F811
    url = _url(storage)
    engine = create_engine(url)
    with engine.begin() as conn:              # schema version 2, as the previous release left it, with a year of rows
        schema_version.create(conn)
        for version, step in enumerate(MIGRATIONS[:2], start=1):
            step(conn)
            conn.execute(insert(schema_version).values(version=version))
        conn.execute(insert(issued_cards), [dict(zip(("card_uuid", "service_id", "topic", "hook_instance", "issued_at"), row))
                                            for row in seed.issued])
        names = ("idempotency_key", "service_id", "card_uuid", "card_known", "outcome", "outcome_at",
                 "accepted_suggestions", "override_system", "override_code", "override_display", "user_comment",
                 "received_at", "card_topic", "card_issued_at", "accepted_suggestion")
        conn.execute(insert(feedback), [{**dict(zip(names, row)), "accepted_suggestions": json.loads(row[6])}
                                        for row in seed.feedback])
    assert "avh_report_day" not in {name for name in engine.dialect.get_table_names(engine.connect())}
    app = make_app(storage)                   # migrates to the current version: the rollup is filled in
    start, end = TODAY - dt.timedelta(days=89), TODAY
    data = app.test_client().get(f"/governance?format=json&from={start}&to={end}").json
    assert_report_matches(data, expected(seed, start, end))
    assert {r["topic"]: just_counts(r) for r in data["byTopic"]} == by_hand(engine, start, end)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT max(version) FROM avh_schema_version")).scalar() == len(MIGRATIONS)
    engine.dispose()
    app.extensions["avh"].store.dispose()


def test_two_transactions_giving_a_card_its_first_feedback_at_once_count_it_once(postgres_url):
    storage_ = {"database_url": postgres_url}
    from tests.test_feedback import _empty
    _empty(postgres_url)
    app = make_app(storage_)
    engine = create_engine(_url(storage_))
    noon = dt.datetime(TODAY.year, TODAY.month, TODAY.day, 12, tzinfo=dt.timezone.utc)
    with engine.begin() as conn:
        conn.execute(insert(issued_cards), [_card("c1", "spine-mri", noon)])
    first = engine.connect()
    first.begin()
    first.execute(insert(feedback), [_entry("t1", "c1", "spine-mri", noon, "accepted")])   # holds the rollup row
    second_pid = []

    def second():
        with engine.begin() as conn:
            second_pid.append(conn.execute(text("SELECT pg_backend_pid()")).scalar())
            conn.execute(insert(feedback), [_entry("t2", "c1", "spine-mri", noon, "overridden")])
    thread = threading.Thread(target=second)
    thread.start()
    with engine.connect() as watcher:         # wait until the second really waits for the first's lock
        for _ in range(500):
            waiting = second_pid and watcher.execute(text(
                "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = :pid"), {"pid": second_pid[0]}).scalar()
            if waiting:
                break
            threading.Event().wait(0.02)
    assert waiting
    first.commit()
    first.close()
    thread.join(timeout=30)
    data = app.test_client().get("/governance?format=json").json
    assert [(r["topic"], r["cardsWithFeedback"], r["accepted"], r["overridden"]) for r in data["byTopic"]] == \
        [("spine-mri", 1, 1, 1)]
    engine.dispose()
    app.extensions["avh"].store.dispose()
