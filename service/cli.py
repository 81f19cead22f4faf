"""The avh-cds command line."""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import uuid
from pathlib import Path


def _replay(args) -> int:
    from service.fhir.fixtures import load_fixture
    from service.fhir.replay import InProcess, Remote, ReplayError, format_outcomes, replay
    paths = []
    for name in args.fixtures:
        path = Path(name)
        paths += sorted(path.glob("*.json")) if path.is_dir() else [path]
    today = dt.datetime.now(dt.timezone.utc).date()   # the service judges "now" in UTC
    fixtures = []
    for path in paths:
        try:
            fixtures.append(load_fixture(path, today))
        except (OSError, ValueError) as exc:    # FixtureError names what the Bundle lacks
            print(f"avh-cds replay: cannot read fixture {path}: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 2
    try:
        outcomes = replay(fixtures, Remote(args.url) if args.url else InProcess(_in_process_app()),
                          fhir_server=args.fhir_server)
    except ReplayError as exc:
        print(f"avh-cds replay: {exc}", file=sys.stderr)
        return 2
    print(format_outcomes(outcomes))
    return 0 if all(o.matches for o in outcomes) else 1


def _in_process_app(**extra_env):
    from service import create_app
    from service.config import Settings
    # In-process there is no client to authenticate: the test client is the caller. Per-call logs
    # would interleave with the table (AVH_CDS_LOG_LEVEL still wins).
    env = {"AVH_CDS_LOG_LEVEL": "ERROR", **os.environ, "AVH_CDS_AUTH": "off", **extra_env}
    return create_app(Settings.from_env(env))


ORDER_HOOKS = ("order-select", "order-sign")


def _explain_request(args, transport) -> dict:
    """The hook request to explain: a saved one, or a fixture's (prefetch filled from discovery) or a FHIR
    server's record, made a call of the service's hook (the draft orders from --draft-orders)."""
    from service.fhir.fixtures import load_fixture
    from service.fhir.replay import REPLAY_USER, ReplayError, call_ok, hook_request, prefetch_templates
    if args.input:
        data = json.loads(Path(args.input).read_text())
        if not (isinstance(data, dict) and data.get("resourceType") == "Bundle"):
            return data
    services = call_ok(transport, "GET", "/cds-services").get("services", [])
    hook = next((s.get("hook") for s in services if s.get("id") == args.service), None)
    if hook in ORDER_HOOKS and not args.draft_orders:
        raise ReplayError(f"{args.service} answers {hook}: give the draft orders (--draft-orders FILE, a Bundle), "
                          "or a saved hook request")
    if args.fhir_server:
        request = {"hook": "patient-view", "hookInstance": str(uuid.uuid4()), "fhirServer": args.fhir_server,
                   "context": {"patientId": args.patient, "userId": REPLAY_USER}}
    else:
        fixture = load_fixture(Path(args.input), dt.datetime.now(dt.timezone.utc).date())
        request = hook_request(fixture, prefetch_templates(transport, args.service))
    if hook == "encounter-discharge":
        request["context"]["encounterId"] = "explain"
    if hook in ORDER_HOOKS:
        try:
            drafts = json.loads(Path(args.draft_orders).read_text())
        except (OSError, ValueError) as exc:
            raise ReplayError(f"cannot read {args.draft_orders}: {type(exc).__name__}: {exc}") from exc
        request["context"]["draftOrders"] = drafts
        if hook == "order-select":      # every draft of the file is selected
            entries = drafts.get("entry") if isinstance(drafts, dict) and isinstance(drafts.get("entry"), list) else []
            request["context"]["selections"] = [f"{e['resource'].get('resourceType')}/{e['resource'].get('id')}"
                                                for e in entries if isinstance(e, dict) and isinstance(e.get("resource"), dict)]
    if hook:
        request["hook"] = hook
    return request


def _explain(args) -> int:
    """"Why no card?": the facts and, per topic, fired or not and why (service/api/explain.py)."""
    from service.api.explain import Explanation, format_table
    from service.fhir.replay import InProcess, Remote, ReplayError, call_ok
    if bool(args.fhir_server) == bool(args.input) or bool(args.fhir_server) != bool(args.patient):
        print("avh-cds explain: give a FILE (fixture bundle or saved hook request), or --fhir-server with --patient",
              file=sys.stderr)
        return 2
    if args.url:
        transport = Remote(args.url)
    else:       # in-process with auth off; the FHIR server named here is the one it may contact
        from service.security.issuers import SecurityConfigError
        fhir = {"AVH_CDS_FHIR_SERVERS": args.fhir_server} if args.fhir_server else {}
        try:
            transport = InProcess(_in_process_app(**fhir))
        except SecurityConfigError as exc:      # e.g. the scheme left off: 127.0.0.1:8080/fhir
            print(f"avh-cds explain: --fhir-server {args.fhir_server!r}: {exc}", file=sys.stderr)
            return 2
    try:
        request = _explain_request(args, transport)
        answer = call_ok(transport, "POST", f"/cds-services/{args.service}/explain", request)
    except (OSError, ValueError) as exc:
        print(f"avh-cds explain: cannot read {args.input}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    except ReplayError as exc:
        print(f"avh-cds explain: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(answer, indent=2) if args.json else format_table(Explanation.from_json(answer)))
    return 0


def _serve(args) -> int:
    from flask.helpers import get_debug_flag

    from service import create_app
    from service.api.accesslog import DevelopmentAccessLog, errors_unquoted
    from service.config import Settings
    try:
        app = create_app(Settings.from_env(fixture_fhir=True))
    except ValueError as exc:   # a setting that cannot work (SecurityConfigError, CardDefinitionError are ValueErrors)
        print(f"avh-cds serve: {exc}", file=sys.stderr)
        return 2
    app.wsgi_app = errors_unquoted(app.wsgi_app)
    if get_debug_flag():
        app.logger.warning("avh-cds serve: FLASK_DEBUG is ignored: the werkzeug debugger and reloader stay off")
    # Never werkzeug's debugger (a traceback page with the request's headers, a console for any caller sending
    # Host: 127.0.0.1) nor its reloader, whatever FLASK_DEBUG (or a .env file app.run reads) says.
    app.run(host=args.host, port=args.port, threaded=True, request_handler=DevelopmentAccessLog,
            debug=False, use_debugger=False, use_reloader=False)
    return 0


def _feedback_report(args) -> int:
    from service import open_store
    from service.config import Settings
    from service.feedback.entries import build_report, format_table
    from service.feedback.store import StorageUnavailable
    if args.html:
        return _governance_html(args)
    given = [flag for flag, value in (("--from", args.date_from), ("--to", args.date_to), ("--service", args.service),
                                      ("--with-comments", args.with_comments)) if value]
    if given:       # the table counts all time and every service: a filter it ignored would pass for applied
        print(f"avh-cds feedback-report: {given[0]} goes with --html (the table counts all time and every service)",
              file=sys.stderr)
        return 2
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


def _governance_html(args) -> int:
    """The governance page (GET /governance), written to a file: same aggregates, same template, no server."""
    from werkzeug.datastructures import MultiDict

    from service import open_store
    from service.api.governance import parse_filters
    from service.api.services import build_registry
    from service.config import Settings
    from service.api.engine import Engine
    from service.errors import ApiError
    from service.feedback.aggregates import governance_report
    from service.feedback.page import Vocabulary, render_html
    from service.feedback.store import StorageUnavailable
    settings = Settings.from_env()
    engine = Engine.load(settings.cards_dir)
    registry = build_registry(engine.valuesets)
    now = dt.datetime.now(dt.timezone.utc)
    given = {"from": args.date_from, "to": args.date_to, "service": args.service}
    try:
        filters, _ = parse_filters(MultiDict({k: v for k, v in given.items() if v}), {s.id for s in registry}, now.date())
    except ApiError as exc:
        print(f"avh-cds feedback-report: {exc.message}", file=sys.stderr)
        return 2
    store = open_store(settings)
    try:
        report = governance_report(store, filters, now.date(), settings.governance_override_threshold,
                                   settings.governance_min_feedback, with_comments=args.with_comments)
    except StorageUnavailable:
        print(f"avh-cds: the feedback store ({store.backend}) cannot be read; is the database up?", file=sys.stderr)
        return 2
    finally:
        store.dispose()
    note = "Override comments are left out of this file; `--with-comments` puts them in."
    try:
        Path(args.html).write_text(render_html(report, Vocabulary.of(engine.library, registry), now, comments_note=note),
                                   encoding="utf-8")
    except OSError as exc:
        print(f"avh-cds feedback-report: cannot write {args.html}: {exc.strerror or type(exc).__name__}", file=sys.stderr)
        return 2
    print(f"wrote {args.html}: {report.filters.start} to {report.filters.end}, {report.total.issued} cards issued")
    return 0


def _load_fhir(args) -> int:
    """Load fhir_fixtures/ into a FHIR server (or, with --verify, check that it serves them)."""
    from service.config import Settings
    from service.fhir.fixtures import load_fixtures
    from service.fhir.loader import FhirLoader, ServerNotUp, resources_in_load_order
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


def _check_config(args) -> int:
    from service.checkconfig import check_config
    from service.config import Settings
    try:
        settings = Settings.from_env()
    except ValueError as exc:       # a setting that cannot be read: named, not a traceback
        print(f"problem: {exc}\n\n1 problem(s): an EHR cannot use this configuration as it is")
        return 1
    status, text = check_config(settings, timeout=args.timeout)
    print(text)
    return status


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
    report.add_argument("--html", metavar="FILE", help="write the governance page (GET /governance) to FILE instead")
    report.add_argument("--from", dest="date_from", metavar="YYYY-MM-DD", help="with --html: first day (default: 13 weeks before --to)")
    report.add_argument("--to", dest="date_to", metavar="YYYY-MM-DD", help="with --html: last day (default: today, UTC)")
    report.add_argument("--service", help="with --html: one CDS service id (default: all)")
    report.add_argument("--with-comments", action="store_true",
                        help="with --html: include override comments (free text; keep the file within the committee)")
    report.set_defaults(func=_feedback_report)
    load = sub.add_parser("load-fhir", help="PUT the FHIR fixtures into a FHIR R4 server, or --verify it serves them")
    load.add_argument("--fhir-url", required=True, help="the FHIR server's base URL, e.g. http://hapi:8080/fhir")
    load.add_argument("--fixtures", type=Path, help="fixture directory (default: AVH_CDS_FIXTURES_DIR)")
    load.add_argument("--verify", action="store_true", help="write nothing: read every resource back and compare")
    load.add_argument("--wait", type=float, default=300.0, help="seconds to wait for the server to come up")
    load.add_argument("--timeout", type=float, default=10.0, help="seconds per HTTP request")
    load.add_argument("--as-of", type=dt.date.fromisoformat, default=None,
                      help="the day fixture dates are shifted to (default: today; the load day when verifying later)")
    load.set_defaults(func=_load_fhir)
    explain = sub.add_parser("explain", help="why (no) card: the facts derived and, per topic, fired or not and why",
                             description="Explain a call of any avh-cds service (patient-view, order-select, order-sign, "
                                         "encounter-discharge): the facts avh-cds derives from the record and, for "
                                         "each of the hook's card topics, whether it fires and the one reason why. The "
                                         "input is a fixture bundle, a saved hook request (JSON), or a FHIR server and "
                                         "patient id; for order-select/order-sign from a bundle or a FHIR server, "
                                         "--draft-orders gives the drafts. In-process by default; --url asks a running "
                                         "development server (AVH_CDS_AUTH=off: the explain endpoint does not exist "
                                         "otherwise).")
    explain.add_argument("input", nargs="?", metavar="FILE", help="fixture bundle or saved hook request (JSON)")
    explain.add_argument("--fhir-server", metavar="URL", help="read the record from this FHIR R4 server")
    explain.add_argument("--patient", metavar="ID", help="the patient's id on --fhir-server")
    explain.add_argument("--url", help="base URL of a running development server (default: in-process)")
    explain.add_argument("--service", default="avh-patient-view",
                         help="the CDS service (default: avh-patient-view; also avh-order-select, avh-order-sign, "
                              "avh-encounter-discharge)")
    explain.add_argument("--draft-orders", metavar="FILE",
                         help="order-select/order-sign: a Bundle of the draft orders (order-select selects them all)")
    explain.add_argument("--json", action="store_true", help="the endpoint's JSON instead of a table")
    explain.set_defaults(func=_explain)
    check = sub.add_parser("check-config", help="check the configuration an EHR would call, print what it registers",
                           description="Read the environment as the service does, load the card library and the "
                                       "issuers file, fetch each issuer's JWK Set, ask the database and Redis, and "
                                       "print the discovery URL, services, hooks and prefetch templates an EHR "
                                       "registers. Exit status 1 on any problem (each line starting FAIL).")
    check.add_argument("--timeout", type=float, default=5.0, help="seconds for each JWK Set fetch")
    check.set_defaults(func=_check_config)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
