"""The avh-cds command line."""
from __future__ import annotations

import argparse
import json
import sys


def _replay(args) -> int:
    import datetime as dt
    from pathlib import Path
    from .fixtures import load_fixture
    from .replay import InProcess, Remote, ReplayError, format_outcomes, replay
    paths = []
    for name in args.fixtures:
        path = Path(name)
        paths += sorted(path.glob("*.json")) if path.is_dir() else [path]
    today = dt.datetime.now(dt.timezone.utc).date()   # the service judges "now" in UTC
    try:
        fixtures = [load_fixture(p, today) for p in paths]
    except (OSError, ValueError, KeyError, StopIteration) as exc:
        print(f"avh-cds replay: cannot read fixture: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    try:
        outcomes = replay(fixtures, Remote(args.url) if args.url else InProcess(), fhir_server=args.fhir_server)
    except ReplayError as exc:
        print(f"avh-cds replay: {exc}", file=sys.stderr)
        return 2
    print(format_outcomes(outcomes))
    return 0 if all(o.matches for o in outcomes) else 1


def _serve(args) -> int:
    from . import create_app
    from .config import Settings
    settings = Settings.from_env(fixture_fhir=True)
    app = create_app(settings)
    app.run(host=args.host, port=args.port, threaded=True)
    return 0


def _feedback_report(args) -> int:
    from . import open_store
    from .config import Settings
    from .feedback import build_report, format_table
    from .storage import StorageUnavailable
    store = open_store(Settings.from_env())
    try:
        rows = build_report(*store.report_rows())
    except StorageUnavailable:
        print(f"avh-cds: the feedback store ({store.backend}) cannot be read; is the database up?", file=sys.stderr)
        return 2
    finally:
        store.dispose()
    if args.json:
        print(json.dumps({"database": store.backend, "topics": [r.as_json() for r in rows]}, indent=2))
    else:
        print(format_table(rows))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="avh-cds", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    replay = sub.add_parser("replay", help="post fixture bundles as patient-view calls and check their cards",
                            description="Turn each fixture bundle into a patient-view request (prefetch filled by "
                                        "the service's discovery templates), print the cards and whether they are "
                                        "the ones the fixture expects. Exit status 1 on any mismatch, 2 on error.")
    replay.add_argument("fixtures", nargs="+", metavar="FIXTURE", help="fixture bundle file(s) or directories")
    replay.add_argument("--url", help="base URL of a running service (default: in-process, no network)")
    replay.add_argument("--fhir-server", metavar="URL",
                        help="send no prefetch, only this fhirServer (e.g. the fixture FHIR endpoint): the service "
                             "fetches the data itself")
    replay.set_defaults(func=_replay)
    serve = sub.add_parser("serve", help="start the service (development server, embedded defaults)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.set_defaults(func=_serve)
    report = sub.add_parser("feedback-report", help="per card topic: cards shown, accepted, overridden (with reasons)")
    report.add_argument("--json", action="store_true", help="JSON instead of a table")
    report.set_defaults(func=_feedback_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
