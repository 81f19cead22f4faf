"""The avh-cds command line."""
from __future__ import annotations

import argparse
import json
import sys


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
