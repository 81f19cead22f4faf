"""The avh-cds command line."""
from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path


def _serve(args) -> int:
    from . import create_app
    from .config import Settings
    settings = Settings.from_env(fixture_fhir=True)
    app = create_app(settings)
    app.run(host=args.host, port=args.port, threaded=True)
    return 0


def _load_fhir(args) -> int:
    """Load fhir_fixtures/ into a FHIR server (or, with --verify, check that it serves them)."""
    from .config import Settings
    from .fixtures import load_fixtures
    from .loader import FhirLoader, ServerNotUp, resources_in_load_order
    fixtures_dir = args.fixtures or Settings.from_env().fixtures_dir
    resources = resources_in_load_order(load_fixtures(fixtures_dir, args.as_of))
    if not resources:
        print(f"no fixtures in {fixtures_dir}", file=sys.stderr)
        return 1
    loader = FhirLoader(args.fhir_url, timeout=args.timeout)
    try:
        loader.wait_until_up(args.wait)
    except ServerNotUp as exc:
        print(exc, file=sys.stderr)
        return 2
    report = loader.verify(resources) if args.verify else loader.load(resources)
    for problem in report.problems:
        print(problem, file=sys.stderr)
    action = "verified" if args.verify else "loaded"
    print(f"{action} {len(report.done)} of {len(resources)} resources from {fixtures_dir} at {args.fhir_url}")
    return 1 if report.problems else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="avh-cds", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="start the service (development server, embedded defaults)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.set_defaults(func=_serve)
    load = sub.add_parser("load-fhir", help="PUT the FHIR fixtures into a FHIR R4 server, or --verify it serves them")
    load.add_argument("--fhir-url", required=True, help="the FHIR server's base URL, e.g. http://hapi:8080/fhir")
    load.add_argument("--fixtures", type=Path, help="fixture directory (default: AVH_CDS_FIXTURES_DIR)")
    load.add_argument("--verify", action="store_true", help="write nothing: read every resource back and compare")
    load.add_argument("--wait", type=float, default=300.0, help="seconds to wait for the server to come up")
    load.add_argument("--timeout", type=float, default=10.0, help="seconds per HTTP request")
    load.add_argument("--as-of", type=dt.date.fromisoformat, default=None,
                      help="the day fixture dates are shifted to (default: today; the load day when verifying later)")
    load.set_defaults(func=_load_fhir)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
