"""The governance report's per-day counts, kept by the database itself with triggers.

`avh_report_day` holds, per UTC day, card topic and service: the cards issued that day, how many of them got
feedback, and the feedback entries on them accepted and overridden. The report reads a few thousand of these
rows for a year instead of counting a million issued cards (service/feedback/aggregates.py).

Triggers on `avh_issued_card` and `avh_feedback` keep it right for every writer: the service, an import, a
COPY, a restore, SQL typed by hand, and deletes and updates as well as inserts. The migration that creates it
fills it from the rows already stored. What counts is exactly what the raw tables say:
- a card counts on the UTC day of its `issued_at`, under its topic and service;
- a feedback row counts when its card is known and the card's topic and issue time were copied onto it
  (`card_known` true, `card_topic` and `card_issued_at` set), on its card's day, topic and service.
  "Cards with feedback" counts distinct cards per (day, topic, service).

PostgreSQL: statement-level AFTER triggers with transition tables, so a COPY or a multi-row INSERT of 200,000
rows makes one aggregated upsert. Before counting a card's other feedback rows, a feedback trigger locks the
rollup rows it will change (in key order): a concurrent transaction adding the first feedback on the same card
waits, and this one then sees it, so the card is counted once. TRUNCATE sets the counts of that table to zero.
SQLite: row triggers (SQLite has no statement triggers); one writer at a time, so no locking is needed.
"""
from __future__ import annotations

from functools import partial

from sqlalchemy import Table
from sqlalchemy.engine import Connection

ROLLUP = "avh_report_day"
COUNTS = ("cards_issued", "cards_with_feedback", "accepted", "overridden")
KEY = ("day", "topic", "service_id")


def _day(dialect: str, column: str) -> str:
    """The UTC calendar day of a stored timestamp. SQLite keeps UTC wall-clock text; PostgreSQL a timestamptz,
    whose date would otherwise follow the session's time zone."""
    return f"date({column})" if dialect == "sqlite" else f"CAST(({column}) AT TIME ZONE 'UTC' AS DATE)"


def _counted(dialect: str, row: str) -> str:
    """Whether a feedback row counts with its card (see the module docstring)."""
    known = "1" if dialect == "sqlite" else "TRUE"
    return f"({row}.card_known IS {known} AND {row}.card_topic IS NOT NULL AND {row}.card_issued_at IS NOT NULL)"


def _same_card(dialect: str, row: str, other: str) -> str:
    """`other` is a feedback row on the same card, counted under the same day, topic and service as `row`."""
    return (f"{other}.card_uuid = {row}.card_uuid AND {other}.service_id = {row}.service_id AND "
            f"{other}.card_topic = {row}.card_topic AND "
            f"{_day(dialect, other + '.card_issued_at')} = {_day(dialect, row + '.card_issued_at')} AND "
            f"{_counted(dialect, other)}")


def backfill(conn: Connection, cards: Table, feedback: Table) -> None:
    """Count the rows already stored into the (empty) rollup."""
    d = conn.dialect.name
    per_card = (f"SELECT {_day(d, 'f.card_issued_at')} AS day, f.card_topic AS topic, f.service_id, "
                f"sum(CASE WHEN f.outcome = 'accepted' THEN 1 ELSE 0 END) AS accepted, "
                f"sum(CASE WHEN f.outcome = 'overridden' THEN 1 ELSE 0 END) AS overridden "
                f"FROM {feedback.name} AS f WHERE {_counted(d, 'f')} "
                f"GROUP BY {_day(d, 'f.card_issued_at')}, f.card_topic, f.service_id, f.card_uuid")
    conn.exec_driver_sql(
        f"INSERT INTO {ROLLUP} ({', '.join(KEY + COUNTS)}) "
        f"SELECT day, topic, service_id, sum(cards_issued), sum(cards_with_feedback), sum(accepted), sum(overridden) "
        f"FROM (SELECT {_day(d, 'issued_at')} AS day, topic, service_id, count(*) AS cards_issued, "
        f"0 AS cards_with_feedback, 0 AS accepted, 0 AS overridden FROM {cards.name} "
        f"GROUP BY {_day(d, 'issued_at')}, topic, service_id "
        f"UNION ALL SELECT day, topic, service_id, 0, count(*), sum(accepted), sum(overridden) "
        f"FROM ({per_card}) AS per_card GROUP BY day, topic, service_id) AS counted "
        f"WHERE day IS NOT NULL GROUP BY day, topic, service_id")


def install_triggers(conn: Connection, cards: Table, feedback: Table) -> None:
    statements = (_postgresql_triggers if conn.dialect.name == "postgresql" else _sqlite_triggers)(cards.name,
                                                                                                    feedback.name)
    for statement in statements:
        conn.exec_driver_sql(statement)


# PostgreSQL ---------------------------------------------------------------------------------------------------

def _pg_function(name: str, body: str) -> str:
    return (f"CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $body$\n"
            f"BEGIN\n{body}\nRETURN NULL;\nEND\n$body$")


def _pg_upsert(rows: str, counts: tuple[str, ...]) -> str:
    """Add `rows` (day, topic, service_id, then `counts`) to the rollup, in key order."""
    return (f"INSERT INTO {ROLLUP} AS r ({', '.join(KEY + counts)})\n{rows}\nORDER BY day, topic, service_id\n"
            f"ON CONFLICT (day, topic, service_id) DO UPDATE SET "
            + ", ".join(f"{c} = r.{c} + excluded.{c}" for c in counts) + ";")


def _pg_cards_body(new: str, old: str) -> str:
    day = _day("postgresql", "issued_at")
    return _pg_upsert(f"SELECT day, topic, service_id, sum(n) FROM (\n"
                      f"  SELECT {day} AS day, topic, service_id, 1 AS n FROM {new} AS x\n"
                      f"  UNION ALL SELECT {day}, topic, service_id, -1 FROM {old} AS x) AS changed\n"
                      f"GROUP BY day, topic, service_id", ("cards_issued",))


def _pg_feedback_body(table: str, new: str, old: str) -> str:
    """Lock the rollup rows first (see the module docstring). Then, per card and rollup row: the change in its
    counted feedback rows (n, accepted, overridden) and how many it has now. It has feedback now if now > 0, and
    had before the statement if now - n > 0; the difference is its change to "cards with feedback"."""
    pg = "postgresql"
    changed_rows = (f"SELECT card_uuid, service_id, card_topic, card_issued_at, outcome, 1 AS sign FROM {new} AS x "
                    f"WHERE {_counted(pg, 'x')}\n"
                    f"  UNION ALL SELECT card_uuid, service_id, card_topic, card_issued_at, outcome, -1 FROM {old} AS x "
                    f"WHERE {_counted(pg, 'x')}")
    lock = (f"INSERT INTO {ROLLUP} AS r ({', '.join(KEY + COUNTS)})\n"
            f"SELECT DISTINCT {_day(pg, 'card_issued_at')}, card_topic, service_id, 0, 0, 0, 0 FROM ({changed_rows}) AS c\n"
            f"ORDER BY 1, 2, 3\nON CONFLICT (day, topic, service_id) DO UPDATE SET cards_issued = r.cards_issued;")
    per_card = (f"SELECT card_uuid, service_id, card_topic, min(card_issued_at) AS card_issued_at, "
                f"{_day(pg, 'card_issued_at')} AS day, sum(sign) AS n, "
                f"sum(CASE WHEN outcome = 'accepted' THEN sign ELSE 0 END) AS accepted, "
                f"sum(CASE WHEN outcome = 'overridden' THEN sign ELSE 0 END) AS overridden "
                f"FROM ({changed_rows}) AS c GROUP BY card_uuid, service_id, card_topic, {_day(pg, 'card_issued_at')}")
    now = f"(SELECT count(*) FROM {table} AS f WHERE {_same_card(pg, 'p', 'f')})"
    counted = f"SELECT p.*, {now} AS now FROM ({per_card}) AS p"
    upsert = _pg_upsert(f"SELECT day, card_topic AS topic, service_id, "
                        f"sum((now > 0)::int - (now - n > 0)::int), sum(accepted), sum(overridden)\n"
                        f"FROM ({counted}) AS counted GROUP BY day, card_topic, service_id",
                        ("cards_with_feedback", "accepted", "overridden"))
    return f"{lock}\n{upsert}"


def _postgresql_triggers(cards: str, feedback: str) -> list[str]:
    statements = []
    for table, body, zeroed in ((cards, _pg_cards_body, ("cards_issued",)),
                                (feedback, partial(_pg_feedback_body, feedback), ("cards_with_feedback", "accepted", "overridden"))):
        none = f"(SELECT * FROM {table} WHERE false)"
        for event, new, old, referencing in (("INSERT", "new_rows", none, "NEW TABLE AS new_rows"),
                                             ("DELETE", none, "old_rows", "OLD TABLE AS old_rows"),
                                             ("UPDATE", "new_rows", "old_rows", "NEW TABLE AS new_rows OLD TABLE AS old_rows")):
            function = f"{table}_{event.lower()}_{ROLLUP}"
            statements += [_pg_function(function, body(new, old)),
                           f"DROP TRIGGER IF EXISTS {function} ON {table}",
                           f"CREATE TRIGGER {function} AFTER {event} ON {table} REFERENCING {referencing} "
                           f"FOR EACH STATEMENT EXECUTE FUNCTION {function}()"]
        function = f"{table}_truncate_{ROLLUP}"
        statements += [_pg_function(function, f"UPDATE {ROLLUP} SET " + ", ".join(f"{c} = 0" for c in zeroed) + ";"),
                       f"DROP TRIGGER IF EXISTS {function} ON {table}",
                       f"CREATE TRIGGER {function} AFTER TRUNCATE ON {table} FOR EACH STATEMENT EXECUTE FUNCTION {function}()"]
    return statements


# SQLite -------------------------------------------------------------------------------------------------------

def _sqlite_change(sign: str, key: tuple[str, str, str], counts: dict[str, str]) -> str:
    """Make sure the rollup row exists, then add to its counts."""
    day, topic, service = key
    return (f"INSERT OR IGNORE INTO {ROLLUP} ({', '.join(KEY + COUNTS)}) VALUES ({day}, {topic}, {service}, 0, 0, 0, 0);\n"
            f"UPDATE {ROLLUP} SET " + ", ".join(f"{c} = {c} {sign} ({v})" for c, v in counts.items())
            + f" WHERE day = {day} AND topic = {topic} AND service_id = {service};")


def _sqlite_triggers(cards: str, feedback: str) -> list[str]:
    statements = []
    for name, event, row, sign in (("insert", "INSERT", "NEW", "+"), ("delete", "DELETE", "OLD", "-"),
                                   ("update_old", "UPDATE", "OLD", "-"), ("update_new", "UPDATE", "NEW", "+")):
        trigger = f"{cards}_{name}_{ROLLUP}"
        key = (_day("sqlite", f"{row}.issued_at"), f"{row}.topic", f"{row}.service_id")
        statements += [f"DROP TRIGGER IF EXISTS {trigger}",
                       f"CREATE TRIGGER {trigger} AFTER {event} ON {cards} BEGIN\n"
                       f"{_sqlite_change(sign, key, {'cards_issued': '1'})}\nEND"]
        # A feedback row adds (or takes away) its card's "with feedback" when no other row of that card counts
        # under the same day, topic and service. "Other" excludes this row's id: the row being inserted or the
        # new version of an updated one (a deleted row is gone already).
        trigger = f"{feedback}_{name}_{ROLLUP}"
        key = (_day("sqlite", f"{row}.card_issued_at"), f"{row}.card_topic", f"{row}.service_id")
        alone = (f"NOT EXISTS (SELECT 1 FROM {feedback} AS f WHERE {_same_card('sqlite', row, 'f')} "
                 f"AND f.id IS NOT {'OLD' if event == 'DELETE' else 'NEW'}.id)")
        counts = {"cards_with_feedback": alone, "accepted": f"{row}.outcome = 'accepted'",
                  "overridden": f"{row}.outcome = 'overridden'"}
        statements += [f"DROP TRIGGER IF EXISTS {trigger}",
                       f"CREATE TRIGGER {trigger} AFTER {event} ON {feedback} WHEN {_counted('sqlite', row)} BEGIN\n"
                       f"{_sqlite_change(sign, key, counts)}\nEND"]
    return statements
