"""A read-only FHIR R4 endpoint over the fixture Bundles (fhir_fixtures/), mounted at /fhir.

For development and demos with no EHR: the public CDS Hooks sandbox and avh-cds's own fetch path
read patients from it. Mounted only when Settings.fixture_fhir is true (`avh-cds serve` sets it).
Fixtures are loaded through service/fixtures.py, so their dates are shifted to today; the store
reloads when the date changes. Search semantics live in service/fhir_search.py.
"""
from __future__ import annotations

import datetime as dt
import logging
import re
import threading
import uuid
from pathlib import Path
from typing import Callable
from urllib.parse import unquote_to_bytes, urlencode

from flask import Blueprint, Flask, current_app, json, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from service.errors import http_error, match_without_slash, no_slash, slash_target
from service.fhir.search import SearchError, parse_search
from service.fhir.types import CONVERTERS, known_type
from service.fhir.fixtures import load_fixtures

log = logging.getLogger(__name__)
bp = Blueprint("fixture_fhir", __name__, url_prefix="/fhir")
FHIR_JSON = "application/fhir+json; charset=utf-8"
FORM = "application/x-www-form-urlencoded"
# Types the capability statement always lists: those the prefetch templates search.
SEARCHED_TYPES = ("Patient", "Condition", "Observation", "Procedure", "MedicationRequest", "ServiceRequest",
                  "DiagnosticReport", "MedicationAdministration", "Medication")


class FixtureStore:
    """Every resource of every fixture Bundle, as of one day (dates shifted to it)."""

    def __init__(self, directory: Path, today: dt.date):
        self.directory, self.today = directory, today
        self.resources: list[dict] = []
        self.by_ref: dict[tuple[str, str], dict] = {}
        fixtures = load_fixtures(directory, today) if directory.is_dir() else []
        for fixture in fixtures:
            for resource in fixture.resources():
                ref = (resource["resourceType"], str(resource.get("id")))
                if ref in self.by_ref:
                    # by its type alone: its id may be a patient's
                    log.warning("fixture %s repeats a %s: the first one is read", fixture.name, ref[0])
                else:
                    self.by_ref[ref] = resource
                self.resources.append(resource)
        self.types = sorted({r["resourceType"] for r in self.resources} | set(SEARCHED_TYPES))
        log.info("fixture FHIR endpoint: %d fixtures, %d resources from %s", len(fixtures), len(self.resources),
                 directory)


class FixtureServer:
    """Holds the store for the current day; reloads it (once) when the day changes."""

    def __init__(self, directory: Path, today: Callable[[], dt.date] = dt.date.today):
        self.directory, self.today = directory, today
        self._lock = threading.Lock()
        self._store = FixtureStore(directory, today())

    def store(self) -> FixtureStore:
        today = self.today()
        if self._store.today != today:
            with self._lock:
                if self._store.today != today:
                    self._store = FixtureStore(self.directory, today)
        return self._store


def init_app(app: Flask, directory: Path) -> None:
    """Load the fixtures (a broken fixture file fails here, at start-up) and mount /fhir."""
    app.extensions["fixture_fhir"] = FixtureServer(directory)
    app.url_map.converters.update(CONVERTERS)     # before the rules that name them
    app.register_blueprint(bp)
    app.register_error_handler(MethodNotAllowed, method_not_allowed)


def _store() -> FixtureStore:
    return current_app.extensions["fixture_fhir"].store()


def _base() -> str:
    public = current_app.extensions["avh"].settings.public_url.rstrip("/")
    return (public or request.host_url.rstrip("/")) + bp.url_prefix


def _fhir(body: dict, status: int = 200, headers: dict | None = None):
    return current_app.response_class(json.dumps(body), status=status, mimetype=None, content_type=FHIR_JSON,
                                      headers=headers)


def read_only():
    """405: this server changes nothing. Allow (which HTTP requires of a 405) names what the URL answers."""
    return _fhir({"resourceType": "OperationOutcome", "issue": [{
        "severity": "error", "code": "not-supported",
        "diagnostics": "this FHIR endpoint is read-only (GET read and search, POST [type]/_search)"}]}, 405,
        {"Allow": ", ".join(answered(request.path))})


def answered(path: str) -> list[str]:
    """The methods `path` answers, not to refuse them: GET, HEAD and OPTIONS (a read, a search, or a 404 or 308 of
    the catch-all), and POST where it is a type's _search. The catch-all takes POST, PUT, PATCH and DELETE only to
    refuse them, which werkzeug's list of a URL's methods cannot tell."""
    adapter = current_app.create_url_adapter(request)
    try:
        endpoint, _ = adapter.match(path, method="POST")
    except HTTPException:
        endpoint = None
    return ["GET", "HEAD", "OPTIONS", *(["POST"] if endpoint == f"{bp.name}.{search_post.__name__}" else [])]


@bp.after_request
def options_allow(response):
    """OPTIONS answered by Flask (a CORS preflight, a probe): its Allow named every method of every rule the URL
    matches, the catch-all's too; now what the URL answers, as its 405 names it."""
    if request.method == "OPTIONS" and "Allow" in response.headers:
        response.headers["Allow"] = ", ".join(answered(request.path))
    return response


def method_not_allowed(exc: MethodNotAllowed):
    """A method no route takes (TRACE, PROPFIND): under /fhir the read-only 405, elsewhere the app's."""
    if request.path == bp.url_prefix or request.path.startswith(bp.url_prefix + "/"):
        return read_only()
    return http_error(exc)


def outcome(status: int, code: str, text: str):
    return _fhir({"resourceType": "OperationOutcome",
                  "issue": [{"severity": "error", "code": code, "diagnostics": text}]}, status)


# POST (a batch or transaction), PUT, PATCH, DELETE: refused as FHIR refuses, here (werkzeug sent them to /fhir/ as a
# 404 naming /fhir, which refused them in turn).
@bp.route("", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
def base():
    """The server's base URL, opened by a person (the sandbox link names it as fhirServiceUrl): what this server is
    and where its CapabilityStatement is, as an informational OperationOutcome. With parameters it would be a
    system-level search, which this server does not do (its CapabilityStatement lists type-level search only)."""
    if request.method not in ("GET", "HEAD"):
        return read_only()
    if request.args:
        return outcome(400, "not-supported", "system-level search is not supported: search one resource type, "
                                             "e.g. /fhir/Condition?patient=<patient id>")
    here = _base()
    return _fhir({"resourceType": "OperationOutcome", "issue": [{
        "severity": "information", "code": "informational",
        "diagnostics": f"avh-cds fixture FHIR endpoint: a read-only FHIR R4 server over avh-cds's test patients. "
                       f"Its CapabilityStatement: {here}/metadata; the patients: {here}/Patient; a search of one "
                       f"type: {here}/Condition?patient=<patient id>"}]},
                 headers={"Link": f'<{here}/metadata>; rel="service-desc"'})


@bp.get("/metadata")
def metadata():
    store = _store()
    paging = [{"name": "_count", "type": "number"}]
    by_id = [{"name": "_id", "type": "token"}]
    clinical = by_id + [{"name": "patient", "type": "reference"}, {"name": "subject", "type": "reference"},
                        {"name": "code", "type": "token"}]
    return _fhir({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "kind": "instance",
        "software": {"name": "avh-cds fixture FHIR endpoint"},
        "implementation": {"description": "Read-only FHIR R4 server over avh-cds's test patients", "url": _base()},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "rest": [{
            "mode": "server",
            "resource": [{
                "type": rtype,
                "interaction": [{"code": "read"}, {"code": "search-type"}],
                "searchParam": (by_id if rtype == "Patient" else clinical) + paging,
            } for rtype in store.types],
        }],
    })


@bp.get("/<fhir_type:rtype>/<rid>")
def read(rtype: str, rid: str):
    if not known_type(rtype):
        return outcome(404, "not-supported", f"{rtype} is not a FHIR R4 resource type")
    resource = _store().by_ref.get((rtype, rid))
    if resource is None:
        return outcome(404, "not-found", f"{rtype}/{rid} is not known to this server")
    return _fhir(resource)


@bp.get("/<fhir_type:rtype>")
def search_get(rtype: str):
    if not_utf8_decoded(request.query_string):
        return outcome(400, "invalid", NOT_UTF8_DECODED)
    return _search(rtype, request.args.items(multi=True))


# werkzeug reads a percent-escape that is not UTF-8 (`patient=%ff`) as its escaped text (`%FF`): the search looked for
# that, and answered an empty Bundle, as if the parameter had been read.
NOT_UTF8_DECODED = "the search parameters are not UTF-8 once percent-decoded (a %-escape such as %ff)"


def not_utf8_decoded(encoded: bytes) -> bool:
    """Whether form-encoded parameters (a query string, a posted form: `name=value&...`, '+' a space) hold a
    percent-escaped byte sequence that is not UTF-8."""
    try:
        for part in re.split(rb"[&=]", encoded):
            unquote_to_bytes(part.replace(b"+", b" ")).decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


@bp.post("/<fhir_type:rtype>/_search")
def search_post(rtype: str):
    """As the public sandbox does: form-encoded parameters in the body (and possibly in the URL too). A body of
    another type, or not UTF-8, is refused: werkzeug reads no form from it, and the search would have answered
    every resource of the type, as if unfiltered."""
    body = request.get_data(cache=True)
    if body and request.mimetype != FORM:
        return outcome(415, "not-supported", f"a search's parameters are posted form-encoded ({FORM}), not as "
                                             f"{request.mimetype[:60] or 'a body of no Content-Type'}")
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return outcome(400, "invalid", "the posted search parameters are not UTF-8")
    if not_utf8_decoded(body) or not_utf8_decoded(request.query_string):
        return outcome(400, "invalid", NOT_UTF8_DECODED)
    return _search(rtype, [*request.args.items(multi=True), *request.form.items(multi=True)])


@bp.route("/", defaults={"rest": ""}, methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
@bp.route("/<fhir_path:rest>", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
def unsupported(rest: str):
    """What no other route of /fhir answers. A URL with a trailing slash is answered as the app's are
    (service/errors.py, not_found): a GET redirected to the route without it; a POST (`/fhir/Patient/_search/`) a 404
    naming that URL, not a redirect that would have the client send its search again; else (`POST /fhir/` too: the
    base refuses a POST) the read-only 405. Every path under /fhir takes this route's methods (the base's or this
    catch-all's), so the URL without its slash never refuses one: match_without_slash has no 405 to give here."""
    if request.method not in ("GET", "HEAD"):
        bare, _ = match_without_slash(request.method)
        return read_only() if bare in (None, bp.url_prefix) else outcome(404, "not-found", no_slash(bare))
    bare, _ = match_without_slash("GET")
    if bare is not None:     # /fhir/metadata/, /fhir/Patient/avh-01/: as the pages are
        target = slash_target()
        return _fhir({"resourceType": "OperationOutcome", "issue": [{
            "severity": "information", "code": "informational",
            "diagnostics": f"this URL has no trailing slash: {target}"}]}, 308, {"Location": target})
    return outcome(404, "not-found", f"nothing at /fhir/{rest}: try /fhir/metadata")


def _search(rtype: str, params):
    if not known_type(rtype):
        return outcome(404, "not-supported", f"{rtype} is not a FHIR R4 resource type")
    try:
        search = parse_search(rtype, list(params))
    except SearchError as exc:
        return outcome(400, "not-supported", str(exc))
    matched = search.select(_store().resources)
    page = search.page(matched)
    base = _base()
    links = [{"relation": "self",
              "url": f"{base}/{rtype}?{urlencode(search.params(_count=search.count, _offset=search.offset))}"}]
    following = search.offset + search.count
    if search.count and following < len(matched):
        links.append({"relation": "next",
                      "url": f"{base}/{rtype}?{urlencode(search.params(_count=search.count, _offset=following))}"})
    return _fhir({
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "meta": {"lastUpdated": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")},
        "type": "searchset",
        "total": len(matched),
        "link": links,
        "entry": [{"fullUrl": f"{base}/{r['resourceType']}/{r.get('id')}", "resource": r,
                   "search": {"mode": "match"}} for r in page]
        + [{"fullUrl": f"{base}/Medication/{r.get('id')}", "resource": r, "search": {"mode": "include"}}
           for r in search.included(page, _store().resources)],
    })
