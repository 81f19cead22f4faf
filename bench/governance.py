"""`python -m bench.governance`: how long GET /governance takes on a year of data (target: under 1 s on PostgreSQL).

Seeds a database (bench/governance_data.py: by default 1,000,000 issued cards and 200,000 feedback entries over
365 days) unless --no-seed, then asks the app for the page (in-process, the Flask test client: the time is the
server's, from request to the last byte of the body) several times per format and period, and prints the median,
the slowest, and how much of it the queries take. "Charts drawn anew" empties the worker's chart cache before
each request: the first request for a set of numbers; the other page rows reuse the charts (a reload).

    python -m bench.governance --url postgresql://postgres@127.0.0.1:5432/avh_governance_bench
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import time

from sqlalchemy import create_engine, text

from bench.governance_data import generate, load
from service import create_app
from service.config import Settings
from service.feedback import charts
from service.feedback.aggregates import Filters, governance_report
from service.feedback.store import metadata
from service.lru import Lru


VIEWER = "bench-governance-viewer"      # the page's credential: comments are read only for a viewer who has it


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.governance", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="the database (postgresql://... or sqlite:///path)")
    parser.add_argument("--cards", type=int, default=1_000_000)
    parser.add_argument("--entries", type=int, default=200_000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--no-seed", action="store_true", help="measure the database as it is")
    parser.add_argument("--repeats", type=int, default=7)
    return parser


def _seed(url: str, args, today: dt.date) -> None:
    engine = create_engine(url)
    metadata.drop_all(engine)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS avh_schema_version"))
    engine.dispose()
    started = time.perf_counter()
    rows = generate(args.cards, args.entries, today, args.days)
    generated = time.perf_counter()
    app = create_app(Settings.from_env({"AVH_CDS_AUTH": "off"}, database_url=url))
    load(app.extensions["avh"].store, rows)
    app.extensions["avh"].store.dispose()
    print(f"seeded {len(rows.issued):,} cards, {len(rows.suggested):,} suggestions, {len(rows.feedback):,} feedback "
          f"entries over {args.days} days (generated in {generated - started:.0f} s, loaded in "
          f"{time.perf_counter() - generated:.0f} s)")


def _times(call, repeats: int) -> list[float]:
    call()                                  # first call: imports, font cache, connection pool
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return times


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    today = dt.datetime.now(dt.timezone.utc).date()
    url = args.url.replace("postgresql://", "postgresql+psycopg://", 1)
    if not args.no_seed:
        _seed(url, args, today)
    app = create_app(Settings.from_env({"AVH_CDS_AUTH": "off", "AVH_CDS_GOVERNANCE_TOKEN": VIEWER}, database_url=url))
    client, store = app.test_client(), app.extensions["avh"].store
    year = f"from={today - dt.timedelta(days=364)}&to={today}"
    cases = [("page, default period (13 weeks)", "/governance", False),
             ("page, default period, charts drawn anew", "/governance", True),
             ("page, a year", f"/governance?{year}", False), ("page, a year, charts drawn anew", f"/governance?{year}", True),
             ("page, a year, one service", f"/governance?{year}&service=avh-patient-view", False),
             ("page, a year, with comments (credential)", f"/governance?{year}", False, True),
             ("JSON, a year", f"/governance?{year}&format=json", False),
             ("CSV, a year", f"/governance?{year}&format=csv", False)]
    print(f"{store.backend}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; "
          f"median and slowest of {args.repeats} (ms)")
    for name, path, fresh, *viewer in cases:
        headers = {"Authorization": f"Bearer {VIEWER}"} if viewer else {}

        def call(path=path, fresh=fresh, headers=headers):
            if fresh:
                charts._drawn = Lru(charts.CHARTS_KEPT)         # nothing drawn yet: the first request for these numbers
            response = client.get(path, headers=headers)
            assert response.status_code == 200, response.data[:300]
            response.get_data()
        times = _times(call, args.repeats)
        print(f"  {name:<44} {statistics.median(times) * 1000:7.0f} {max(times) * 1000:7.0f}")
    settings = app.extensions["avh"].settings
    sql = _times(lambda: governance_report(store, Filters(today - dt.timedelta(days=364), today), today,
                                           settings.governance_override_threshold, settings.governance_min_feedback),
                 args.repeats)
    print(f"  {'of which the queries, a year':<44} {statistics.median(sql) * 1000:7.0f} {max(sql) * 1000:7.0f}")
    store.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
