"""Feedback kept: validated, stored once, joined with the cards issued; on SQLite and on the real PostgreSQL."""
import datetime as dt
import json
import multiprocessing
import os
import threading
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import given, settings, strategies as st
from sqlalchemy import create_engine, select, text
from sqlalchemy.dialects import sqlite

from tests.ports import listening_socket, port_of, refused_port
from tests.fhir_records import (NO_AUTH, CPT, bounds_duration, draft_dexamethasone, draft_order, hook_request,
                                in_pathway_chart)
from service import cli, create_app
from service.config import Settings
from service.feedback import store as store_module
from service.feedback.store import (ISSUED_ROWS_PER_STATEMENT, MIGRATIONS, database_url, feedback, issued_cards, metadata,
                                    schema_version, sqlite_stamp, statement_sizes)

REASON_SYSTEM = "https://avh-cds.org/fhir/CodeSystem/override-reason"


def _empty(url: str) -> str:
    engine = create_engine(url)
    metadata.drop_all(engine)
    engine.dispose()
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def storage(request, tmp_path):
    """Settings overrides for a fresh, empty store of each backend."""
    if request.param == "sqlite":
        return {"sqlite_path": tmp_path / "feedback.sqlite3"}
    return {"database_url": _empty(request.getfixturevalue("postgres_url"))}


@pytest.fixture
def app(storage):
    app = create_app(Settings.from_env(NO_AUTH, **storage))
    yield app
    app.extensions["avh"].store.dispose()


def issue_cards(client, pid="p1"):
    """Post order-sign for a patient in the pathway: two warnings, each with suggestions (the answer closed, as
    a WSGI server closes it: its cards are queued then)."""
    drafts = [draft_order(CPT, "63046", "Laminectomy", patient_id=pid, id="surg-1"),
              draft_dexamethasone([bounds_duration(20)], patient_id=pid, id="dex-1")]
    response = client.post("/cds-services/avh-order-sign",
                           json=hook_request("order-sign", pid, in_pathway_chart(pid), drafts))
    assert response.status_code == 200
    return {c["source"]["topic"]["code"]: c for c in response.json["cards"]}


def accepted(card, when="2026-11-24T10:00:00Z"):
    return {"card": card["uuid"], "outcome": "accepted", "outcomeTimestamp": when,
            "acceptedSuggestions": [{"id": card["suggestions"][0]["uuid"]}]}


def overridden(card, code="patient-declined", when="2026-11-24T10:05:00Z"):
    return {"card": card["uuid"], "outcome": "overridden", "outcomeTimestamp": when,
            "overrideReason": {"reason": {"system": REASON_SYSTEM, "code": code, "display": code.replace("-", " ")},
                               "userComment": "discussed with the team"}}


def post_feedback(client, entries, service="avh-order-sign"):
    return client.post(f"/cds-services/{service}/feedback", json={"feedback": entries})


def report(app):
    store = app.extensions["avh"].store
    from service.feedback.entries import build_report
    return {r.topic: r.as_json() for r in build_report(*store.report_rows())}


def test_feedback_is_stored_once_and_joined_with_the_cards_shown(app, client):
    cards = issue_cards(client)
    entries = [accepted(cards["posterior-fixation"]), overridden(cards["steroid-duration"])]
    first = post_feedback(client, entries)
    assert first.status_code == 200
    assert first.json == {"received": 2, "stored": 2, "duplicates": 0, "unknownCards": []}
    replay = post_feedback(client, entries)
    assert replay.status_code == 200 and replay.json["stored"] == 0 and replay.json["duplicates"] == 2
    # The same instant written differently is the same feedback.
    same = dict(entries[0], outcomeTimestamp="2026-11-24T10:00:00+00:00")
    assert post_feedback(client, [same]).json["stored"] == 0
    rows = report(app)
    assert rows["posterior-fixation"] == {"topic": "posterior-fixation", "shown": 1, "accepted": 1, "overridden": 0,
                                          "overrideReasons": []}
    assert rows["steroid-duration"]["overridden"] == 1 and rows["steroid-duration"]["overrideReasons"] == [
        {"system": REASON_SYSTEM, "code": "patient-declined", "display": "patient declined", "count": 1}]


def test_a_different_outcome_for_the_same_card_is_new_feedback(app, client):
    cards = issue_cards(client)
    card = cards["steroid-duration"]
    assert post_feedback(client, [overridden(card, "not-applicable")]).json["stored"] == 1
    assert post_feedback(client, [overridden(card, "managed-elsewhere")]).json["stored"] == 1
    assert post_feedback(client, [accepted(card, "2026-11-24T11:00:00Z")]).json["stored"] == 1
    row = report(app)["steroid-duration"]
    assert (row["accepted"], row["overridden"]) == (1, 2)
    assert sorted(r["code"] for r in row["overrideReasons"]) == ["managed-elsewhere", "not-applicable"]


def test_unknown_cards_are_accepted_but_marked(app, client):
    cards = issue_cards(client)
    stranger = str(uuid.uuid4())
    response = post_feedback(client, [overridden({"uuid": stranger}), accepted(cards["posterior-fixation"])])
    assert response.status_code == 200 and response.json["stored"] == 2 and response.json["unknownCards"] == [stranger]
    # A card issued by another service is not this service's card.
    other = post_feedback(client, [overridden(cards["posterior-fixation"])], service="avh-patient-view")
    assert other.json["unknownCards"] == [cards["posterior-fixation"]["uuid"]]
    rows = report(app)
    assert rows["(unknown card)"]["shown"] is None and rows["(unknown card)"]["overridden"] == 2
    with app.extensions["avh"].store.engine.connect() as conn:
        marks = dict(conn.execute(select(feedback.c.card_uuid, feedback.c.card_known)
                                  .where(feedback.c.service_id == "avh-order-sign")).all())
    assert marks == {stranger: False, cards["posterior-fixation"]["uuid"]: True}


def test_issued_cards_are_recorded_without_patient_data(app, client):
    body = hook_request("order-sign", "p-secret", in_pathway_chart("p-secret"),
                        [draft_order(CPT, "63046", "Laminectomy", patient_id="p-secret", id="surg-1")])
    cards = client.post("/cds-services/avh-order-sign", json=body).json["cards"]
    app.extensions["avh"].store.flush_issued()          # the background writer's batch, now
    with app.extensions["avh"].store.engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(select(issued_cards))]
    assert [r["card_uuid"] for r in rows] == [cards[0]["uuid"]]
    assert set(rows[0]) == {"card_uuid", "service_id", "topic", "hook_instance", "issued_at"}
    assert (rows[0]["service_id"], rows[0]["topic"], rows[0]["hook_instance"]) == \
        ("avh-order-sign", "posterior-fixation", body["hookInstance"])
    assert "p-secret" not in json.dumps(rows, default=str)


def test_issued_at_reads_back_as_written_and_a_batch_written_twice_is_stored_once(app):
    store = app.extensions["avh"].store
    when = dt.datetime(2026, 11, 24, 2, 30, 15, 123456, tzinfo=dt.timezone.utc)
    cards = [(f"00000000-0000-4000-8000-00000000000{i}", "spine-mri") for i in range(3)]
    store.record_issued("avh-patient-view", "h-1", cards, when)
    store.flush_issued()
    store.record_issued("avh-patient-view", "h-1", cards, when)     # a batch retried after a failure
    store.flush_issued()
    with store.engine.connect() as conn:
        stamps = list(conn.execute(select(issued_cards.c.issued_at)).scalars())
    assert len(stamps) == 3
    assert all(s.replace(tzinfo=s.tzinfo or dt.timezone.utc) == when for s in stamps)


@settings(max_examples=500, deadline=None)
@given(st.datetimes(timezones=st.none() | st.timezones() | st.builds(
    dt.timezone, st.timedeltas(min_value=-dt.timedelta(hours=23, minutes=59), max_value=dt.timedelta(hours=23, minutes=59)))))
def test_an_issued_cards_time_is_the_text_sqlalchemys_sqlite_datetime_writes(when):
    """sqlite_stamp stands in for the column type's bind processor on SQLite: the same text for any datetime,
    with or without an offset (the date and time as given, microseconds always written, no offset)."""
    dialect = sqlite.dialect()
    assert sqlite_stamp(when) == issued_cards.c.issued_at.type.dialect_impl(dialect).bind_processor(dialect)(when)


def test_a_batch_of_many_statements_stores_every_row_once_with_its_own_fields(app):
    """More rows than one statement holds (ISSUED_ROWS_PER_STATEMENT), from calls at different times, one row
    of them already stored: each row is stored once, with its own topic, hookInstance and time."""
    store = app.extensions["avh"].store
    start = dt.datetime(2026, 11, 24, 2, 30, tzinfo=dt.timezone.utc)
    calls = [(f"h-{c}", start + dt.timedelta(seconds=c), [(str(uuid.uuid4()), f"topic-{c % 7}-{i}") for i in range(4)])
             for c in range(ISSUED_ROWS_PER_STATEMENT // 2 + 1)]        # 400 rows: three statements
    hook_instance, when, cards = calls[5]
    store.record_issued("avh-patient-view", hook_instance, cards[:1], when)
    store.flush_issued()
    for hook_instance, when, cards in calls:
        store.record_issued("avh-patient-view", hook_instance, cards, when)
    store.flush_issued()
    with store.engine.connect() as conn:
        rows = {r.card_uuid: r for r in conn.execute(select(issued_cards))}
    expected = {card_uuid: (hook_instance, when, topic) for hook_instance, when, cards in calls for card_uuid, topic in cards}
    assert len(rows) == len(expected) == 4 * len(calls) > 2 * ISSUED_ROWS_PER_STATEMENT
    for card_uuid, (hook_instance, when, topic) in expected.items():
        row = rows[card_uuid]
        assert (row.hook_instance, row.topic, row.service_id) == (hook_instance, topic, "avh-patient-view")
        assert row.issued_at.replace(tzinfo=row.issued_at.tzinfo or dt.timezone.utc) == when


@pytest.mark.parametrize("most", [1, 2, 199, 333])
def test_a_batch_is_cut_into_statements_of_a_few_sizes_in_order(most):
    """Every row once, as many full statements as fit, then powers of two: at most most.bit_length() + 1 sizes."""
    seen = set()
    for count in range(0, 3 * most + 300):
        sizes = statement_sizes(count, most)
        assert sum(sizes) == count and all(0 < s <= most for s in sizes) and sizes == sorted(sizes, reverse=True)
        assert all(s == most or s & (s - 1) == 0 for s in sizes)
        seen.update(sizes)
    assert len(seen) <= most.bit_length() + 1


def test_batches_of_any_size_write_statements_of_a_few_shapes(app, monkeypatch):
    """The driver keeps each statement text prepared: batches of 1 to 70 cards are written with at most 7 INSERT
    texts (1, 2, 4, 8, 16, 32, 64 rows), each card once."""
    store = app.extensions["avh"].store
    texts = set()
    insert_sql = store_module._insert_sql
    monkeypatch.setattr(store_module, "_insert_sql", lambda *a: texts.add(insert_sql(*a)) or insert_sql(*a))
    when = dt.datetime(2026, 11, 24, 2, 30, tzinfo=dt.timezone.utc)
    issued = []
    for n in range(1, 71):
        cards = [(str(uuid.uuid4()), "spine-mri") for _ in range(n)]
        issued += cards
        store.record_issued("avh-patient-view", f"h-{n}", cards, when)
        store.flush_issued()
    assert len(texts) == 7
    with store.engine.connect() as conn:
        assert sorted(conn.execute(select(issued_cards.c.card_uuid)).scalars()) == sorted(u for u, _ in issued)


def test_a_batch_the_driver_refuses_stays_queued(app, caplog):
    """A driver error in the middle of a batch (here: its suggestions' table is gone) fails the batch as a
    SQLAlchemy error would: nothing of it is kept, it stays queued, a warning says so."""
    store = app.extensions["avh"].store
    when = dt.datetime(2026, 11, 24, 2, 30, tzinfo=dt.timezone.utc)
    card = str(uuid.uuid4())
    store.record_issued("avh-patient-view", "h-1", [(card, "spine-mri")], when, [(str(uuid.uuid4()), card, "s")])
    with store.engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE avh_issued_suggestion")
    assert store.flush_issued() is False
    assert [row[0] for row in store._pending] == [card]
    assert _issued_uuids(app) == set()
    assert "1 issued cards not recorded yet" in caplog.text


def _issued_uuids(app) -> set[str]:
    with app.extensions["avh"].store.engine.connect() as conn:
        return set(conn.execute(select(issued_cards.c.card_uuid)).scalars())


def test_issued_cards_are_written_by_the_background_writer_and_at_close(storage):
    app = create_app(Settings.from_env(NO_AUTH, issued_flush_seconds=0.1, **storage))
    cards = issue_cards(app.test_client())        # no call writes a batch: the writer thread does
    wanted = {c["uuid"] for c in cards.values()}
    for _ in range(100):                       # within a few flush intervals, without any explicit flush
        if _issued_uuids(app) == wanted:
            break
        time.sleep(0.05)
    assert _issued_uuids(app) == wanted
    app.extensions["avh"].store.dispose()
    # A writer that would not run for a minute: closing the store (process exit, dispose) writes its rows.
    slow = create_app(Settings.from_env(NO_AUTH, issued_flush_seconds=60, **storage))
    later = issue_cards(slow.test_client(), "p2")
    assert not {c["uuid"] for c in later.values()} & _issued_uuids(slow)
    slow.extensions["avh"].store.close()
    assert {c["uuid"] for c in later.values()} <= _issued_uuids(slow)
    slow.extensions["avh"].store.dispose()


def test_no_call_writes_a_batch_the_writer_thread_does(storage, monkeypatch):
    """A call that finds a batch due does not write it (after its answer, the batch of ~500 calls held up its
    thread and the next call on its connection, tens of ms once in ~500 calls): the writer thread does, on its own
    schedule. Here the store's clock is made up and the writer's real wait is a minute: no batch is written until
    the writer's own step (flush_if_due) runs, and what it writes is every call's cards."""
    import service.feedback.store
    clock = [1000.0]
    monkeypatch.setattr(service.feedback.store, "time", SimpleNamespace(monotonic=lambda: clock[0], sleep=time.sleep))
    app = create_app(Settings.from_env(NO_AUTH, issued_flush_seconds=60, **storage))
    client, store = app.test_client(), app.extensions["avh"].store
    written_by = []
    flush = store.flush_issued
    monkeypatch.setattr(store, "flush_issued", lambda: written_by.append(threading.current_thread().name) or flush())
    first = issue_cards(client, "p1")
    clock[0] += 30
    second = issue_cards(client, "p2")
    clock[0] += 31
    third = issue_cards(client, "p3")                           # a batch due: not written by this call
    assert _issued_uuids(app) == set() and written_by == []
    assert store._writer.name == "avh-issued-cards" and store._writer.is_alive()
    assert store.flush_if_due() == 60                           # the writer's step: the batch, then 60 s to the next
    assert _issued_uuids(app) == {c["uuid"] for cards in (first, second, third) for c in cards.values()}
    store.dispose()


def _order_sign_environ(pid: str) -> dict:
    from werkzeug.test import EnvironBuilder
    drafts = [draft_order(CPT, "63046", "Laminectomy", patient_id=pid, id="surg-1"),
              draft_dexamethasone([bounds_duration(20)], patient_id=pid, id="dex-1")]
    return EnvironBuilder(path="/cds-services/avh-order-sign", method="POST",
                          json=hook_request("order-sign", pid, in_pathway_chart(pid), drafts)).get_environ()


def test_a_calls_cards_are_counted_and_queued_once_its_answer_has_been_sent(storage):
    """As a WSGI server runs the app: while the answer's bytes are written, nothing of the call is recorded yet;
    close() (after the last byte) counts its cards and queues them for the feedback join."""
    from tests.deployment_support import sample
    app = create_app(Settings.from_env(NO_AUTH, issued_flush_seconds=60, **storage))
    store, metrics = app.extensions["avh"].store, lambda: app.test_client().get("/metrics").get_data(as_text=True)
    counted = lambda text: sample(text, "avh_cds_cards_total", service="avh-order-sign", topic="posterior-fixation")
    before = counted(metrics())
    body = app(_order_sign_environ("p1"), lambda status, headers, exc_info=None: None)
    cards = json.loads(b"".join(body))["cards"]
    assert cards and store._pending == [] and counted(metrics()) == before
    body.close()
    assert {row[0] for row in store._pending} == {c["uuid"] for c in cards} and counted(metrics()) == before + 1
    store.dispose()


def test_issued_cards_written_before_the_answer_when_the_flush_interval_is_zero(storage):
    app = create_app(Settings.from_env(NO_AUTH, issued_flush_seconds=0, **storage))
    cards = issue_cards(app.test_client())
    assert _issued_uuids(app) == {c["uuid"] for c in cards.values()}
    app.extensions["avh"].store.dispose()


def test_at_most_max_pending_issued_cards_wait_the_oldest_go_first(storage):
    app = create_app(Settings.from_env(NO_AUTH, issued_flush_seconds=60, issued_max_pending=3, **storage))
    client = app.test_client()
    first, second = issue_cards(client, "p1"), issue_cards(client, "p2")      # two cards each
    assert app.extensions["avh"].store.flush_issued()
    oldest, kept = list(first.values())        # in the order the answer listed them, as they were queued
    assert _issued_uuids(app) == {kept["uuid"]} | {c["uuid"] for c in second.values()}
    app.extensions["avh"].store.dispose()


def test_feedback_reaching_another_worker_before_its_card_was_written_is_joined(storage):
    issuing = create_app(Settings.from_env(NO_AUTH, issued_flush_seconds=0.3, **storage))
    other = create_app(Settings.from_env(NO_AUTH, issued_flush_seconds=0.3, **storage))   # a second worker
    cards = issue_cards(issuing.test_client())
    response = post_feedback(other.test_client(), [accepted(cards["posterior-fixation"])])
    assert response.status_code == 200 and response.json["unknownCards"] == []
    for app in (issuing, other):
        app.extensions["avh"].store.dispose()


@pytest.mark.parametrize("entry, where", [
    ({"outcome": "accepted", "outcomeTimestamp": "2026-11-24T10:00:00Z", "acceptedSuggestions": [{"id": "x"}]}, "card"),
    ({"card": "c", "outcome": "accepted", "outcomeTimestamp": "2026-11-24T10:00:00Z"}, "acceptedSuggestions"),
    ({"card": "c", "outcome": "ignored", "outcomeTimestamp": "2026-11-24T10:00:00Z"}, "outcome"),
    ({"card": "c", "outcome": "overridden", "outcomeTimestamp": "yesterday"}, "outcomeTimestamp"),
    # a date, or a week date, is no date-time: the moment the card was acted on is unknown (orders13)
    ({"card": "c", "outcome": "overridden", "outcomeTimestamp": "2026-11-24"}, "outcomeTimestamp"),
    ({"card": "c", "outcome": "overridden", "outcomeTimestamp": "2026-W48-2"}, "outcomeTimestamp"),
    ({"card": "c", "outcome": "overridden", "outcomeTimestamp": "20261124"}, "outcomeTimestamp"),
])
def test_invalid_feedback_is_a_specific_400(client, entry, where):
    response = post_feedback(client, [entry])
    assert response.status_code == 400 and where in response.json["message"]


def test_feedback_for_an_unknown_service_is_404(client):
    assert post_feedback(client, [overridden({"uuid": "c"})], service="nope").status_code == 404


def test_schema_is_migrated_once(app, storage):
    second = create_app(Settings.from_env(NO_AUTH, **storage))       # a second worker starting on the same database
    with second.extensions["avh"].store.engine.connect() as conn:
        assert conn.execute(select(schema_version.c.version)).scalars().all() == list(range(1, len(MIGRATIONS) + 1))
    second.extensions["avh"].store.dispose()


def _start_store(overrides, start, results):
    from service import open_store
    start.wait()
    results.put(open_store(Settings.from_env(NO_AUTH, **overrides)).start())


def test_workers_starting_together_on_an_empty_database_migrate_once(storage):
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Event(), ctx.Queue()
    workers = [ctx.Process(target=_start_store, args=(storage, start, results)) for _ in range(5)]
    for w in workers:
        w.start()
    start.set()
    assert [results.get(timeout=60) for _ in workers] == [True] * 5
    for w in workers:
        w.join(timeout=30)
    url = database_url(storage.get("database_url", ""), storage.get("sqlite_path", Path()))
    engine = create_engine(url)
    with engine.connect() as conn:
        assert conn.execute(select(schema_version.c.version)).scalars().all() == list(range(1, len(MIGRATIONS) + 1))
        assert conn.execute(select(feedback.c.id)).all() == []
    engine.dispose()


# --- nothing lost: failures are retriable, concurrency loses nothing ----------------------------

def test_a_locked_sqlite_file_answers_503_then_the_resend_lands(tmp_path):
    path = tmp_path / "locked.sqlite3"
    app = create_app(Settings.from_env(NO_AUTH, sqlite_path=path, storage_timeout_seconds=0.2))
    client = app.test_client()
    cards = issue_cards(client)
    blocker = create_engine(f"sqlite:///{path}").raw_connection()
    blocker.execute("BEGIN EXCLUSIVE")           # another process holds the write lock
    try:
        response = post_feedback(client, [accepted(cards["posterior-fixation"])])
        assert response.status_code == 503 and response.headers["Retry-After"] == "2"
        assert response.json["error"] == "storage_unavailable" and response.json["retryAfterSeconds"] == 2
        # Cards are still served while the store is locked (their record is what is lost, logged).
        assert issue_cards(client, "p2")
    finally:
        blocker.rollback()
        blocker.close()
    response = post_feedback(client, [accepted(cards["posterior-fixation"])])
    assert response.status_code == 200 and response.json["stored"] == 1 and response.json["unknownCards"] == []
    app.extensions["avh"].store.dispose()


def test_a_database_recreated_under_the_running_service_is_migrated_again(app, client, storage):
    cards = issue_cards(client)
    assert app.extensions["avh"].store.flush_issued()       # the cards were recorded before the restore
    url = database_url(storage.get("database_url", ""), storage.get("sqlite_path", Path()))
    _empty(url)                                   # the database was restored empty behind the service's back
    first = post_feedback(client, [accepted(cards["posterior-fixation"])])
    assert first.status_code == 503 and first.headers["Retry-After"]
    again = post_feedback(client, [accepted(cards["posterior-fixation"])])
    assert again.status_code == 200 and again.json["stored"] == 1
    # The card record went with it: the report counts the feedback as about an unknown card. (The answer does
    # not list it: a card minted this recently may still be on its way from another worker.)
    assert report(app)["(unknown card)"]["accepted"] == 1


def test_postgresql_down_answers_503_not_500(tmp_path):
    with refused_port() as refused:      # nothing listens on this port: the server is "down"
        app = create_app(Settings.from_env(NO_AUTH, database_url=f"postgresql://postgres@127.0.0.1:{refused}/avh_orders",
                                           storage_timeout_seconds=1))
        client = app.test_client()
        assert issue_cards(client)       # the clinical answer does not depend on the feedback store
        response = post_feedback(client, [overridden({"uuid": "c"})])
    assert response.status_code == 503 and response.headers["Retry-After"] and response.is_json


def test_a_locked_postgresql_table_answers_503_then_the_resend_lands(postgres_url):
    app = create_app(Settings.from_env(NO_AUTH, database_url=_empty(postgres_url), storage_timeout_seconds=0.5))
    client = app.test_client()
    cards = issue_cards(client)
    blocker = create_engine(postgres_url).connect()
    blocker.execute(text("LOCK TABLE avh_feedback IN ACCESS EXCLUSIVE MODE"))
    try:
        response = post_feedback(client, [accepted(cards["posterior-fixation"])])
        assert response.status_code == 503 and response.headers["Retry-After"] == "2"
    finally:
        blocker.rollback()
        blocker.close()
    assert post_feedback(client, [accepted(cards["posterior-fixation"])]).json["stored"] == 1
    app.extensions["avh"].store.dispose()


def _feedback_set(cards: dict, n: int) -> list[dict]:
    """n distinct feedback entries over the issued cards (distinct timestamps)."""
    out = []
    for i in range(n):
        card = list(cards.values())[i % len(cards)]
        when = f"2026-11-24T12:{i // 60:02d}:{i % 60:02d}Z"
        out.append(accepted(card, when) if i % 2 else overridden(card, "already-scheduled", when))
    return out


def _post_all(client, entries, barrier, errors):
    barrier.wait()
    for entry in entries:
        # Each entry twice (a replay) and in a shared batch: every worker posts every entry.
        for _ in range(2):
            response = post_feedback(client, [entry])
            for _ in range(20):                          # a retriable answer is resent, as a client would
                if response.status_code != 503:
                    break
                response = post_feedback(client, [entry])
            if response.status_code != 200:
                errors.append(response.status_code)


def test_concurrent_threads_store_each_feedback_once(app):
    cards = issue_cards(app.test_client())
    entries = _feedback_set(cards, 24)
    barrier, errors = threading.Barrier(6), []
    threads = [threading.Thread(target=_post_all, args=(app.test_client(), entries[i % 3::3] + entries, barrier, errors))
               for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    rows = report(app)
    assert sum(r["accepted"] for r in rows.values()) == 12 and sum(r["overridden"] for r in rows.values()) == 12
    assert rows["posterior-fixation"]["shown"] == 1 and "(unknown card)" not in rows


def _process_worker(settings_overrides, entries, start, results):
    app = create_app(Settings.from_env(NO_AUTH, **settings_overrides))   # its own pool, as a gunicorn worker
    errors = []
    barrier = threading.Barrier(3)
    threads = [threading.Thread(target=_post_all, args=(app.test_client(), entries, barrier, errors)) for _ in range(3)]
    start.wait()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    results.put(errors)


def test_concurrent_processes_store_each_feedback_once(app, storage):
    cards = issue_cards(app.test_client())
    entries = _feedback_set(cards, 12)
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Event(), ctx.Queue()
    workers = [ctx.Process(target=_process_worker, args=(storage, entries, start, results)) for _ in range(3)]
    for w in workers:
        w.start()
    start.set()
    outcomes = [results.get(timeout=120) for _ in workers]
    for w in workers:
        w.join(timeout=30)
    assert outcomes == [[], [], []] and all(w.exitcode == 0 for w in workers)
    rows = report(app)
    assert sum(r["accepted"] for r in rows.values()) == 6 and sum(r["overridden"] for r in rows.values()) == 6
    assert sum(x["count"] for r in rows.values() for x in r["overrideReasons"] if x["code"] == "already-scheduled") == 6


# --- the report command -----------------------------------------------------------------------

def test_feedback_report_command(app, client, storage, monkeypatch, capsys):
    cards = issue_cards(client)
    issue_cards(client, "p2")
    post_feedback(client, [accepted(cards["posterior-fixation"]), overridden(cards["steroid-duration"]),
                           overridden({"uuid": "not-ours"}, "not-applicable")])
    for key, value in storage.items():
        monkeypatch.setenv(f"AVH_CDS_{key.upper()}", str(value))
    assert cli.main(["feedback-report", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["database"] == ("sqlite" if "sqlite_path" in storage else "postgresql")
    topics = {t["topic"]: t for t in data["topics"]}
    assert topics["posterior-fixation"]["shown"] == 2 and topics["posterior-fixation"]["accepted"] == 1
    assert topics["steroid-duration"]["overridden"] == 1 and topics["(unknown card)"]["overridden"] == 1
    assert cli.main(["feedback-report"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["topic", "shown", "accepted", "overridden", "override", "reasons"]
    assert next(l for l in table if l.startswith("steroid-duration")).split() == \
        ["steroid-duration", "2", "0", "1", "patient-declined", "x1"]
    assert table[-1].split() == ["total", "4", "1", "2"]


def test_feedback_report_says_when_the_database_is_down(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AVH_CDS_STORAGE_TIMEOUT_SECONDS", "1")
    with refused_port() as refused:
        monkeypatch.setenv("AVH_CDS_DATABASE_URL", f"postgresql://postgres@127.0.0.1:{refused}/avh_orders")
        assert cli.main(["feedback-report"]) == 2
    assert "cannot be read" in capsys.readouterr().err


# --- over HTTP: gunicorn workers (forked from a preloaded app) and concurrent clients -----------

@pytest.fixture
def gunicorn_server(storage, tmp_path):
    import subprocess
    import sys
    import time

    import requests
    listener = listening_socket()       # gunicorn inherits it (fd://N): no port to race for
    env = {**os.environ, **NO_AUTH, **{f"AVH_CDS_{k.upper()}": str(v) for k, v in storage.items()},
           "PYTHONPATH": str(Path(__file__).parent.parent)}
    log_file = tmp_path / "gunicorn.log"      # a file, not a pipe: a full pipe would block the workers
    with open(log_file, "wb") as log, listener:
        server = subprocess.Popen([sys.executable, "-m", "gunicorn", "--preload", "-w", "3", "--threads", "2",
                                   "-b", f"fd://{listener.fileno()}", "service:create_app()"],
                                  cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
                                  pass_fds=(listener.fileno(),))
        base = f"http://127.0.0.1:{port_of(listener)}"
    try:
        for _ in range(100):
            if server.poll() is not None:
                pytest.fail(f"gunicorn exited: {log_file.read_text()[-500:]}")
            try:
                requests.get(f"{base}/cds-services", timeout=1)
                break
            except requests.RequestException:   # the socket listens from the start: a booting worker times out
                time.sleep(0.1)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=20)


def test_concurrent_http_posts_to_several_workers_arrive_once(gunicorn_server, storage):
    import requests
    from concurrent.futures import ThreadPoolExecutor
    from service import open_store
    from service.feedback.entries import build_report

    def issue(pid):
        drafts = [draft_order(CPT, "63046", "Laminectomy", patient_id=pid, id="surg-1"),
                  draft_dexamethasone([bounds_duration(20)], patient_id=pid, id="dex-1")]
        response = requests.post(f"{gunicorn_server}/cds-services/avh-order-sign", timeout=10,
                                 json=hook_request("order-sign", pid, in_pathway_chart(pid), drafts))
        return {c["source"]["topic"]["code"]: c for c in response.json()["cards"]}

    with ThreadPoolExecutor(8) as pool:
        issued = list(pool.map(issue, [f"p{i}" for i in range(8)]))
    entries = [e for cards in issued for e in _feedback_set(cards, 4)]

    def send(entry):
        with requests.Session() as session:
            return [session.post(f"{gunicorn_server}/cds-services/avh-order-sign/feedback", json={"feedback": [entry]},
                                 timeout=30).status_code for _ in range(3)]    # sent, then replayed twice
    with ThreadPoolExecutor(12) as pool:
        statuses = [s for batch in pool.map(send, entries + entries) for s in batch]
    assert set(statuses) == {200}
    store = open_store(Settings.from_env(NO_AUTH, **storage))
    rows = {r.topic: r for r in build_report(*store.report_rows())}
    store.dispose()
    assert rows["posterior-fixation"].shown == 8 and rows["steroid-duration"].shown == 8
    assert sum(r.accepted for r in rows.values()) == 16 and sum(r.overridden for r in rows.values()) == 16
    assert "(unknown card)" not in rows


@pytest.mark.parametrize("url", ["mysql+nosuchdriver://u:secret@h/db", "not a url"])
def test_an_unusable_database_url_stops_the_start_with_a_clear_message(url):
    with pytest.raises(ValueError, match="AVH_CDS_DATABASE_URL") as failure:
        create_app(Settings.from_env(NO_AUTH, database_url=url))
    assert "secret" not in str(failure.value)
