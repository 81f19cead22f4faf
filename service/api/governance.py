"""GET /governance: the alert-governance report for a CDS committee (docs/governance.md), as a page, CSV or JSON.

Filters are in the URL (shareable): from, to (UTC days, inclusive), service, format. Anything else, or a value
that is not one of these, is a 400 naming it. The numbers come from service/feedback/aggregates.py, the page
from service/feedback/page.py, the same code `avh-cds feedback-report --html` runs.
"""
from __future__ import annotations

import datetime as dt
import re
import time

from flask import Blueprint, Response, current_app, g, jsonify, request

from service.errors import ApiError
from service.feedback.aggregates import Filters, governance_report
from service.feedback.page import Vocabulary, render_csv, render_html, render_json
from service.security.governance import client_address, governance_viewer
from service.security.logs import LOGGED_BY_APP, log_access

bp = Blueprint("governance", __name__)
PARAMETERS = ("from", "to", "service", "format")
FORMATS = ("html", "csv", "json")
DEFAULT_DAYS = 91            # thirteen weeks
MAX_DAYS = 731               # two years: the report's cost grows with the period
DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
FIRST_DAY, LAST_DAY = dt.date(2000, 1, 1), dt.date(2199, 12, 31)
COMMENTS_HIDDEN = ("Override comments are free text and are shown only to a viewer who presents the governance "
                   "credential (AVH_CDS_GOVERNANCE_TOKEN).")
# The page loads nothing but itself: no script, no font, no stylesheet from elsewhere.
PAGE_POLICY = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; base-uri 'none'"


def _bad(parameter: str, problem: str) -> ApiError:
    return ApiError(400, "invalid_filter", f"{parameter}: {problem}", parameter=parameter)


def _day(name: str, value: str) -> dt.date:
    if not DAY.match(value):
        raise _bad(name, f"{value[:40]!r} is not a date written YYYY-MM-DD")
    try:
        day = dt.date.fromisoformat(value)
    except ValueError:
        raise _bad(name, f"{value!r} is not a calendar date") from None
    if not FIRST_DAY <= day <= LAST_DAY:
        raise _bad(name, f"{value} is outside {FIRST_DAY} to {LAST_DAY}")
    return day


def parse_filters(args, known_services, today: dt.date) -> tuple[Filters, str]:
    """The URL's filters and format, checked: a specific 400 for anything else."""
    unknown = sorted(set(args) - set(PARAMETERS))
    if unknown:
        raise _bad(unknown[0][:40], f"unknown parameter; the filters are {', '.join(PARAMETERS)}")
    for name in args:
        if len(args.getlist(name)) > 1:
            raise _bad(name, "given more than once")
    end = _day("to", args["to"]) if args.get("to") else today
    start = _day("from", args["from"]) if args.get("from") else end - dt.timedelta(days=DEFAULT_DAYS - 1)
    if start > end:
        raise _bad("from", f"{start} is after to ({end})")
    if (end - start).days + 1 > MAX_DAYS:
        raise _bad("from", f"the period is {(end - start).days + 1} days; at most {MAX_DAYS}")
    service = args.get("service") or None
    if service is not None and service not in known_services:
        raise _bad("service", f"{service[:100]!r} is not one of this server's services ({', '.join(sorted(known_services))})")
    form = args.get("format") or "html"
    if form not in FORMATS:
        raise _bad("format", f"{form[:20]!r}: one of {', '.join(FORMATS)}")
    return Filters(start, end, service), form


@bp.get("/governance")
def governance():
    avh = current_app.extensions["avh"]
    settings = avh.settings
    g.governance_started = time.perf_counter()
    viewer = governance_viewer(settings, request.headers.get("Authorization"),
                               client_address(request.environ, settings.trusted_proxy_hops),
                               current_app.extensions["avh_governance_tries"])
    g.governance_viewer = viewer.how
    now = dt.datetime.now(dt.timezone.utc)
    known = {s.id for s in avh.registry}
    filters, form = parse_filters(request.args, known, now.date())
    g.governance_query = {"from": filters.start.isoformat(), "to": filters.end.isoformat(), "service": filters.service,
                          "format": form}
    report = governance_report(avh.store, filters, now.date(), settings.governance_override_threshold,
                               settings.governance_min_feedback, with_comments=viewer.authorised)
    words = Vocabulary.of(avh.engine.library, avh.registry)
    headers = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
    if form == "json":
        response = jsonify(render_json(report, words))
    elif form == "csv":
        response = Response(render_csv(report, words), mimetype="text/csv")
        response.headers["Content-Disposition"] = f'attachment; filename="governance-{filters.start}-{filters.end}.csv"'
    else:
        response = Response(render_html(report, words, now, link_base=request.path, services=sorted(known),
                                         comments_note=COMMENTS_HIDDEN), mimetype="text/html")
        headers["Content-Security-Policy"] = PAGE_POLICY
    response.headers.update(headers)
    return response


@bp.after_request
def _access_line(response: Response) -> Response:
    """One line per request, as for CDS calls: the filters, the status and the time; never the credential."""
    started = g.get("governance_started", g.get("started", time.perf_counter()))
    fields = {"event": "governance", "status": response.status_code, "ms": round((time.perf_counter() - started) * 1000, 1),
              "viewer": g.get("governance_viewer"), **{k: v for k, v in (g.get("governance_query") or {}).items() if v}}
    log_access("governance", fields)
    request.environ[LOGGED_BY_APP] = True
    return response
