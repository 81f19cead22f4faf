"""Where feedback is kept: every card issued and every feedback entry, in SQLite or PostgreSQL.

SQLAlchemy Core speaks to both with one set of table definitions and one upsert idiom
(INSERT ... ON CONFLICT DO NOTHING), so the same code and the same tests run on the embedded
SQLite file and on a PostgreSQL server. Nothing patient-identifying is stored with an issued card:
its uuid, the service, the topic, the hookInstance and the time.

A write that fails (server down, file locked past the busy timeout, disk full) raises
StorageUnavailable, a 503 with Retry-After: the client resends, and idempotency makes the resend
safe. Feedback is written before it is acknowledged. Issued cards, one row per card of every hook
call, are not: they are queued (once the call's answer has been sent) and written in batches every
AVH_CDS_ISSUED_FLUSH_SECONDS by the worker's writer thread ("avh-issued-cards"). No hook call waits for a commit,
queues for SQLite's write lock or writes a batch; a feedback call writes what is pending first (its cards may be
in it), waiting for a batch the writer has under way. A crash loses at most that
interval's rows (feedback on those cards is then marked unknown); a clean exit writes them. The
schema is created or migrated at start, under a lock so that several workers starting together
migrate once.
"""
from __future__ import annotations

import datetime as dt
import functools
import logging
import atexit
import math
import os
import threading
import time
import weakref
from dataclasses import dataclass, replace
from itertools import chain
from pathlib import Path
from typing import Callable, Iterable

from sqlalchemy import (JSON, Boolean, Column, Date, DateTime, Index, Integer, MetaData, String, Table, Text, and_,
                        bindparam, create_engine, event, func, insert, inspect, select, text, update)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError

from service.errors import ApiError
from service.feedback import rollup
from service.ops import metrics
from service.uuids import issued_at_ms

log = logging.getLogger(__name__)

metadata = MetaData()
schema_version = Table("avh_schema_version", metadata, Column("version", Integer, primary_key=True))
issued_cards = Table(
    "avh_issued_card", metadata,
    Column("card_uuid", String(64), primary_key=True),
    Column("service_id", String(100), nullable=False),
    Column("topic", String(100), nullable=False),
    Column("hook_instance", String(100), nullable=False),
    Column("issued_at", DateTime(timezone=True), nullable=False),
    Index("ix_avh_issued_card_topic", "topic"),
)
feedback = Table(
    "avh_feedback", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("idempotency_key", String(64), nullable=False, unique=True),
    Column("service_id", String(100), nullable=False),
    Column("card_uuid", Text, nullable=False),
    Column("card_known", Boolean, nullable=False),   # False: no card with this uuid was issued by this service
    Column("outcome", String(20), nullable=False),
    Column("outcome_at", DateTime(timezone=True), nullable=False),
    Column("accepted_suggestions", JSON, nullable=False),
    Column("override_system", Text),
    Column("override_code", Text),
    Column("override_display", Text),
    Column("user_comment", Text),
    Column("received_at", DateTime(timezone=True), nullable=False),
    # The card's topic and issue time, and the id(s) of the suggestion(s) taken (" + " between several), copied
    # when the feedback is stored (None for an unknown card, or a card issued before suggestions were recorded):
    # the governance report then reads the feedback alone, with no join to a year of issued cards.
    Column("card_topic", String(100)),
    Column("card_issued_at", DateTime(timezone=True)),
    Column("accepted_suggestion", Text),
    Index("ix_avh_feedback_card", "card_uuid"),
)
SUGGESTIONS_TAKEN = " + "
CARD_COPIES = ("card_topic", "card_issued_at", "accepted_suggestion")     # FeedbackStore._card_copies
# A recheck's UPDATE of a feedback row whose card turned up (FeedbackStore._run_due_rechecks): the card known, and its
# copies from binds named COPY_BINDS (SQLAlchemy reserves a column's own name for the binds of the SET it makes).
COPY_BINDS = {name: "copy_" + name for name in CARD_COPIES}
CARD_TURNED_UP = (update(feedback).where(feedback.c.id == bindparam("row"))
                  .values(card_known=True, **{name: bindparam(bind) for name, bind in COPY_BINDS.items()}))
# Which suggestion each suggestion uuid of an issued card stood for (the card file's suggestion id): feedback
# names an accepted suggestion by its uuid only. Written with the issued cards, in the same batch.
issued_suggestions = Table(
    "avh_issued_suggestion", metadata,
    Column("suggestion_uuid", String(64), primary_key=True),
    Column("card_uuid", String(64), nullable=False),
    Column("suggestion", String(100), nullable=False),
    Index("ix_avh_issued_suggestion_card", "card_uuid"),
)
# What version 2 of the governance report read by: cards by issue time (dropped by version 3: the rollup counts
# them), feedback by its card's issue time, and by the time it was given (unknown cards).
REPORT_INDEXES = (
    Index("ix_avh_issued_card_report", issued_cards.c.issued_at, issued_cards.c.service_id, issued_cards.c.topic),
    Index("ix_avh_feedback_card_issued_at", feedback.c.card_issued_at),
    Index("ix_avh_feedback_outcome_at", feedback.c.outcome_at),
    # Empty unless rows were written around the service: a report looks here before it reads (no table scan).
    Index("ix_avh_feedback_missing_card_copy", feedback.c.id,
          postgresql_where=feedback.c.card_known.is_(True) & feedback.c.card_topic.is_(None),
          sqlite_where=feedback.c.card_known.is_(True) & feedback.c.card_topic.is_(None)),
)
# Per UTC day, card topic and service: cards issued, cards with feedback, feedback entries accepted and overridden.
# Kept by triggers in the database, for every writer (service/feedback/rollup.py); the report reads it.
report_days = Table(
    rollup.ROLLUP, metadata,
    Column("day", Date, primary_key=True),
    Column("topic", String(100), primary_key=True),
    Column("service_id", String(100), primary_key=True),
    *(Column(name, Integer, nullable=False, server_default="0") for name in rollup.COUNTS),
)
# The report's other reads, each from a partial index: override reasons and accepted suggestions on known cards by
# their card's issue time (covering: no table row read), the newest comments of a topic, and feedback on unknown
# cards by its time (covering).
KNOWN = feedback.c.card_known.is_(True)
COVERING_INDEXES = (
    Index("ix_avh_feedback_report_reasons", feedback.c.card_issued_at, feedback.c.service_id, feedback.c.card_topic,
          feedback.c.override_system, feedback.c.override_code, feedback.c.override_display,
          postgresql_where=KNOWN & (feedback.c.outcome == "overridden"), sqlite_where=KNOWN & (feedback.c.outcome == "overridden")),
    Index("ix_avh_feedback_report_suggestions", feedback.c.card_issued_at, feedback.c.service_id, feedback.c.card_topic,
          feedback.c.accepted_suggestion,
          postgresql_where=KNOWN & (feedback.c.outcome == "accepted"), sqlite_where=KNOWN & (feedback.c.outcome == "accepted")),
    Index("ix_avh_feedback_report_comments", feedback.c.card_topic, feedback.c.outcome_at, feedback.c.id,
          postgresql_where=KNOWN & (feedback.c.outcome == "overridden") & feedback.c.user_comment.is_not(None),
          sqlite_where=KNOWN & (feedback.c.outcome == "overridden") & feedback.c.user_comment.is_not(None)),
    Index("ix_avh_feedback_report_unknown", feedback.c.outcome_at, feedback.c.service_id, feedback.c.outcome,
          postgresql_where=feedback.c.card_known.is_(False), sqlite_where=feedback.c.card_known.is_(False)),
)
BAD_URL = ("AVH_CDS_DATABASE_URL is not a usable database URL: expected postgresql://user@host:port/db, "
           "or unset for the SQLite file")
MIGRATION_LOCK = 0x61766863   # pg_advisory_xact_lock key ("avhc")


def _v1(conn: Connection) -> None:
    metadata.create_all(conn, tables=[issued_cards, feedback])


def _v2_suggestions_and_report_indexes(conn: Connection) -> None:
    """Governance report: the issued suggestions table, the card's topic and issue time on each feedback row
    (filled in for the feedback already stored), and the indexes the report reads by. Cards issued before this
    version have no suggestion rows; accepted feedback on them is reported as "no suggestion of the card named"."""
    metadata.create_all(conn, tables=[issued_suggestions])
    present = {c["name"] for c in inspect(conn).get_columns(feedback.name)}
    for name in CARD_COPIES:
        if name not in present:
            column = feedback.c[name]
            conn.exec_driver_sql(f"ALTER TABLE {feedback.name} ADD COLUMN {name} {column.type.compile(conn.dialect)}")
    fill_card_copies(conn)
    for index in REPORT_INDEXES:
        index.create(conn, checkfirst=True)


MISSING_CARD_COPY = and_(feedback.c.card_known.is_(True), feedback.c.card_topic.is_(None))


def fill_card_copies(conn: Connection) -> None:
    """Copy the card's topic and issue time onto feedback rows that lack them: rows stored before schema version
    2, or written into the table by something other than this service."""
    card = lambda column: (select(column).where(issued_cards.c.card_uuid == feedback.c.card_uuid,   # noqa: E731
                                                issued_cards.c.service_id == feedback.c.service_id).scalar_subquery())
    conn.execute(update(feedback).where(MISSING_CARD_COPY)
                 .values(card_topic=card(issued_cards.c.topic), card_issued_at=card(issued_cards.c.issued_at)))


def _v3_report_days(conn: Connection) -> None:
    """The governance report's per-day rollup (service/feedback/rollup.py): created, filled from the rows stored,
    and kept by triggers from then on. On PostgreSQL the two tables are locked against writes until the migration
    commits, so that no row lands between the count and the triggers. Also the covering indexes of the report's
    other reads (COVERING_INDEXES)."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"LOCK TABLE {issued_cards.name}, {feedback.name} IN SHARE ROW EXCLUSIVE MODE")
    metadata.create_all(conn, tables=[report_days])
    rollup.backfill(conn, issued_cards, feedback)
    rollup.install_triggers(conn, issued_cards, feedback)
    for index in COVERING_INDEXES:
        index.create(conn, checkfirst=True)
    # Version 2's index for counting cards by day: the rollup counts them now, and every hook call paid for it.
    conn.exec_driver_sql("DROP INDEX IF EXISTS ix_avh_issued_card_report")


# Schema versions in order; the database records the last one applied.
MIGRATIONS: tuple[Callable[[Connection], None], ...] = (_v1, _v2_suggestions_and_report_indexes, _v3_report_days)


class StorageUnavailable(ApiError):
    """The feedback store cannot be written (or, reading=True, read) right now: retriable, never a 500."""

    def __init__(self, retry_after: int, reading: bool = False):
        message = ("the feedback store cannot be read right now (the governance report); ask again later" if reading
                   else "feedback could not be stored right now; nothing was kept, resend it later "
                        "(resending is safe: the same feedback is stored once)")
        super().__init__(503, "storage_unavailable", message, retryAfterSeconds=retry_after)
        self.headers = {"Retry-After": str(retry_after)}


@dataclass(frozen=True)
class FeedbackEntry:
    """One validated feedback entry, with the key that makes a resend land once."""
    card_uuid: str
    outcome: str
    outcome_at: dt.datetime
    accepted_suggestions: tuple[str, ...]
    override_system: str | None
    override_code: str | None
    override_display: str | None
    user_comment: str | None
    idempotency_key: str


@dataclass(frozen=True)
class StoredFeedback:
    received: int
    stored: int
    unknown_cards: tuple[str, ...]
    outcomes: tuple[tuple[str | None, str], ...] = ()    # (topic, None when unknown; outcome) of each entry stored

    def as_json(self) -> dict:
        return {"received": self.received, "stored": self.stored, "duplicates": self.received - self.stored,
                "unknownCards": list(self.unknown_cards)}


def database_url(url: str, sqlite_path: Path) -> str:
    """AVH_CDS_DATABASE_URL when set (postgresql:// means psycopg 3), else the embedded SQLite file."""
    if not url:
        return f"sqlite:///{Path(sqlite_path).expanduser().resolve()}"
    try:
        parsed = make_url(url.replace("postgres://", "postgresql://", 1) if url.startswith("postgres://") else url)
    except ArgumentError:
        raise ValueError(BAD_URL) from None
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def _engine(url: str, timeout: float) -> Engine:
    if make_url(url).get_backend_name() == "sqlite":
        engine = create_engine(url, connect_args={"timeout": timeout, "check_same_thread": False},
                               pool_timeout=timeout)

        @event.listens_for(engine, "connect")
        def _connect(dbapi_connection, _record):
            dbapi_connection.isolation_level = None          # transactions are begun below, not by pysqlite
            cursor = dbapi_connection.cursor()
            cursor.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
            cursor.execute("PRAGMA journal_mode = WAL")       # readers never block the writer
            cursor.close()

        @event.listens_for(engine, "begin")
        def _begin(conn):
            # Take the write lock up front: a deferred read-then-write transaction could not wait for it.
            # A report (read_only) takes none: in WAL mode its deferred transaction reads one snapshot.
            conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get("read_only") else "BEGIN IMMEDIATE")
        return engine
    # A lock or a stuck statement becomes an error after the timeout (then 503), never a hung request.
    ms = int(timeout * 1000)
    return create_engine(url, pool_pre_ping=True, pool_timeout=timeout,
                         connect_args={"connect_timeout": max(1, math.ceil(timeout)),
                                       "options": f"-c lock_timeout={ms} -c statement_timeout={2 * ms}"})


ISSUED_COLUMNS = ("card_uuid", "service_id", "topic", "hook_instance", "issued_at")


ISSUED_ROWS_PER_STATEMENT = 199     # 5 parameters a row: under 1,000, the oldest SQLite's limit per statement
UUIDS_PER_QUERY = 999


def _in_chunks(uuids: list[str]) -> Iterable[list[str]]:
    """`uuids` UUIDS_PER_QUERY at a time: a post may name more cards than a statement may carry parameters
    (PostgreSQL 65,535; the oldest SQLite 999)."""
    return (uuids[start:start + UUIDS_PER_QUERY] for start in range(0, len(uuids), UUIDS_PER_QUERY))


def _insert_issued(conn: Connection, rows: list[tuple]) -> None:
    """Multi-row INSERTs through the driver, with the issued_at values as SQLAlchemy writes them; duplicates
    (a retried batch) are ignored.

    Not executemany: SQLite's driver lets go of the GIL and takes it back for every row, so a batch of
    hundreds of rows waited for the request threads hundreds of times, and every time it got the GIL a
    request thread was held up (a blocking call made a forced switch, ~20 µs at each). Statements of up to 199
    rows (statement_sizes) let go of it a few times a batch; PostgreSQL gets one round trip instead of one a row. Nor
    SQLAlchemy's insert(): its per-row parameter processing cost more than the insert itself."""
    if conn.dialect.name == "sqlite":
        to_db = sqlite_stamp
    else:
        to_db = issued_cards.c.issued_at.type.dialect_impl(conn.dialect).bind_processor(conn.dialect) or (lambda v: v)
    # Each call's time converted once: the rows of a call are queued together and share one datetime object.
    converted, last, stamp = [], None, None
    for row in rows:
        if row[-1] is not last:
            last = row[-1]
            stamp = to_db(last)
        converted.append(row[:-1] + (stamp,))
    _insert_rows(conn, issued_cards.name, ISSUED_COLUMNS, converted)


def sqlite_stamp(when: dt.datetime) -> str:
    """A datetime as SQLAlchemy's SQLite DateTime stores it (the wall-clock time, microseconds always written, no
    offset), without its bind processor's %-format by name: with the set and dict of datetimes it replaces, ~10 k
    instructions a call fewer (callgrind)."""
    return when.isoformat(" ", "microseconds")[:26]


SUGGESTION_COLUMNS = ("suggestion_uuid", "card_uuid", "suggestion")
SUGGESTIONS_PER_CARD = 4     # suggestion rows kept waiting per issued-card row kept (max_pending), at most


def _insert_rows(conn: Connection, table: str, columns: tuple[str, ...], rows: list[tuple]) -> None:
    """Rows already in the database's form, as multi-row INSERTs (under 1,000 parameters each), duplicates ignored,
    in the order given. Through the driver's cursor, in the connection's transaction: SQLAlchemy's
    exec_driver_sql cost ~60 k instructions a statement around the driver's call; a driver error is raised as
    SQLAlchemy raises it (a DBAPIError), so the batch fails and stays queued as before."""
    start, sql, values = 0, None, ()
    error = conn.dialect.loaded_dbapi.Error
    cursor = conn.connection.driver_connection.cursor()
    try:
        for size in statement_sizes(len(rows), 999 // len(columns)):
            sql = _insert_sql(conn.dialect.paramstyle, table, columns, size)
            values = tuple(chain.from_iterable(rows[start:start + size]))
            cursor.execute(sql, values)
            start += size
    except error as exc:
        raise DBAPIError.instance(sql, values, exc, error) from exc
    finally:
        cursor.close()


def statement_sizes(count: int, most: int) -> list[int]:
    """How many rows each INSERT of a batch of `count` carries: `most` while more are left, then the rest in powers
    of two, largest first. So the statements of every batch take one of a few shapes, which the driver keeps
    prepared (pysqlite's cache holds 128 per connection): a batch's last statement had a new row count each time,
    and SQLite parsing it again cost ~1.5-4 M instructions a batch, ~40 k a call at 60 calls."""
    full, rest = divmod(count, most)
    return [most] * full + [1 << bit for bit in reversed(range(rest.bit_length())) if rest >> bit & 1]


@functools.cache
def _insert_sql(paramstyle: str, table: str, columns: tuple[str, ...], rows: int) -> str:
    marker = "?" if paramstyle == "qmark" else "%s"
    one_row = f"({', '.join([marker] * len(columns))})"
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES {', '.join([one_row] * rows)} ON CONFLICT DO NOTHING"


def _write_periodically(store: Callable[[], "FeedbackStore | None"], stop: threading.Event) -> None:
    """The background writer: every batch of issued cards, due every flush_seconds, and the feedback rechecks.
    It holds the store weakly: a store nobody uses any more is not kept alive by it."""
    wait = 0.0
    while not stop.wait(wait):
        current = store()
        if current is None:
            return
        try:
            wait = current.flush_if_due()
        except Exception:       # not the database's (_write handles those): the thread must live, no hook call writes
            log.exception("issued-card writer: a batch failed; retried in %s s", current.flush_seconds)
            wait = current.flush_seconds
        del current


class FeedbackStore:
    def __init__(self, url: str, timeout: float = 5.0, retry_after: int = 2, flush_seconds: float = 0.5,
                 max_pending: int = 10_000):
        self.retry_after = retry_after
        self.flush_seconds = flush_seconds    # 0: issued cards are written before the call answers
        self.max_pending = max_pending
        try:
            self.engine = _engine(url, timeout)
        except (ArgumentError, ImportError) as exc:    # a configuration error: stop at start, say which setting
            raise ValueError(f"{BAD_URL} ({type(exc).__name__})") from None
        self._ready = False
        # A pool inherited across fork (gunicorn --preload) must not share sockets with the parent.
        engine = weakref.ref(self.engine)
        os.register_at_fork(after_in_child=lambda: engine() and engine().dispose(close=False))
        self._reset_writer()
        me = weakref.ref(self)
        # A forked child starts with no writer thread and nothing pending; a process that exits writes its rows.
        os.register_at_fork(after_in_child=lambda: me() and me()._reset_writer())
        atexit.register(lambda: me() and me().close())

    def _reset_writer(self) -> None:
        self._pending: list[tuple] = []         # issued-card rows (ISSUED_COLUMNS) not written yet, oldest first
        self._rechecks: list[tuple[float, str, tuple[str, ...]]] = []   # (when, service, uuids): _recheck_later
        self._pending_suggestions: list[tuple] = []     # their suggestions' rows (SUGGESTION_COLUMNS)
        self._lock = threading.Lock()            # guards _pending and _writer
        self._flushing = threading.Lock()        # one batch at a time, so a failed one goes back first
        self._stop = threading.Event()
        self._writer: threading.Thread | None = None
        self._written_at = time.monotonic()     # when the last batch was taken for writing

    @property
    def backend(self) -> str:
        return self.engine.dialect.name

    def ping(self) -> None:
        """Raises when the database cannot be reached (GET /readyz)."""
        with self.engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")

    def start(self) -> bool:
        """Create or migrate the schema; a database that is down now is retried on first use."""
        try:
            self._migrate()
        except SQLAlchemyError as exc:
            log.error("feedback store (%s) not ready at start: %s; will retry on first use",
                      self.backend, type(exc).__name__)
        return self._ready

    def _migrate(self) -> None:
        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
            schema_version.create(conn, checkfirst=True)
            current = conn.execute(select(func.max(schema_version.c.version))).scalar() or 0
            for version, step in enumerate(MIGRATIONS, start=1):
                if version > current:
                    step(conn)
                    conn.execute(insert(schema_version).values(version=version))
                    log.info("feedback store (%s) migrated to schema version %d", self.backend, version)
        self._ready = True

    def _insert_ignoring_duplicates(self, table: Table):
        dialect = postgresql if self.backend == "postgresql" else sqlite
        return dialect.insert(table).on_conflict_do_nothing()

    def _write(self, work: Callable[[Connection], object], durable: bool = True):
        """Run `work` in one transaction. durable=False (issued cards, on every hook call) skips waiting for
        the disk flush: a power cut may lose the last such rows, and the feedback on them is marked unknown."""
        try:
            if not self._ready:
                self._migrate()
            with self.engine.connect() as conn:
                if self.backend == "sqlite":
                    conn.connection.driver_connection.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
                with conn.begin():
                    if self.backend == "postgresql" and not durable:
                        conn.execute(text("SET LOCAL synchronous_commit = off"))
                    return work(conn)
        except SQLAlchemyError as exc:
            log.warning("feedback store (%s) write failed: %s", self.backend, type(exc).__name__)
            metrics.observe_feedback_store_failure()
            self._ready = False     # check the schema again next time (a restored or recreated database)
            raise StorageUnavailable(self.retry_after) from exc

    def record_issued(self, service_id: str, hook_instance: str, cards: Iterable[tuple[str, str]],
                      when: dt.datetime, suggestions: Iterable[tuple[str, str, str]] = ()) -> None:
        """Remember each card shown, by its (uuid, topic), to join feedback with it, and each of its suggestions
        by (suggestion uuid, card uuid, suggestion id): queued, and written by the writer thread (flush_if_due) within
        flush_seconds (at once when flush_seconds is 0). A failure costs the join, never the cards."""
        rows = [(card_uuid, service_id, topic, hook_instance, when) for card_uuid, topic in cards]   # ISSUED_COLUMNS
        if not rows:
            return
        if self.flush_seconds <= 0:
            self._write_issued(rows, list(suggestions))
            return
        with self._lock:
            self._pending.extend(rows)
            self._pending_suggestions.extend(suggestions)
            dropped = self._trim()
            self._start_writer()
        self._log_dropped(dropped)

    def _start_writer(self) -> None:
        """Under _lock."""
        if self._writer is None:
            self._writer = threading.Thread(target=_write_periodically, name="avh-issued-cards", daemon=True,
                                            args=(weakref.ref(self), self._stop))
            self._writer.start()

    def _log_dropped(self, dropped: int) -> None:
        """Rows _trim dropped, by count only (whoever queued them: a hook call, or the writer putting a batch back)."""
        if dropped:
            log.warning("%d issued cards not recorded: over %d waiting for the feedback store", dropped,
                        self.max_pending)

    def _trim(self) -> int:
        """Drop the oldest pending rows beyond max_pending (the store has been down a while); under _lock."""
        over = len(self._pending) - self.max_pending
        if over > 0:
            del self._pending[:over]
        del self._pending_suggestions[:max(len(self._pending_suggestions) - SUGGESTIONS_PER_CARD * self.max_pending, 0)]
        return max(over, 0)

    def _write_issued(self, rows: list[tuple], suggestions: list[tuple] = ()) -> bool:
        def work(conn: Connection) -> None:
            _insert_issued(conn, rows)
            if suggestions:
                _insert_rows(conn, issued_suggestions.name, SUGGESTION_COLUMNS, suggestions)
        try:
            self._write(work, durable=False)
            return True
        except StorageUnavailable:
            log.warning("%d issued cards not recorded yet: the feedback store is unavailable", len(rows))
            return False

    def flush_if_due(self) -> float:
        """Write the pending issued cards when the last batch is flush_seconds old; the seconds until the next
        one is due. Run by the writer thread (_write_periodically), which sleeps that long between runs.

        No request thread runs it: the call that found a batch due wrote it after its answer (on its close()),
        and a batch of ~500 calls (~0.1 G instructions, tens of ms) then held up that thread, and the next call
        on its kept-alive connection, once in ~500 calls. On the writer thread the batch's SQLite work runs with
        the GIL let go (pysqlite's step, statements of up to ISSUED_ROWS_PER_STATEMENT rows); a call running beside
        it meets the writer only between statements (docs/performance.md, "defer17")."""
        if self._rechecks:
            self._run_due_rechecks()
        since = time.monotonic() - self._written_at
        if since < self.flush_seconds:
            return self.flush_seconds - since
        if self._pending:
            self.flush_issued()
        else:
            self._written_at = time.monotonic()
        return self.flush_seconds

    def flush_issued(self) -> bool:
        """Write the pending issued cards now; rows that fail stay pending (oldest first). True when none is left."""
        with self._flushing:
            with self._lock:
                rows, self._pending = self._pending, []
                suggestions, self._pending_suggestions = self._pending_suggestions, []
                self._written_at = time.monotonic()
            written = False
            try:
                written = not rows or self._write_issued(rows, suggestions)
            finally:            # not written, or an exception not the database's: the rows wait for the next batch
                if not written:
                    self._put_back(rows, suggestions)
            return written

    def _put_back(self, rows: list[tuple], suggestions: list[tuple]) -> None:
        """A batch not written back at the head of the queue (oldest first), trimmed to max_pending: with the rows
        queued while it was out, the oldest may go (a store down a while), and the warning says how many."""
        with self._lock:
            self._pending[:0] = rows
            self._pending_suggestions[:0] = suggestions
            dropped = self._trim()
        self._log_dropped(dropped)

    def close(self) -> None:
        """Stop the background writer and write what it had not (process exit, dispose)."""
        self._stop.set()
        writer, self._writer = self._writer, None
        if writer is not None and writer is not threading.current_thread():
            writer.join(timeout=10)
        self.flush_issued()
        self._stop = threading.Event()      # a later record_issued starts a new writer

    @staticmethod
    def _issued(conn: Connection, uuids: list[str]) -> dict[str, tuple]:
        """card uuid -> (service that issued it, topic, issued_at), for those of `uuids` on record."""
        issued = {}
        for chunk in _in_chunks(uuids):
            issued.update((row[0], tuple(row[1:])) for row in conn.execute(
                select(issued_cards.c.card_uuid, issued_cards.c.service_id, issued_cards.c.topic,
                       issued_cards.c.issued_at).where(issued_cards.c.card_uuid.in_(chunk))))
        return issued

    @staticmethod
    def _cards_of(issued: dict[str, tuple], service_id: str) -> dict[str, tuple]:
        """card uuid -> (topic, issued_at), of the issued cards this service issued."""
        return {uuid: (topic, at) for uuid, (issuer, topic, at) in issued.items() if issuer == service_id}

    @staticmethod
    def _suggestions_of(conn: Connection, uuids: list[str]) -> dict[str, str]:
        """suggestion uuid -> suggestion id, of the suggestions recorded for these cards."""
        found = {}
        for chunk in _in_chunks(uuids):
            found.update(conn.execute(select(issued_suggestions.c.suggestion_uuid, issued_suggestions.c.suggestion)
                                      .where(issued_suggestions.c.card_uuid.in_(chunk))).all())
        return found

    @staticmethod
    def _card_copies(accepted: Iterable[str], card: tuple | None, suggestions: dict[str, str]) -> dict:
        """The card's topic and issue time, and which of the `accepted` suggestion uuids were taken, to store with
        one entry."""
        topic, issued_at = card or (None, None)
        taken = sorted(suggestions[s] for s in accepted if s in suggestions)
        return {"card_topic": topic, "card_issued_at": issued_at,
                "accepted_suggestion": SUGGESTIONS_TAKEN.join(taken) if taken else None}

    def _may_be_on_its_way(self, card_uuid: str) -> bool:
        """Whether a card not found may have been issued by another worker that has not written it yet (it writes
        within flush_seconds): its version-7 uuid was minted that recently (a second's leeway for clocks)."""
        minted = issued_at_ms(card_uuid)
        if minted is None or self.flush_seconds <= 0:
            return False
        return -1000 <= time.time() * 1000 - minted <= (self.flush_seconds + 1) * 1000

    def _recheck_later(self, service_id: str, uuids: tuple[str, ...]) -> None:
        """Mark these cards' feedback known if their cards turn up, with the copies a join at once would have stored
        (topic, issue time, the suggestion taken): asked again by the background writer once the cards are written
        (no call waits for that). The cards may be another worker's, or this worker's own, queued once their answer
        had been sent (service/api/aftersend.py), after the caller already had it."""
        with self._lock:
            self._rechecks.append((time.monotonic() + self.flush_seconds + 0.2, service_id, uuids))
            del self._rechecks[:-self.max_pending]
            self._start_writer()

    def _run_due_rechecks(self) -> None:
        """The rechecks due, each in its transaction. One the database cannot run is dropped with a warning (the
        feedback stays unknown); an error not the database's keeps it and the due ones after it for the next round."""
        with self._lock:
            now = time.monotonic()
            due = [r for r in self._rechecks if r[0] <= now]
            self._rechecks = [r for r in self._rechecks if r[0] > now]
        for done, (_, service_id, uuids) in enumerate(due):
            def work(conn: Connection, service_id=service_id, uuids=uuids) -> None:
                known = self._cards_of(self._issued(conn, list(uuids)), service_id)
                suggestions = self._suggestions_of(conn, list(known))
                for chunk in _in_chunks(sorted(known)):
                    rows = conn.execute(select(feedback.c.id, feedback.c.card_uuid, feedback.c.accepted_suggestions)
                                        .where(feedback.c.service_id == service_id, feedback.c.card_known.is_(False),
                                               feedback.c.card_uuid.in_(chunk))).all()
                    copies = [{"row": row_id, **{COPY_BINDS[name]: value for name, value in self._card_copies(
                        accepted, known[uuid], suggestions).items()}} for row_id, uuid, accepted in rows]
                    if copies:
                        conn.execute(CARD_TURNED_UP, copies)
            try:
                self._write(work)
            except StorageUnavailable:
                log.warning("%d feedback entries not re-checked: the feedback store is unavailable", len(uuids))
            except BaseException:
                with self._lock:
                    self._rechecks[:0] = due[done:]
                    del self._rechecks[:-self.max_pending]
                raise

    def record_feedback(self, service_id: str, entries: list[FeedbackEntry], when: dt.datetime) -> StoredFeedback:
        """Store every entry once (by idempotency key); entries about cards this service never issued are marked.

        A card not found is listed in unknownCards unless another worker may still be writing it (see
        _may_be_on_its_way); its entry's mark is then put right later, without waiting here."""
        uuids = sorted({e.card_uuid for e in entries})
        self.flush_issued()              # this worker's cards first: feedback can follow its card at once

        def work(conn: Connection) -> tuple[StoredFeedback, set[str]]:
            issued = self._issued(conn, uuids)
            known = self._cards_of(issued, service_id)
            suggestions = self._suggestions_of(conn, [u for u in uuids if u in known])
            # RETURNING names the rows actually inserted (rowcount is not reliable across drivers). One list of
            # rows: SQLAlchemy writes it as multi-row INSERTs within each backend's parameter limit
            # ("insertmanyvalues"), so 70,000 entries are some hundred statements, not one too many parameters.
            statement = self._insert_ignoring_duplicates(feedback).returning(feedback.c.idempotency_key)
            rows = [{"idempotency_key": e.idempotency_key, "service_id": service_id, "card_uuid": e.card_uuid,
                     "card_known": e.card_uuid in known, "outcome": e.outcome, "outcome_at": e.outcome_at,
                     "accepted_suggestions": list(e.accepted_suggestions), "override_system": e.override_system,
                     "override_code": e.override_code, "override_display": e.override_display,
                     "user_comment": e.user_comment, "received_at": when,
                     **self._card_copies(e.accepted_suggestions, known.get(e.card_uuid), suggestions)} for e in entries]
            inserted = {row[0] for row in conn.execute(statement, rows).all()}
            first = {e.idempotency_key: e for e in reversed(entries)}    # a key sent twice is stored once
            outcomes = tuple((known.get(e.card_uuid, (None,))[0], e.outcome)
                             for key, e in first.items() if key in inserted)
            return (StoredFeedback(len(entries), len(inserted), tuple(u for u in uuids if u not in known), outcomes),
                    set(issued))
        result, on_record = self._write(work)
        on_its_way = tuple(u for u in result.unknown_cards if u not in on_record and self._may_be_on_its_way(u))
        if on_its_way:
            self._recheck_later(service_id, on_its_way)
            result = replace(result, unknown_cards=tuple(u for u in result.unknown_cards if u not in on_its_way))
        log.info("service=%s feedback received=%d stored=%d unknown_cards=%d", service_id, result.received,
                 result.stored, len(result.unknown_cards))
        return result

    def report_rows(self) -> tuple[list, list]:
        """(topic, cards shown) and (topic or None for unknown cards, outcome, reason system, code, display, count)."""
        self.flush_issued()

        def work(conn: Connection):
            shown = conn.execute(select(issued_cards.c.topic, func.count()).group_by(issued_cards.c.topic)).all()
            joined = feedback.outerjoin(issued_cards, (feedback.c.card_uuid == issued_cards.c.card_uuid)
                                        & (feedback.c.service_id == issued_cards.c.service_id))
            group = (issued_cards.c.topic, feedback.c.outcome, feedback.c.override_system, feedback.c.override_code)
            outcomes = conn.execute(select(*group, func.max(feedback.c.override_display), func.count())
                                    .select_from(joined).group_by(*group)).all()
            return [tuple(r) for r in shown], [tuple(r) for r in outcomes]
        return self._write(work)

    def fill_missing_card_copies(self) -> None:
        """Before a report: fill in the card copies of feedback rows that lack them (see fill_card_copies). Looking
        costs one scan that stops at the first such row; they are rare."""
        if not self._ready:
            self._migrate()
        with self.engine.connect().execution_options(read_only=True) as conn, conn.begin():
            missing = conn.execute(select(feedback.c.id).where(MISSING_CARD_COPY).limit(1)).first()
        if missing is not None:
            self._write(fill_card_copies)

    def read(self, work: Callable[[Connection], object]):
        """Run `work` (reads only) in one transaction that sees one snapshot, after this worker's pending cards are
        written, without holding SQLite's write lock. StorageUnavailable when the database cannot be read."""
        self.flush_issued()
        try:
            if not self._ready:
                self._migrate()
            options = {"read_only": True}
            if self.backend == "postgresql":
                options["isolation_level"] = "REPEATABLE READ"
            with self.engine.connect().execution_options(**options) as conn, conn.begin():
                if self.backend == "postgresql":
                    # A report groups hundreds of thousands of rows: in memory rather than in sorted runs on disk,
                    # and without JIT compilation, which cost more than it saved on these queries (measured).
                    conn.execute(text("SET LOCAL work_mem = '64MB'"))
                    conn.execute(text("SET LOCAL jit = off"))
                return work(conn)
        except SQLAlchemyError as exc:
            log.warning("feedback store (%s) read failed: %s", self.backend, type(exc).__name__)
            raise StorageUnavailable(self.retry_after, reading=True) from exc

    def dispose(self) -> None:
        self.close()
        self.engine.dispose()
