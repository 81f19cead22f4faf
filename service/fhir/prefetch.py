"""Prefetch: use what the client sent, fetch what is missing, fail per key.

For each prefetch key of a service:
- sent as a resource or Bundle: used as is (a searchset's `next` pages are read from fhirServer);
- sent as null: the client looked and there is no data;
- sent as an OperationOutcome (alone or inside a Bundle): the client tried and failed;
- absent: fetched from fhirServer, the template's tokens filled from the context.
Fetches of different keys run concurrently over one pooled Session, on a thread pool per fhirServer (so
a slow server fills its own pool, never another server's), each request with a timeout and all of them
within one overall budget: a fetch reads its answer a piece at a time, its socket's timeout shrinking with
what is left of the budget, and when the budget ends the call cuts the socket of every fetch still under way
(headers included), so each gives its thread back then. A key that cannot be had, or only
in part, is unavailable: its resource type goes into Prefetched.unavailable (so no card concludes
anything from its absence), and when that type decides whether the patient is in scope at all
(Condition) the call fails with PrefetchFailed (412); an unavailable Patient only makes the age unknown.

Server-side request forgery: whether a caller may name its fhirServer is decided before the route
(the security layer's issuer allowlist); after that, every URL contacted goes through
`PrefetchResolver._get`, the one place that contacts anything, and only URLs under that fhirServer
(same scheme, host, port and base path) are contacted; redirects are never followed.
"""
from __future__ import annotations

import functools
import http.cookiejar
import logging
import posixpath
import re
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, NamedTuple
from urllib.parse import quote, unquote, urljoin, urlsplit

import orjson
import requests
import urllib3

from service.gcpause import collector_paused
from service.lazyjson import BYTE_ORDER_MARK, Entries, Reference, fhir_beyond_double
from service.httpread import OutOfTime, TooLarge, Watch, WatchedAdapter, read_capped
from service.ops import metrics
from service.fhir.types import known_type
from service.clinical.record import MEDICATION_TYPES, subject_id
from service.config import Settings
from service.errors import ApiError

log = logging.getLogger(__name__)
TOKEN = re.compile(r"\{\{\s*([A-Za-z.]+)\s*\}\}")
FHIR_JSON_TYPES = frozenset({"application/fhir+json", "application/json", "application/json+fhir"})
DEFAULT_PORTS = {"http": 80, "https": 443}
MEDIA_TYPE = re.compile(r"[a-z0-9.+-]+/[a-z0-9.+-]+")
# The data that decides whether a patient is in scope: without it the service answers 412. Any other type that
# cannot be had gives a partial answer (the Patient only gives the age: without it, the cards of an unknown age).
REQUIRED_TYPES = frozenset({"Condition"})


@dataclass(frozen=True)
class Problem:
    """Why a key could not be had: a sentence for the 412 body and the log, and an
    OperationOutcome issue type (http://hl7.org/fhir/issue-type). Never carries ids, URLs or tokens."""
    reason: str
    code: str = "exception"


class FetchProblem(Exception):
    def __init__(self, reason: str, code: str):
        super().__init__(reason)
        self.problem = Problem(reason, code)


class AuthorizationUnusable(ApiError):
    """fhirAuthorization cannot fetch what prefetch left out: a 400 naming the field, never its value, wherever the
    request is resolved (a hook call, POST .../explain). Checked only when something is to be fetched; with everything
    prefetched the token is never used, and never refused."""

    def __init__(self, problem: str):
        super().__init__(400, "invalid_request", f"not a CDS Hooks 2.0 request: {problem}")


# RFC 6750's b64token: what an Authorization: Bearer header can carry.
B64TOKEN = re.compile(r"[A-Za-z0-9._~+/-]+=*")      # fullmatch (Python's $ would match before a final newline)


def bearer_headers(request: Mapping[str, Any]) -> dict[str, str]:
    """The headers of a fetch for `request`: its fhirAuthorization as a Bearer credential when it sent one. Raises
    AuthorizationUnusable when that credential could not read this patient's record: not a b64token (it could not
    be sent: a line break, a space, a character beyond ASCII), expired when sent (expires_in 0 or less), or scoped
    to another patient than context.patientId (the server refuses it, or answers with another patient's data)."""
    headers = {"Accept": "application/fhir+json"}
    auth = request.get("fhirAuthorization")
    if not isinstance(auth, dict) or not auth.get("access_token"):
        return headers
    token = auth["access_token"]
    if not isinstance(token, str) or not B64TOKEN.fullmatch(token):
        raise AuthorizationUnusable("fhirAuthorization/access_token: must be RFC 6750's b64token (what an "
                                    "Authorization: Bearer header can carry) to fetch what prefetch left out from "
                                    "fhirServer; the value sent is not repeated, it may be a credential")
    expires_in = auth.get("expires_in")
    if isinstance(expires_in, int) and not isinstance(expires_in, bool) and expires_in <= 0:
        raise AuthorizationUnusable("fhirAuthorization/expires_in: 0 or less: the access token had expired when it "
                                    "was sent, and what prefetch left out must be fetched from fhirServer")
    patient, context = auth.get("patient"), request.get("context")
    if isinstance(patient, str) and isinstance(context, dict) and patient != context.get("patientId"):
        raise AuthorizationUnusable("fhirAuthorization/patient: the access token is scoped to another patient than "
                                    "context.patientId, so it cannot fetch this patient's data that prefetch left out")
    headers["Authorization"] = f"Bearer {token}"
    return headers


# A SMART on FHIR resource scope: v1 patient/Observation.read (or .write, .*), v2 patient/Observation.rs (c r u d s, in
# that order), either with * for every type; v2 may narrow it with a query (?category=...), which the server applies.
RESOURCE_SCOPE = re.compile(r"(?:patient|user|system)/([A-Za-z]+|\*)\.(read|write|\*|c?r?u?d?s?)(?:\?\S*)?")
SCOPE_CONTEXT = re.compile(r"(?:patient|user|system)/")


def readable_types(scope: Any) -> frozenset[str] | None:
    """The resource types (or '*') a fhirAuthorization.scope lets its token read or search; None when the scope names
    no resource, or one this does not read (then it judges nothing: the server decides)."""
    if not isinstance(scope, str):
        return None
    granted, named = set(), False
    for word in scope.split():
        match = RESOURCE_SCOPE.fullmatch(word)
        if match is None:
            if SCOPE_CONTEXT.match(word):
                return None
            continue                    # openid, fhirUser, launch, launch/patient, offline_access, ...
        named = True
        rtype, rights = match.groups()
        if rights in ("read", "*") or rights != "write" and ("r" in rights or "s" in rights):
            granted.add(rtype)
    return frozenset(granted) if named else None


def out_of_scope(request: Mapping[str, Any], rtype: str) -> Problem | None:
    """Why `request`'s access token may not fetch `rtype`, when its scope says so: never asked for, rather than
    asked and refused (403), or read where the token does not reach when the server does not check."""
    auth = request.get("fhirAuthorization")
    granted = readable_types(auth.get("scope")) if isinstance(auth, dict) and auth.get("access_token") else None
    if granted is None or "*" in granted or rtype in granted:
        return None
    return Problem(f"fhirAuthorization.scope grants no read of {rtype}, so it was not fetched", "forbidden")


class PrefetchFailed(Exception):
    """Data that decides scope could not be had: answered with 412 and an OperationOutcome."""

    def __init__(self, failures: list[tuple[str, Problem]]):
        super().__init__("; ".join(f"{key}: {p.reason}" for key, p in failures))
        self.failures = failures


@dataclass
class Prefetched:
    resources: list[dict] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)   # resource type -> why
    sources: dict[str, str] = field(default_factory=dict)       # key -> prefetch | fetched | null | unavailable
    read: int = 0                                               # resources sent or fetched, kept or not
    selected_by: Callable[[dict], bool] | None = None           # what chose `resources` (None: all were kept)


@dataclass(frozen=True)
class Plan:
    """How to get (the rest of) one key from fhirServer."""
    key: str
    resource_type: str
    url: str
    search: bool                     # a searchset Bundle is expected (else a single resource)
    patient_id: str | None           # the patient the query is about, when it names one
    seed: tuple[dict, ...] = ()      # resources already had (pages the client sent)
    pages: int = 0                   # pages already had
    matched: int = 0                 # search matches on those pages (to compare with the Bundle's total)


def fill_template(template: str, context: Mapping[str, Any]) -> str | None:
    """Replace {{context.x}} and the 2.0 user tokens (URL-quoted); None when a token has no value."""
    user = str(context.get("userId", ""))
    user_type, _, user_id = user.partition("/")
    values = {f"context.{k}": v for k, v in context.items() if isinstance(v, str)}
    for token in ("Practitioner", "PractitionerRole", "Patient", "RelatedPerson"):
        if user_type == token:
            values[f"user{token}Id"] = user_id
    missing = [m for m in TOKEN.findall(template) if m not in values]
    if missing:
        return None
    return TOKEN.sub(lambda m: quote(str(values[m.group(1)]), safe="/"), template)


def under_server(url: str, server: str) -> bool:
    """True when url is on fhirServer's origin and under its base path (no dot segments, no userinfo)."""
    try:
        target, base = urlsplit(url), urlsplit(server)
        target_port = target.port or DEFAULT_PORTS.get(target.scheme)
        base_port = base.port or DEFAULT_PORTS.get(base.scheme)
    except ValueError:
        return False
    if target.scheme not in DEFAULT_PORTS or target.username or target.password:
        return False
    if (target.scheme, (target.hostname or "").lower(), target_port) != \
            (base.scheme, (base.hostname or "").lower(), base_port):
        return False
    path = unquote(target.path)
    if any(part in {".", ".."} for part in path.split("/")):
        return False
    root = posixpath.normpath("/" + base.path.strip("/")) if base.path.strip("/") else ""
    return path == root or path.startswith(root + "/") or (not root and not path)


def _is_error(outcome: dict) -> bool:
    issues = outcome.get("issue")
    issues = [i for i in issues if isinstance(i, dict)] if isinstance(issues, list) else []   # 1 or true: no issue
    # A tuple, not a set: a severity that is an array or object (invalid) is one that is not an error, not a TypeError.
    return not issues or any(i.get("severity") in ("error", "fatal") for i in issues)


# Decoded JSON is made of dicts and lists: isinstance(x, dict) is several times cheaper than a
# typing.Mapping check, and these run once per resource the EHR sent.

OUTCOME, OTHER_PATIENT, MALFORMED = "outcome", "other-patient", "malformed"
OUTCOME_FETCHED = "fhirServer answered with an OperationOutcome instead of data"
MALFORMED_BUNDLE = "{who} sent a Bundle whose entries are not FHIR entries (entry, or an entry's resource, of the wrong type)"


def resource_type_of(template: str) -> str:
    """'Condition?patient=...' or 'Patient/{{context.patientId}}' -> the resource type it returns."""
    return template.split("?", 1)[0].split("/", 1)[0]


@functools.lru_cache(maxsize=256)
def _template_shape(template: str) -> tuple[str, bool]:
    """A prefetch template's resource type, and whether it names the context's patient (then every resource
    must be about that patient). Templates come from the registry: a few, the same on every call."""
    return resource_type_of(template), "context.patientId" in TOKEN.findall(template)


class Read(NamedTuple):
    resources: list[dict]       # those `wanted` keeps
    read: int                   # how many resources it holds
    unusable: str | None        # OUTCOME, OTHER_PATIENT, MALFORMED or None
    matched: int                # of a searchset, its matches (not included resources): what its `total` counts


def read_resources(value: dict, patient_id: str | None, wanted: Callable[[dict], bool] | None = None,
                   passed_over: list | None = None) -> Read:
    """The resources a sent or fetched value holds that `wanted` keeps (all, without it), how many it holds,
    what makes them unusable: OUTCOME (it is an OperationOutcome, or a Bundle with an error
    OperationOutcome among its matches, not its includes), OTHER_PATIENT (with `patient_id`: some resource,
    wanted or not, is about, or is, another patient) or MALFORMED (a Bundle whose `entry` is not a list of
    entries, or an entry whose `resource` is not an object: read as empty, it would pass for "no data"),
    and how many of a Bundle's entries are search matches. One pass, the service's cost per resource sent
    (a second pass for the matches had cost a quarter as much again at 10,000 resources: each entry is a
    cache miss once the body outgrows the CPU's caches).

    `passed_over`, when given, gets the ids of the resources `wanted` does not keep: should one of them be another
    version of a resource kept, PrefetchResolver reads what was sent again (`_with_versions_passed_over`). Not
    given (a page fetched), they are gathered all the same, here alone, and dropped."""
    rtype = value.get("resourceType")
    if rtype == "OperationOutcome":
        return Read([], 0, OUTCOME, 0)
    passed_over = [] if passed_over is None else passed_over
    if rtype != "Bundle":
        if patient_id and not _about(value, patient_id):
            return Read([], 1, OTHER_PATIENT, 0)
        if wanted is None or wanted(value):
            return Read([_copied(value)], 1, None, 0)
        if type(value.get("id")) is str:
            passed_over.append(value["id"])
        return Read([], 1, None, 0)
    sent = value.get("entry") or []
    if isinstance(sent, Entries):           # a Bundle the client sent, decoded as this reads it (service/lazyjson.py)
        structs = sent.typed(wanted.concepts, wanted) if hasattr(wanted, "concepts") else None
        if structs is not None:
            return _read_structs(*structs, patient_id, wanted.__self__, passed_over)
        # What that decodes (~7 objects an entry) is freed when the walk ends: the collector has no cycle to look for
        # in it, and had walked it several times a call from ~1,000 entries a Bundle (8 collections at N = 10,000).
        with collector_paused():
            return _read_entries(*sent.read(READS | wanted.reads if hasattr(wanted, "reads") else None, wanted),
                                 patient_id, wanted, passed_over)
    if isinstance(sent, list):
        return _read_entries(sent, None, patient_id, wanted, passed_over)
    return Read([], 0, MALFORMED, 0)


def _read_entries(entries: list, whole: Callable[[list[int]], list[dict]] | None, patient_id: str | None,
                  wanted: Callable[[dict], bool] | None, passed_over: list) -> Read:
    """read_resources of a Bundle's entries; `whole` gives the resources of the entries kept when they are not."""
    own = "Patient/" + patient_id if patient_id else None
    kept, read, included, other_patient = [], 0, 0, False
    for position, entry in enumerate(entries):
        if not isinstance(entry, dict):
            return Read([], read, MALFORMED, 0)
        resource = entry.get("resource")
        if resource is None:            # an entry without a resource (FHIR allows it): nothing to read
            continue
        if not isinstance(resource, dict):
            return Read([], read, MALFORMED, 0)
        search = entry.get("search")
        include = isinstance(search, dict) and search.get("mode") == "include"
        if resource.get("resourceType") == "OperationOutcome":
            if not include and _is_error(resource):
                return Read([], read, OUTCOME, 0)    # before OTHER_PATIENT, wherever it stands in the Bundle
            continue
        read += 1
        included += include
        if own is not None and not other_patient:
            ref = resource.get("subject") or resource.get("patient")
            if not (isinstance(ref, dict) and ref.get("reference") == own):    # the usual case, without parsing
                other_patient = not _about(resource, patient_id)
        if wanted is None or wanted(resource):
            kept.append(position)
        elif type(rid := resource.get("id")) is str:
            passed_over.append(rid)
    if other_patient:
        return Read([], read, OTHER_PATIENT, 0)
    return Read(whole(kept) if whole else [entries[i]["resource"] for i in kept], read, None, read - included)


def _read_structs(entries: list, whole: Callable[[list[int]], list[dict]], patient_id: str | None,
                  selector: Any, passed_over: list) -> Read:
    """_read_entries of entries decoded as Structs of FHIR's shape (lazyjson._typed_reader: each entry and resource an
    object, so never MALFORMED), choosing by `selector` (record.Selector): the same verdicts, without a dict made. The
    resources the Structs do not tell (an OperationOutcome that is not an include: its `issue` is not in the Struct;
    a Patient: its `id`) are read whole after the walk, all in one `whole` (read one by one as met, each read walked
    the array from its start: 20,000 OperationOutcomes took 0.6 s)."""
    # Per resource sent, so lean: `read` is worked out from the entries passed over (without a resource, or an
    # OperationOutcome), and the patient check is one state: the reference a resource about the patient carries,
    # checked until a resource about another patient is met, then None (nothing more to check: OTHER_PATIENT).
    patient_reference = "Patient/" + patient_id if patient_id else None
    codes_at, code_values, wanted = selector.codes_at, selector.code_values, selector.wanted_struct
    kept, passed, included, outcomes, unread = [], 0, 0, [], []
    for position, entry in enumerate(entries):
        resource = entry.resource
        if resource is None:
            passed += 1
            continue
        search = entry.search
        rtype = resource.resourceType
        if rtype == "OperationOutcome":
            if search is None or search.mode != "include":
                outcomes.append((position, position - passed))      # and the resources read before it
            passed += 1
            continue
        if search is not None and search.mode == "include":
            included += 1
        # The usual case, without parsing: only a Reference Struct (an object, so a dict `or` would pick too) has one.
        if patient_reference is not None and (type(ref := resource.subject or resource.patient) is not Reference
                                              or ref.reference != patient_reference):
            about = _struct_about(resource, patient_id)
            if about is None:
                unread.append(position)
            elif not about:
                patient_reference = None
        # wanted_struct's usual verdicts, without the call (~0.5 k instructions a resource): a coding in one of the
        # value sets its type is read for keeps it; none, of a type that is no medication (whose names or reference
        # may still choose it), passes it over. Any other resource (no concept or codings, a Patient, a type not
        # read, a medication not chosen by its code) is asked of wanted_struct.
        chosen = None
        if (read := codes_at.get(rtype)) is not None and (concept := resource.concept) is not None \
                and (coding := concept.coding) is not None:
            codes = read[1]
            for c in coding:
                if c.code in code_values and (c.system, c.code) in codes:
                    chosen = True
                    break
            else:
                if rtype not in MEDICATION_TYPES:
                    chosen = False
        if chosen or chosen is None and wanted(resource):
            kept.append(position)
        else:
            passed_over.append(resource.id)     # a scalar (lazyjson._typed_reader): hashable
    other_patient = bool(patient_id) and patient_reference is None
    if outcomes or unread and not other_patient:
        positions = sorted([position for position, _ in outcomes] + unread)
        read_whole = dict(zip(positions, whole(positions)))
        for position, read_before in outcomes:      # before OTHER_PATIENT, wherever it stands in the Bundle
            if _is_error(read_whole[position]):
                return Read([], read_before, OUTCOME, 0)
        other_patient = other_patient or not all(_about(read_whole[position], patient_id) for position in unread)
    read = len(entries) - passed
    if other_patient:
        return Read([], read, OTHER_PATIENT, 0)
    return Read(whole(kept), read, None, read - included)


def _struct_about(resource: Any, patient_id: str) -> bool | None:
    """_about of a resource decoded as a Struct; None when only the resource read whole tells: a Patient (its `id` is
    not in the Struct), or a resource whose subject or patient, lazyjson.Reference Structs when objects, do not tell
    an empty object (which `subject or patient` passes over) from one without a reference, when that would change
    the verdict."""
    if resource.resourceType == "Patient":
        return None
    about = _about(_identity(resource, resource.subject), patient_id)
    if getattr(resource.subject, "reference", 0) is None and about != _about(_identity(resource, None), patient_id):
        return None
    return about


def _identity(resource: Any, subject: Any) -> dict:
    """What _about reads of a Struct resource that is not a Patient, with this subject, as a dict."""
    return {"resourceType": resource.resourceType, "subject": _reference_dict(subject),
            "patient": _reference_dict(resource.patient)}


def _reference_dict(value: Any) -> Any:
    """A Reference Struct as a dict of its reference (an object with a key, so never empty); another value as it is."""
    return {"reference": value.reference} if hasattr(value, "reference") else value


# What read_resources and _about read of a resource: with what `wanted` reads (its `reads`), all that is decoded of
# a resource the client sent until it is kept (service/lazyjson.py).
READS = frozenset({"resourceType", "id", "subject", "patient", "issue"})


def _copied(resource: dict) -> dict:
    """A resource sent alone, copied; one marked by the decode (lazyjson.BeyondDouble) keeps its mark."""
    return dict(resource) if type(resource) is dict else resource


def _type_and_id(resource: dict) -> tuple[str, str] | None:
    """(type, id) of a resource whose type and id are strings (else None): what its versions share."""
    rtype, rid = resource.get("resourceType"), resource.get("id")
    return (rtype, rid) if type(rtype) is str and type(rid) is str else None


def _sent_whole(value: dict) -> list[dict]:
    """The resources a value the client sent holds, as orjson decodes them, in the order sent (a value read_resources
    found usable: an entry holds an object or nothing)."""
    if value.get("resourceType") != "Bundle":
        return [_copied(value)]
    entries = value.get("entry") or []
    if isinstance(entries, Entries):
        entries = entries.source.whole_entries(entries.key)
    return [entry["resource"] for entry in entries if entry.get("resource") is not None]


def _about(resource: dict, patient_id: str) -> bool:
    """Whether a resource is about (or is) this patient, or about no patient at all."""
    if resource.get("resourceType") == "Patient":
        return resource.get("id") == patient_id
    return subject_id(resource) in (None, patient_id)


def next_link(bundle: Mapping, page_url: str | None) -> str | None:
    """The Bundle's `next` link, made absolute against the page it came from."""
    links = bundle.get("link")
    for link in links if isinstance(links, list) else []:
        if isinstance(link, dict) and link.get("relation") == "next" and isinstance(link.get("url"), str):
            return urljoin(page_url, link["url"]) if page_url else link["url"]
    return None


def cut_short(bundle: Mapping, matched: int) -> bool:
    """A search answer with no `next` link whose `total` says there are more matches than were read: a page
    cut silently (a server's cap, a proxy); what it holds is not all there is."""
    total = bundle.get("total")
    return isinstance(total, int) and not isinstance(total, bool) and total > matched


CUT_SHORT = Problem("the client sent fewer entries than its search's total, and no next link to the rest",
                    "incomplete")


def _check_fhir(body: Any, plan: Plan) -> Mapping:
    if not isinstance(body, dict) or not isinstance(body.get("resourceType"), str):
        raise FetchProblem("fhirServer answered with JSON that is not a FHIR resource", "invalid")
    if body["resourceType"] == "OperationOutcome":
        raise FetchProblem(OUTCOME_FETCHED, "exception")
    expected = "Bundle" if plan.search else plan.resource_type
    got = body["resourceType"]
    if got != expected:
        got = got if known_type(got) else "resource of another kind"   # server text stays out of reasons
        raise FetchProblem(f"fhirServer answered with a {got}, not a {expected}", "invalid")
    return body


def _status_problem(status: int) -> FetchProblem:
    if 300 <= status < 400:
        return FetchProblem(f"fhirServer answered with a redirect ({status}), which is never followed", "exception")
    if status in (401, 403):
        return FetchProblem(f"fhirServer refused access ({status}): the access token is missing, expired or "
                            "lacks the scope", "login" if status == 401 else "forbidden")
    if status == 404:
        return FetchProblem("fhirServer answered not found (404)", "not-found")
    if status == 429:
        return FetchProblem("fhirServer is rate-limiting (429)", "throttled")
    if status >= 500:
        return FetchProblem(f"fhirServer failed ({status})", "transient")
    return FetchProblem(f"fhirServer rejected the query ({status})", "not-supported")


def _session(workers: int) -> requests.Session:
    session = requests.Session()
    session.trust_env = False   # no proxies or .netrc credentials from the environment
    session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))   # no cookies across calls
    adapter = WatchedAdapter(pool_connections=4, pool_maxsize=workers, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


@functools.lru_cache(maxsize=256)
def _origin(server: str) -> tuple:
    """What a fetch pool is kept by: fhirServer's scheme, host and port."""
    try:
        parts = urlsplit(server)
        return parts.scheme.lower(), (parts.hostname or "").lower(), parts.port or DEFAULT_PORTS.get(parts.scheme)
    except ValueError:
        return ("", server[:200], None)


class FetchPools:
    """A bounded thread pool per fhirServer origin, made when first needed; the `most` most recently used are
    kept. A server that answers slowly can hold only its own pool's threads (each until its call's budget ends),
    so the calls naming another server fetch at once."""
    MOST = 32

    def __init__(self, workers: int):
        self.workers = workers
        self._pools: OrderedDict[tuple, ThreadPoolExecutor] = OrderedDict()
        self._lock = threading.Lock()

    def submit(self, server: str, work: Callable, *args) -> Future:
        """Run work(*args) on server's pool. Under the lock, so that no pool is let go of between being found and
        being given the work."""
        origin = _origin(server)
        with self._lock:
            pool = self._pools.get(origin)
            if pool is None:
                pool = self._pools[origin] = ThreadPoolExecutor(max_workers=self.workers,
                                                                thread_name_prefix="avh-fetch")
                if len(self._pools) > self.MOST:      # what it runs still ends within its calls' budgets
                    self._pools.popitem(last=False)[1].shutdown(wait=False)
            else:
                self._pools.move_to_end(origin)
            return pool.submit(work, *args)


class Allowance:
    """The resources a call may still read from fhirServer, over all its keys (fetched on threads of their own): what
    AVH_CDS_MAX_PREFETCH_RESOURCES leaves after the resources the client sent."""

    def __init__(self, left: int):
        self.left = left
        self._lock = threading.Lock()

    def take(self, count: int) -> bool:
        """Count `count` more resources read; False once the call has read more than it may."""
        with self._lock:
            self.left -= count
            return self.left >= 0


class PrefetchResolver:
    """`wanted`: which resources to keep (the services' selector); the others are read for their patient only."""

    def __init__(self, session: requests.Session | None = None, *, timeout: float = 2.0, budget: float = 1.5,
                 page_cap: int = 10, workers: int = 8, max_bytes: int = 10 * 1024 * 1024,
                 max_resources: int = 20000, wanted: Callable[[dict], bool] | None = None):
        self.wanted = wanted
        self.session = session or _session(workers)
        self.pools = FetchPools(workers)
        self.timeout, self.budget, self.page_cap, self.max_bytes = timeout, budget, page_cap, max_bytes
        # Most resources read in one call: a sent prefetch is held to AVH_CDS_MAX_PREFETCH_RESOURCES (413), and what is
        # fetched too, over every key, else only keys x pages x bytes bound it (7 keys of 10 pages of 10 MB each).
        self.max_resources = max_resources

    @classmethod
    def from_settings(cls, settings: Settings, session: requests.Session | None = None,
                      wanted: Callable[[dict], bool] | None = None) -> "PrefetchResolver":
        return cls(session, timeout=settings.fetch_timeout_seconds, budget=settings.fetch_budget_seconds,
                   page_cap=settings.fetch_page_cap, workers=settings.fetch_workers,
                   max_bytes=settings.fetch_max_bytes, max_resources=settings.max_prefetch_resources, wanted=wanted)

    def resolve(self, templates: Mapping[str, str], request: Mapping[str, Any]) -> Prefetched:
        deadline = time.monotonic() + self.budget
        sent = request.get("prefetch") or {}
        context = request.get("context") or {}
        server = request.get("fhirServer")
        result, failures, plans = Prefetched(selected_by=self.wanted), [], []
        passed_over, used, fetched = [], [], []         # ids of sent resources not kept; sent values read; fetched
        for key, template in templates.items():
            rtype, patient_scoped = _template_shape(template)
            patient_id = context.get("patientId") if patient_scoped else None
            if key in sent:
                plan, problem = self._use_sent(key, rtype, sent[key], patient_id, result, self.wanted, passed_over)
                if problem is CUT_SHORT and server:     # all of it, from the server instead
                    plan, problem = self._plan(key, rtype, template, context, patient_id, server)
                elif problem is None and sent[key] is not None:
                    used.append(sent[key])
            else:
                plan, problem = self._plan(key, rtype, template, context, patient_id, server)
            if problem is not None:
                self._fail(result, failures, key, rtype, problem)
            elif plan is not None:
                plans.append(plan)
        if not server:
            for plan in plans:
                result.resources += plan.seed
                self._fail(result, failures, plan.key, plan.resource_type, self._unreachable(plan))
            plans = []
        for plan in list(plans):
            problem = out_of_scope(request, plan.resource_type)
            if problem is not None:
                plans.remove(plan)
                result.resources += plan.seed
                self._fail(result, failures, plan.key, plan.resource_type, problem)
        headers = bearer_headers(request) if plans else {}     # judged only when it is used (review13)
        allowance = Allowance(self.max_resources - result.read)
        for plan, resources, read, problem in self._run(plans, server, headers, deadline, allowance):
            result.resources += resources
            fetched += resources[len(plan.seed):]
            result.read += read
            if problem is None:
                result.sources.setdefault(plan.key, "fetched")
            else:
                self._fail(result, failures, plan.key, plan.resource_type, problem)
        if failures:
            raise PrefetchFailed(failures)
        # A list appended to as the selection passes a resource over, looked up in C once here: cheaper than a set
        # added to a resource at a time; gathering every resource's id by operator.attrgetter after the walk cost
        # more (docs/data-access.md).
        if passed_over and not {rid for r in result.resources if type(rid := r.get("id")) is str}.isdisjoint(
                passed_over):
            self._with_versions_passed_over(result, used, fetched)
        return result

    def _with_versions_passed_over(self, result: Prefetched, used: list[dict], fetched: list[dict]) -> None:
        """A resource not kept has the id of one kept: perhaps a later version of it recoded out of the value sets,
        which takes it off record (record.build_record's later_version), so what the client sent is read again,
        whole: of it, in the order sent, every resource `wanted` keeps and every one of the type and id of a resource
        kept; then what was fetched. build_record chooses among them (`selected_by` None: not all are wanted).
        Only here, when an id is shared, does that cost anything: the ids of the resources passed over are all the
        selection remembers (a fhirServer's search answers with current versions, so a fetched page is not read
        again)."""
        kept = {_type_and_id(r) for r in result.resources} - {None}
        sent = [resource for value in used for resource in _sent_whole(value)]
        result.resources = [r for r in sent if self.wanted(r) or _type_and_id(r) in kept] + fetched
        result.selected_by = None

    @staticmethod
    def _unreachable(plan: Plan) -> Problem:
        if plan.pages:
            return Problem("the client sent only the first page and there is no fhirServer to read the rest "
                           "from", "incomplete")
        return Problem("not prefetched and no fhirServer to fetch it from", "not-found")

    @staticmethod
    def _use_sent(key: str, rtype: str, value: Any, patient_id: str | None, result: Prefetched,
                  wanted: Callable[[dict], bool] | None, passed_over: list) -> tuple[Plan | None, Problem | None]:
        if value is None:
            result.sources[key] = "null"
            return None, None
        if not isinstance(value, dict) or not isinstance(value.get("resourceType"), str):
            return None, Problem("the client sent something that is not a FHIR resource", "invalid")
        resources, read, unusable, matched = read_resources(value, patient_id, wanted, passed_over)
        result.read += read
        if unusable == OUTCOME:
            return None, Problem("the client could not prefetch it (OperationOutcome)", "exception")
        if unusable == OTHER_PATIENT:
            return None, Problem("the client sent another patient's resources", "invalid")
        if unusable == MALFORMED:
            return None, Problem(MALFORMED_BUNDLE.format(who="the client"), "invalid")
        bundle = value.get("resourceType") == "Bundle"
        more = next_link(value, None) if bundle else None
        if more is None and bundle and "total" in value and cut_short(value, matched):
            return None, CUT_SHORT
        result.sources[key] = "prefetch"
        if more is None:
            result.resources += resources
            return None, None
        return Plan(key, rtype, more, True, patient_id, tuple(resources), pages=1, matched=matched), None

    @staticmethod
    def _plan(key: str, rtype: str, template: str, context: Mapping, patient_id: str | None,
              server: str | None) -> tuple[Plan | None, Problem | None]:
        query = fill_template(template, context)
        if query is None:
            return None, Problem("its query needs a context value the request did not carry", "required")
        url = (server or "").rstrip("/") + "/" + query
        return Plan(key, rtype, url, "?" in query, patient_id), None

    @staticmethod
    def _fail(result: Prefetched, failures: list, key: str, rtype: str, problem: Problem) -> None:
        log.warning("prefetch key %s unavailable: %s", key, problem.reason)
        metrics.observe_prefetch_failure(key)
        result.sources[key] = "unavailable"
        if rtype in REQUIRED_TYPES:
            failures.append((key, problem))
        else:
            result.unavailable.setdefault(rtype, problem.reason)

    def _run(self, plans: list[Plan], server: str, headers: dict, deadline: float, allowance: Allowance):
        """Run every plan concurrently against `server` with `headers`, reading at most what `allowance` allows; yield
        (plan, resources, resources read, problem) once all end or the budget does."""
        if not plans:
            return
        watches = [Watch() for _ in plans]
        futures = {self.pools.submit(server, self._fetch_key, plan, server, headers, deadline, watch,
                                      allowance): (plan, watch)
                   for plan, watch in zip(plans, watches)}
        wait(futures, timeout=max(0.0, deadline - time.monotonic()))
        for future, (plan, watch) in futures.items():
            if not future.done():
                future.cancel()   # not started yet; or under way: its socket is cut, wherever the read is blocked
                watch.cut()
                yield plan, list(plan.seed), 0, self._over_budget().problem
                continue
            try:
                yield plan, *future.result()
            except Exception:   # a bug must not turn into a 500 or a card: the key is unavailable
                log.exception("prefetch key %s: unexpected error while fetching", plan.key)
                yield plan, list(plan.seed), 0, Problem("fetching it failed unexpectedly", "exception")

    def _fetch_key(self, plan: Plan, server: str, headers: dict, deadline: float, watch: Watch | None = None,
                   allowance: Allowance | None = None) -> tuple[list, int, Problem | None]:
        """Read one key, page after page; what was read stays even when a later page fails."""
        started = time.monotonic()
        resources, read, pages, url, seen = list(plan.seed), 0, plan.pages, plan.url, set()
        problem, matched, totals = None, plan.matched, []
        allowance = allowance or Allowance(self.max_resources)
        try:
            while url is not None:
                if url in seen:
                    raise FetchProblem("fhirServer's next links loop back to a page already read", "incomplete")
                if pages >= self.page_cap:
                    raise FetchProblem(f"more than {self.page_cap} pages of results (AVH_CDS_FETCH_PAGE_CAP)",
                                       "too-costly")
                seen.add(url)
                body = _check_fhir(self._get(url, server, headers, deadline, watch or Watch()), plan)
                pages += 1
                page, page_read, unusable, page_matched = read_resources(body, plan.patient_id, self.wanted)
                read += page_read
                if not allowance.take(page_read):
                    raise FetchProblem(f"the call's resources, sent and fetched, came to more than {self.max_resources} "
                                       "(AVH_CDS_MAX_PREFETCH_RESOURCES)", "too-costly")
                if unusable == OUTCOME:
                    raise FetchProblem(OUTCOME_FETCHED, "exception")
                if unusable == OTHER_PATIENT:
                    raise FetchProblem("fhirServer answered with another patient's resources", "invalid")
                if unusable == MALFORMED:
                    raise FetchProblem(MALFORMED_BUNDLE.format(who="fhirServer"), "invalid")
                resources += page
                url = next_link(body, url) if plan.search else None
                if plan.search:
                    matched += page_matched
                    totals.append(body)
            if totals and any(cut_short(page, matched) for page in totals):
                raise FetchProblem("fhirServer's search answer holds fewer entries than its total, and no next "
                                   "link to the rest", "incomplete")
        except FetchProblem as exc:
            problem = exc.problem
        metrics.observe_prefetch_fetch(plan.key, time.monotonic() - started)
        log.debug("prefetch key=%s pages=%d resources=%d kept=%d ms=%.0f%s", plan.key, pages, read, len(resources),
                  (time.monotonic() - started) * 1000, " failed" if problem else "")
        return resources, read, problem

    def _get(self, url: str, server: str, headers: dict, deadline: float, watch: Watch) -> Any:
        """The one place a URL is contacted: only under fhirServer, never following redirects."""
        if not under_server(url, server):
            raise FetchProblem("a link points outside fhirServer and was not followed", "forbidden")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise self._over_budget()
        timeout = min(self.timeout, remaining)
        try:
            with watch, self.session.get(url, headers=headers, timeout=(timeout, timeout), allow_redirects=False,
                                         stream=True) as response:
                try:
                    if not 200 <= response.status_code < 300:
                        raise _status_problem(response.status_code)
                    media = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
                    if media and media not in FHIR_JSON_TYPES:
                        shown = media[:40] if MEDIA_TYPE.fullmatch(media) else "another media type"
                        raise FetchProblem(f"fhirServer answered with {shown}, not FHIR JSON", "invalid")
                    raw = read_capped(response, self.max_bytes, deadline, self.timeout)
                finally:
                    watch.detach()          # before the connection goes back to the pool
        except TooLarge:
            raise FetchProblem(f"fhirServer's answer is larger than {self.max_bytes} bytes (AVH_CDS_FETCH_MAX_BYTES)",
                               "too-costly") from None
        except OutOfTime:
            raise self._over_budget() from None
        except (requests.Timeout, urllib3.exceptions.ReadTimeoutError):
            if timeout < self.timeout or time.monotonic() >= deadline - 0.01:   # the budget ran out, not the timeout
                raise self._over_budget() from None
            raise FetchProblem(f"fhirServer did not answer within {timeout:g} s", "timeout") from None
        except (requests.exceptions.ChunkedEncodingError, urllib3.exceptions.ProtocolError):
            raise FetchProblem("fhirServer's answer broke off before its end", "incomplete") from None
        except requests.ConnectionError:
            if time.monotonic() >= deadline:
                raise self._over_budget() from None
            raise FetchProblem("fhirServer could not be reached", "transient") from None
        except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
            raise FetchProblem(f"the request to fhirServer failed ({type(exc).__name__})", "exception") from None
        raw = raw[len(BYTE_ORDER_MARK):] if raw.startswith(BYTE_ORDER_MARK) else raw
        try:    # read as a request body is (orjson), but for a leading byte order mark: RFC 8259 lets it be ignored
            try:
                return orjson.loads(raw)
            except orjson.JSONDecodeError as refusal:   # a number beyond a double: its resources are left out
                return fhir_beyond_double(raw, refusal)
        except (ValueError, RecursionError):
            raise FetchProblem("fhirServer answered with invalid or truncated JSON", "invalid") from None

    def _over_budget(self) -> FetchProblem:
        return FetchProblem(f"no complete answer within the fetch budget ({self.budget:g} s)", "timeout")
