"""Order-time and discharge safety (pathway.md section 5): draft orders + Facts -> Decisions. Pure.

Draft orders arrive in the hook's context (`draftOrders`), not from the record, and may be
incomplete or odd (they are drafts): they are read as plain dicts, defensively, and only the
ServiceRequests and MedicationRequests whose codes belong to the pathway's value sets are kept.
Drafts are never "on record": the caller leaves them out of the record the Facts come from.
"""
from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import functools
import math
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Callable, Iterable, Mapping

from service.clinical.valuesets import Code, ValueSets
from service.clinical.facts import (MILLIGRAMS_IN, MODERATE_DAILY_DOSE_MG, STEROID_COURSE_DAYS, LATEST, UTC,
                                    DraftEvidence, Evidence, Facts, course_dose, instant, line_daily_mg, midnight_utc,
                                    names_dexamethasone, order_date, shift)
from service.clinical.pathway import (Decision, Fire, TopicOutcome, Unchecked, narrowed, patient_flags,
                                      scope_unchecked, topic_outcomes)
from service.clinical.markdown import literal
from service.clinical.record import named_resource, subject_id

# The value sets a draft of each type is read for (section 5): a ServiceRequest is a surgery, instrumentation or
# embolization order; a MedicationRequest is read for its drug (dexamethasone) only, whatever else it is coded with.
SERVICE_CONCEPTS = ("decompression-surgery", "posterior-stabilization", "embolization")
# Drafts in these states are withdrawn, not about to be signed.
WITHDRAWN = frozenset({"revoked", "cancelled", "entered-in-error", "stopped", "completed"})
UCUM = "http://unitsofmeasure.org"
# UCUM codes (or the `unit` text) -> days: a month is 30 days (pathway.md section 5), a year 365 (our convention).
DAYS_PER_UNIT = {"d": 1.0, "day": 1.0, "days": 1.0, "wk": 7.0, "week": 7.0, "weeks": 7.0,
                 "mo": 30.0, "month": 30.0, "months": 30.0, "a": 365.0, "year": 365.0, "years": 365.0}
# 0001-01-01 to 9999-12-31: a longer stated duration (a billion years) is read as this long, never overflows.
CALENDAR_DAYS = (dt.date.max - dt.date.min).days + 1
DAY = dt.timedelta(days=1)
# Days added up on one time line carry floating-point noise: a course this close to its limit is within it.
TOLERANCE_DAYS = 1e-6
# The key of an order topic's variables that holds the card's own flags (the steroid card: days already taken,
# several drafts together), not a template variable.
FLAGS = "flags"
# Order topics whose reason is an absence on record: withheld when that data could not be read.
RELIES_ON_ABSENCE = {
    "posterior-fixation": ("Procedure",),
    "embolization-deferred": (),
    "steroid-duration": (),
    "adjuvant-radiotherapy": ("Procedure", "ServiceRequest"),
}


@dataclass(frozen=True)
class DraftOrder:
    """One pathway-relevant draft order of the hook's draftOrders Bundle."""
    ref: str                       # "ServiceRequest/abc"; "ServiceRequest/(no id)" for a draft without an id
    resource: Mapping[str, Any]    # as sent
    concepts: frozenset[str]       # value sets it belongs to
    label: str
    authored: dt.date | None = None
    names: frozenset[str] = frozenset()   # what an order-select selection may name it by (entry_names)
    has_id: bool = True            # an update or delete names the resource by its id: one without gets none
    changes_filed: bool = False    # a new version of an order on file: deleted, that order stays as on file

    @property
    def evidence(self) -> Evidence:
        return DraftEvidence(self.ref, self.label, self.authored)


# --- reading drafts (plain dicts, never trusted to be well formed) ------------------------------

def _list(value) -> list:
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []


def _map(value) -> Mapping:
    return value if isinstance(value, Mapping) else {}


def _codes(concept) -> set[Code]:
    return {(c["system"], c["code"]) for c in _list(_map(concept).get("coding"))
            if isinstance(c.get("system"), str) and isinstance(c.get("code"), str)}


def _label(concept) -> str:
    concept = _map(concept)
    if isinstance(concept.get("text"), str) and concept["text"]:
        return concept["text"]
    for c in _list(concept.get("coding")):
        for key in ("display", "code"):
            if isinstance(c.get(key), str) and c[key]:
                return c[key]
    return "uncoded"


def _names(concept) -> list[str]:
    concept = _map(concept)
    texts = [concept.get("text")] + [c.get("display") for c in _list(concept.get("coding"))]
    return [t for t in texts if isinstance(t, str)]


def _route(resource: Mapping) -> str:
    return " ".join(" ".join(_names(d.get("route"))) for d in _list(resource.get("dosageInstruction")))


def _authored(resource: Mapping) -> dt.date | None:
    moment = instant(resource["authoredOn"]) if isinstance(resource.get("authoredOn"), str) else None
    return moment.date() if moment else None


def _medication(resource: Mapping, medication: Callable[[str], Mapping]) -> Mapping:
    """medicationCodeableConcept, or the code of the contained, bundled or prefetched Medication it references."""
    if resource.get("medicationCodeableConcept") is not None:
        return _map(resource["medicationCodeableConcept"])
    ref = _map(resource.get("medicationReference")).get("reference")
    if not isinstance(ref, str):
        return {}
    if ref.startswith("#"):
        contained = {c["id"]: c for c in _list(resource.get("contained"))
                     if c.get("resourceType") == "Medication" and isinstance(c.get("id"), str)}
        return _map(contained.get(ref[1:], {}).get("code"))
    return _map(medication(ref).get("code"))


def _medications(entries: list[Mapping], on_record: Iterable[Mapping]) -> Callable[[str], Mapping]:
    """reference -> the Medication it names: an entry of the draft set by any name a selection may use (its
    fullUrl, urn:uuid:... for one not stored yet, or Type/id; an absolute or versioned reference by the Type/id it
    ends in), else a Medication sent in the prefetch (the templates include those the orders on record name)."""
    bundled = {name: e["resource"] for e in entries if e["resource"].get("resourceType") == "Medication"
               for name in entry_names(e)}

    @functools.cache    # read once, and only for a reference the draft set does not resolve
    def prefetched() -> dict[str, Mapping]:
        return {f"Medication/{r['id']}": r for r in on_record
                if r.get("resourceType") == "Medication" and isinstance(r.get("id"), str)}

    def medication(ref: str) -> Mapping:
        found = bundled.get(ref) or bundled.get(named_resource(ref))
        return _map(prefetched().get(named_resource(ref)) if found is None else found)
    return medication


def _entries(bundle: Mapping) -> list[Mapping]:
    """The draft set's entries that hold a resource."""
    return [e for e in _list(_map(bundle).get("entry")) if isinstance(e.get("resource"), Mapping)]


def read_drafts(bundle: Mapping, patient_id: str, vs: ValueSets, on_record: Iterable[Mapping] = (),
                on_file: frozenset[str] = frozenset()) -> tuple[DraftOrder, ...]:
    """The pathway-relevant drafts of the draft set; `on_record`: the prefetched resources (their Medications);
    `on_file`: the drafts (Type/id) that are new versions of an order prefetch returns (record_at_order_time)."""
    entries = _entries(bundle)
    medications = _medications(entries, on_record)
    drafts: list[DraftOrder] = []
    seen: dict[str, int] = {}      # Type/id -> its place in drafts
    also_named: dict[int, set[str]] = {}    # a place in drafts -> the names its draft's other entries give it
    for entry in entries:
        r = entry["resource"]
        rtype = r.get("resourceType")
        if rtype not in ("ServiceRequest", "MedicationRequest") or str(r.get("status")) in WITHDRAWN:
            continue
        if r.get("doNotPerform") is True:   # forbids the act: neither asks for it nor supplies it
            continue
        if subject_id(r) not in (None, patient_id):
            continue
        if rtype == "ServiceRequest":
            concept = r.get("code")
            codes = _codes(concept)
            concepts = {name for name in SERVICE_CONCEPTS if codes & vs[name]}
            # A surgery order may state its instrumentation as a coded order detail.
            if any(_codes(detail) & vs["posterior-stabilization"] for detail in _list(r.get("orderDetail"))):
                concepts.add("posterior-stabilization")
        else:
            concept = _medication(r, medications)
            coded = bool(_codes(concept) & vs["dexamethasone"])
            concepts = {"dexamethasone"} if names_dexamethasone(_names(concept), _route(r), coded) else set()
        if not concepts:
            continue
        has_id = isinstance(r.get("id"), str) and bool(r["id"])
        ref = f"{rtype}/{r['id'] if has_id else '(no id)'}"
        if ref in seen:             # the same draft sent twice is one order, named by either entry's names
            also_named.setdefault(seen[ref], set()).update(entry_names(entry))
            continue
        if has_id:
            seen[ref] = len(drafts)
        drafts.append(DraftOrder(ref, r, frozenset(concepts), _label(concept), _authored(r), entry_names(entry),
                                 has_id, has_id and ref in on_file))
    for place, names in also_named.items():     # once a draft: a name set rebuilt at each copy cost n^2 (review13)
        drafts[place] = dataclasses.replace(drafts[place], names=drafts[place].names | names)
    return tuple(drafts)


def draft_refs(bundle: Mapping) -> frozenset[str]:
    """Every resource of the draft set, as Type/id: these are drafts, never part of the record."""
    return frozenset(_ref(e["resource"]) for e in _entries(bundle))


def named_orders(bundle: Mapping, patient_id: str) -> list[Mapping]:
    """The draft set's orders of this patient that have an id: each may be a new version of an order on record (one
    without an id names none). Those that withdraw an order (WITHDRAWN: stopped, completed, cancelled, ...) are no
    order to sign, but what became of an order that may be on record, in the draft's words (section 3 reads them: a
    stopped dexamethasone order was given, its days count; a revoked instrumentation order is not ordered)."""
    return [r for r in (e["resource"] for e in _entries(bundle))
            if r.get("resourceType") in ("ServiceRequest", "MedicationRequest")
            and isinstance(r.get("id"), str) and r["id"] and subject_id(r) in (None, patient_id)]


def _ref(resource: Mapping) -> str:
    return f"{resource.get('resourceType')}/{resource.get('id')}"


def record_at_order_time(bundle: Mapping, patient_id: str, on_file: list[Mapping], wanted: Callable[[Mapping], bool],
                         readable: Callable[[Mapping], bool]) -> tuple[list[Mapping], frozenset[str]]:
    """The record's resources at order time: `on_file` (prefetch's) without the drafts (an EHR may already hold them
    and return them in prefetch: a draft is never "on record"), and with each draft that withdraws an order (stopped,
    cancelled, ...) in place of the version on file: what became of that order (else stopping the ongoing
    dexamethasone order while signing a new one would leave the course days taken uncounted). A draft of an order on
    file that the record cannot read (`readable` false: invalid FHIR, such as an unreadable dosage), withdrawn or
    changed, would take that version off the record and tell nothing in its place: the version on file stays instead.
    `wanted`: whether the record reads a resource of this kind at all. `bundle`: as dated_as_filed leaves it. With
    the drafts (Type/id) that are new versions of an order on file."""
    filed = {_ref(r) for r in on_file}
    withdrawn, unreadable = [], set()
    for order in named_orders(bundle, patient_id):
        ref = _ref(order)
        gone = str(order.get("status")) in WITHDRAWN
        if not (gone or ref in filed) or not wanted(order):
            continue
        if not readable(order):
            unreadable.add(ref)
        elif gone:
            withdrawn.append(order)
    drafts = draft_refs(bundle)
    return [r for r in on_file if _ref(r) not in drafts - unreadable] + withdrawn, drafts & filed


def dated_as_filed(bundle: Mapping, patient_id: str, on_file: list[Mapping]) -> Mapping:
    """The draft set with each medication order of an order on file that states no date (no dosage start, no
    authoredOn: a status change, or a change sent without its date), withdrawn or still to sign, dated as the version
    on file: it is that order, and stopping or changing an order does not change when it began. Undated, a withdrawn
    one started no course and a changed one started today, while the version on file left the record (a draft is
    never on record): the course days taken on file were lost."""
    entries = _list(_map(bundle).get("entry"))
    undated = {_ref(e["resource"]) for e in entries if _undated_order(e.get("resource"), patient_id)}
    if not undated:
        return bundle
    filed = {_ref(r): r for r in on_file if _ref(r) in undated}
    return {**bundle, "entry": [_entry_dated(e, filed, patient_id) for e in entries]}


def _undated_order(order, patient_id: str) -> bool:
    """A medication order of this patient, with an id, that states no date (no authoredOn, no dosage start)."""
    return isinstance(order, Mapping) and order.get("resourceType") == "MedicationRequest" \
        and isinstance(order.get("id"), str) and bool(order["id"]) and "authoredOn" not in order \
        and subject_id(order) in (None, patient_id) and _order_date(order) is None


def _entry_dated(entry: Mapping, filed: Mapping[str, Mapping], patient_id: str) -> Mapping:
    order = entry.get("resource")
    began = _order_date(filed[_ref(order)]) if _undated_order(order, patient_id) and _ref(order) in filed else None
    return entry if began is None else {**entry, "resource": {**order, "authoredOn": began}}


def _order_date(order: Mapping) -> str | None:
    """A medication order's date as written, read as the record's are (facts.order_date: its earliest dosage start,
    else authoredOn); None when it states no readable one. Only text is a date in a draft as sent."""
    starts = [_map(_map(_map(dosage.get("timing")).get("repeat")).get("boundsPeriod")).get("start")
              for dosage in _list(order.get("dosageInstruction"))]
    authored = order.get("authoredOn")
    dated = order_date([start for start in starts if isinstance(start, str)],
                       authored if isinstance(authored, str) else None)
    return dated and dated[1]


def entry_names(entry: Mapping) -> frozenset[str]:
    """What a selection may name a draft by: its Type/id, its id alone (CDS Hooks calls selections "the FHIR id" of
    the orders, its example is Type/id), and its Bundle entry's fullUrl with, of a RESTful one, the Type/id it ends
    in (a draft not stored yet may have no id: the Bundle names it by fullUrl, urn:uuid:... or
    http://.../MedicationRequest/abc, as FHIR resolves a reference inside a Bundle)."""
    resource = entry["resource"]
    rtype, rid, full_url = resource.get("resourceType"), resource.get("id"), entry.get("fullUrl")
    names = {rid, f"{rtype}/{rid}"} if isinstance(rid, str) else set()
    if isinstance(full_url, str):
        names.add(full_url)
        named = named_resource(full_url)
        kind, slash, _ = named.partition("/")
        if slash and kind == rtype:
            names.add(named)
    return frozenset(names)


def selection_names(selections: Iterable) -> frozenset[str]:
    """Each selection as sent (a fullUrl) and as the Type/id it names: 'ServiceRequest/abc', a version of it
    ('ServiceRequest/abc/_history/2': a FHIR reference may name one) or an absolute URL ending in either ->
    'ServiceRequest/abc' (a version read as the order itself: else the order selected is not spoken of)."""
    return frozenset(name for s in selections if isinstance(s, str) for name in (s, named_resource(s)))


def selections_not_drafted(selections: Iterable, bundle: Mapping) -> list[tuple[int, str]]:
    """The selections (position, as sent) that name no resource of the draft set (CDS Hooks: each references one)."""
    drafted = frozenset().union(*(entry_names(e) for e in _entries(bundle)))
    return [(i, s) for i, s in enumerate(selections) if isinstance(s, str) and not selection_names([s]) & drafted]


# --- durations (pathway.md section 5) -----------------------------------------------------------------

def _quantity_days(quantity) -> float | None:
    q = _map(quantity)
    value = q.get("value")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        amount = float(value)
    except OverflowError:           # an integer beyond floating point: longer than the calendar
        amount = math.inf
    if not amount >= 0:             # negative (or NaN): cannot be read
        return None
    units = ([q.get("code")] if q.get("system") in (None, UCUM) else []) + [q.get("unit")]
    factors = [DAYS_PER_UNIT.get(u.strip().lower()) for u in units if isinstance(u, str)]
    factor = next((f for f in factors if f is not None), None)
    return min(amount * factor, CALENDAR_DAYS) if factor is not None else None


def _moment(value) -> tuple[dt.datetime, bool] | None:
    """A FHIR date/dateTime -> (aware UTC datetime, whether it was a date without a time)."""
    moment = instant(value) if isinstance(value, str) else None
    return (moment, len(value.strip()) <= 10) if moment else None


def _until(value) -> dt.datetime | None:
    """The instant a period's end ends at. A date or partial date means the whole day, month or year (FHIR: a partial
    date as a period's end is its last instant), so it ends where the next one begins: an end of 2027-01 includes
    all of January (a course from 2026-12 to 2027-01 is 62 days, not the 32 of reading it as 1 January)."""
    moment = instant(value) if isinstance(value, str) else None
    if moment is None or len(value.strip()) > 10:
        return moment
    precision = len(value.strip())
    if precision == 10:
        return shift(moment, DAY)
    year, month = (moment.year + 1, 1) if precision == 4 else (moment.year + moment.month // 12, moment.month % 12 + 1)
    return midnight_utc(year, month, 1) or LATEST      # the year 9999 ends at the calendar's end


def _period(repeat: Mapping) -> tuple[dt.datetime | None, dt.datetime | None]:
    """(start, end) of a dosage line's boundsPeriod, each None when not stated: a partial date starts at its first
    instant and ends after its last (_until). A period that ends before it starts (FHIR's per-1 forbids it) cannot be
    read: (None, None)."""
    period = _map(repeat.get("boundsPeriod"))
    start, until = instant(period["start"]) if isinstance(period.get("start"), str) else None, _until(period.get("end"))
    if start is not None and until is not None and until < start:
        return None, None
    return start, until


def _steps(resource: Mapping) -> list[list[Mapping]]:
    """Dosage lines grouped by sequence: lines of one sequence run together, sequences one after another."""
    groups: dict[Any, list] = {}
    for dosage in _list(resource.get("dosageInstruction")):
        seq = dosage.get("sequence")
        groups.setdefault(seq if isinstance(seq, int) and not isinstance(seq, bool) else None, []).append(dosage)
    return [groups[k] for k in sorted(groups, key=lambda s: -1 if s is None else s)]


def _bounds(dosage: Mapping) -> tuple[float | None, dt.datetime | None, dt.datetime | None]:
    """(boundsDuration in days, boundsPeriod start, boundsPeriod end) of one dosage line, read once. A line read by
    its boundsDuration (FHIR's bounds[x] is one choice) states no start: else shortening it, which rewrites it as a
    boundsDuration alone (_cap_dosage), would move the whole order."""
    repeat = _map(_map(dosage.get("timing")).get("repeat"))
    days = _quantity_days(repeat.get("boundsDuration"))
    return (days, None, None) if days is not None else (days, *_period(repeat))


def _timeline(resource: Mapping) -> tuple[dt.datetime | None, list[tuple[Mapping, float, float]]]:
    """(anchor, spans) in one pass over the dosage lines. The anchor: the earliest dosage start the order states
    (boundsPeriod.start), None when it states none. The spans: each line with a readable duration, as (line, start,
    end) in days after the anchor (of an order stating none, after its start); a line with only boundsDuration
    starts when the previous step ends."""
    steps = [[(dosage, *_bounds(dosage)) for dosage in step] for step in _steps(resource)]
    anchor = min((start for step in steps for _, _, start, _ in step if start is not None), default=None)
    spans, cursor = [], 0.0
    for step in steps:
        ends = []
        for dosage, days, start, until in step:
            if days is not None:
                spans.append((dosage, cursor, cursor + days))
            elif start is not None and until is not None:
                spans.append((dosage, (start - anchor) / DAY, (until - anchor) / DAY))
            else:
                continue
            ends.append(spans[-1][2])
        cursor = max(ends, default=cursor)
    return anchor, spans


def _extent(resource: Mapping) -> tuple[dt.datetime | None, float, float] | None:
    """(anchor, start, end) of a medication order, start and end in days after its anchor (_timeline): its earliest
    dosage start to its latest dosage end, else its start to the end of the expected supply; None when neither can
    be read."""
    anchor, spans = _timeline(resource)
    if spans:
        return anchor, min(start for _, start, _ in spans), max(end for _, _, end in spans)
    supply = _quantity_days(_map(resource.get("dispenseRequest")).get("expectedSupplyDuration"))
    return None if supply is None else (anchor, 0.0, supply)


def course_days(resource: Mapping) -> float | None:
    """How long a medication order runs: earliest dosage start to latest dosage end, else the expected supply."""
    extent = _extent(resource)
    return None if extent is None else min(extent[2] - extent[1], CALENDAR_DAYS)


def days_in_words(days: float) -> str:
    """14, 2.5, 3652059; a course at the calendar's end (a stated billion years) is 'at least 3652059'. To the tenth
    of a day, with as many more places as it takes for a length that is not whole days not to read as one: 13 days
    and an hour is 13.04 (as '13' it 'exceeds the 13-day course'), 12.96 days is not '13'."""
    if days >= CALENDAR_DAYS:
        return f"at least {CALENDAR_DAYS}"
    whole = abs(days - round(days)) <= TOLERANCE_DAYS
    places = 1
    while not whole and float(f"{days:.{places}f}") == round(days):
        places += 1
    return f"{days:.{places}f}".rstrip("0").rstrip(".")


def days_phrase(words: str) -> str:
    """A length as the card writes it with its unit, which agrees with the number: '1 day', '0 days', '2.5 days'."""
    return f"{words} day" if words == "1" else f"{words} days"


def _days_added_in_words(taken: float, added: float) -> tuple[str, str]:
    """(the days added, the days in all) as the card writes them, adding up: the days in all are the days taken plus
    the days added as written (each rounded alone, 3.025 and 13.025 round apart in floating point: '3.02', '13.03')."""
    added_words, taken_words = days_in_words(added), days_in_words(taken)
    if taken + added >= CALENDAR_DAYS:
        return added_words, days_in_words(taken + added)
    return added_words, str(Decimal(taken_words) + Decimal(added_words))


def _days_quantity(days: float) -> dict:
    """`days` to the hundredth, never rounded up: a shortened order must not run past the day it is cut at."""
    return {"value": math.floor(days * 100 + 1e-6) / 100, "unit": "days", "system": UCUM, "code": "d"}


def _cap_dosage(dosage: dict, days: float) -> bool:
    """The line cut to `days`; False (left as it was, to be dropped) when it cannot run that little: a bare date
    runs whole days, so one cut to less than its first day would end the day before it starts (FHIR's per-1)."""
    repeat = dosage["timing"]["repeat"]
    by_period = _quantity_days(repeat.get("boundsDuration")) is None      # as _bounds reads the line
    start = _moment(_map(repeat.get("boundsPeriod")).get("start")) if by_period else None
    if start is None:
        repeat.pop("boundsPeriod", None)
        repeat["boundsDuration"] = _days_quantity(days)
    elif start[1]:   # a bare date: the end date is inclusive
        if days < 1:
            return False
        repeat["boundsPeriod"]["end"] = shift(start[0], dt.timedelta(days=days - 1)).date().isoformat()
    else:
        repeat["boundsPeriod"]["end"] = shift(start[0], dt.timedelta(days=days)).isoformat()
    if isinstance(dosage.get("text"), str) and dosage["text"]:     # the sig would still tell the old length
        sig = SHORTENED_BEFORE.sub("", dosage["text"])              # once: a shortened order shortened again
        dosage["text"] = f"{sig} (shortened to {days_in_words(days)} days)"
    return True


SHORTENED_BEFORE = re.compile(r" \(shortened to [^()]{1,40} days\)$")


def shortened(resource: Mapping, limit_days: float = STEROID_COURSE_DAYS) -> dict:
    """The same order cut to `limit_days`: lines running past it are shortened or dropped, the supply capped."""
    new = copy.deepcopy(dict(resource))
    dropped = set()
    for dosage, start, end in _timeline(new)[1]:
        if start >= limit_days:
            dropped.add(id(dosage))
        elif end > limit_days and not _cap_dosage(dosage, limit_days - start):
            dropped.add(id(dosage))
    if dropped:
        new["dosageInstruction"] = [d for d in new["dosageInstruction"] if id(d) not in dropped]
    supply = _map(new.get("dispenseRequest")).get("expectedSupplyDuration")
    supply_days = _quantity_days(supply)
    if supply_days is not None and supply_days > limit_days:
        new["dispenseRequest"]["expectedSupplyDuration"] = _days_quantity(limit_days)
    return new


def draft_daily_dose(resource: Mapping) -> float | None:
    """The highest daily dose a draft states in structured form (mg); None when some line states none (unless one
    states more than 16 mg: facts.course_dose)."""
    doses = [daily for daily, _ in _dosage_lines(resource)]
    return course_dose([d for d in doses if d is not None], None in doses)


def _dosed_in_other_units(draft: DraftOrder) -> bool:
    """Some dosage line of the draft states a dose quantity in a unit not read as mg (tablets, ml, ...)."""
    return any(other_units for _, other_units in _dosage_lines(draft.resource))


def _dosage_lines(resource: Mapping) -> list[tuple[float | None, bool]]:
    """A draft's dosage lines as its doses are read: of each, (the daily dose it states in structured form, in mg, as
    an order on record's is read: facts.line_daily_mg, else None; whether some doseQuantity of it is a dose in a unit
    not read as mg). A draft is not validated: a number not a positive one is read as absent."""
    lines = []
    for dosage in _list(resource.get("dosageInstruction")):
        quantities = [_map(dr.get("doseQuantity")) for dr in _list(dosage.get("doseAndRate"))]
        repeat = _map(_map(dosage.get("timing")).get("repeat"))
        frequency, period, count = (value if _positive(value) else None
                                    for value in (repeat.get("frequency"), repeat.get("period"), repeat.get("count")))
        daily = line_daily_mg(map(_mg, quantities), frequency, period, repeat.get("periodUnit"), count)
        lines.append((daily, any(_positive(q.get("value")) and _mg(q) is None for q in quantities)))
    return lines


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < 1e9


def _mg(quantity: Mapping) -> float | None:
    """A dose in milligrams, its unit (code, else unit text) read as the record's doses are (mg, g, ug, mcg)."""
    value, unit = quantity.get("value"), str(quantity.get("code") or quantity.get("unit") or "").strip().lower()
    factor = MILLIGRAMS_IN.get(unit)
    return float(value) * factor if _positive(value) and factor is not None else None


# --- decisions --------------------------------------------------------------------------------

def _labels(drafts: list[DraftOrder]) -> str:
    """The drafts as the order cards' markdown names them: their names and ids are the EHR's text, shown literally
    (a draft order is not validated)."""
    return ", ".join(f"{literal(d.label)} ({literal(d.ref)})" for d in drafts)


def _withheld(topic: str, facts: Facts) -> tuple[str, ...]:
    return tuple(t for t in RELIES_ON_ABSENCE[topic] if t in facts.unavailable)


def _decide(topics: dict[str, tuple], facts: Facts, extra_flags: dict[str, str],
            variables: dict[str, dict], more_flags: dict[str, frozenset[str]] | None = None,
            ) -> tuple[list[Decision], list[Unchecked]]:
    flags = patient_flags(facts)
    decisions, unchecked = [], []
    for topic, evidence in topics.items():
        missing = _withheld(topic, facts)
        if missing:
            unchecked.append(Unchecked(topic, missing))
            continue
        decisions.append(Decision(topic, tuple(e for e in evidence if e is not None),
                                  flags | {extra_flags[topic]} | (more_flags or {}).get(topic, frozenset()),
                                  variables.get(topic, {})))
    return decisions, unchecked


def in_order_checks(facts: Facts) -> bool:
    """Section 5 speaks for patients in the pathway; section 1: while a competing cause is on record only the
    differential card fires (on the chart), so no order-time or discharge check speaks either."""
    return facts.in_pathway and not facts.competing


# Order-time topics, in the order they are explained, and the flag each card file tests.
ORDER_FLAGS = {"posterior-fixation": "draft_surgery", "embolization-deferred": "draft_embolization",
               "steroid-duration": "draft_dexamethasone"}


def _spoken(drafts: tuple[DraftOrder, ...], selections: frozenset[str] | None, concept: str) -> list[DraftOrder]:
    return [d for d in drafts if concept in d.concepts and (selections is None or d.names & selections)]


def _none_drafted(what: str, selections: frozenset[str] | None) -> str:
    return f"no {what} draft" + (" among the selected orders" if selections is not None else " to sign")


def order_outcomes(drafts: tuple[DraftOrder, ...], facts: Facts,
                   selections: frozenset[str] | None = None) -> list[tuple[str, Fire | str, dict]]:
    """Each order-time topic (section 5) for a patient in the order checks: (topic, Fire or the reason it does
    not fire, the card's variables). decide_orders and explain_orders both read these."""
    base = (facts.hemangioma, facts.compression)
    found: list[tuple[str, Fire | str, dict]] = []

    surgery = _spoken(drafts, selections, "decompression-surgery")
    fixation_draft = [d for d in drafts if "posterior-stabilization" in d.concepts]
    if not surgery:
        found.append(("posterior-fixation", _none_drafted("spine-surgery", selections), {}))
    elif fixation_draft:
        found.append(("posterior-fixation", "posterior instrumentation is in the draft set: " +
                      _labels(fixation_draft), {}))
    elif facts.posterior_fixation is not None:
        found.append(("posterior-fixation", "posterior instrumentation in this episode: " +
                      facts.posterior_fixation.describe(), {}))
    else:
        found.append(("posterior-fixation", Fire(base + tuple(d.evidence for d in surgery),
                                                 f"spine surgery drafted without posterior instrumentation: {_labels(surgery)}"),
                      {"draft_orders": _labels(surgery), "targets": {"add-fixation-to-draft": [d.resource for d in surgery]}}))

    embolization = _spoken(drafts, selections, "embolization")
    if not embolization:
        found.append(("embolization-deferred", _none_drafted("embolization", selections), {}))
    elif not facts.rapid_deterioration:
        found.append(("embolization-deferred", "no rapid deterioration now" +
                      (" (it lapsed)" if facts.deterioration_lapsed else ""), {}))
    else:
        found.append(("embolization-deferred", Fire(base + facts.rapid_evidence + tuple(d.evidence for d in embolization),
                                                    f"embolization drafted while deteriorating rapidly: {_labels(embolization)}"),
                      {"draft_orders": _labels(embolization),
                       "targets": {"remove-embolization": [d.resource for d in embolization]}}))

    found.append(("steroid-duration",) + _steroid_outcome(drafts, facts, base, selections))
    return _narrowed(found, facts)


def _narrowed(found: list[tuple[str, Fire | str, dict]], facts: Facts) -> list[tuple[str, Fire | str, dict]]:
    """Section 1's narrowings hold at order time as on the chart: an unconfirmed compression lets only steroids,
    MRI and the differential fire, surgery under way silences the pre-operative topics (embolization-deferred)."""
    narrowing = narrowed(facts)
    if not narrowing:
        return found
    out = []
    for topic, outcome, variables in found:
        why_not = next((why for topics, why in narrowing if topic in topics), None)
        out.append((topic, why_not, {}) if why_not else (topic, outcome, variables))
    return out


@dataclass(frozen=True)
class CourseDraft:
    """A dexamethasone draft whose duration can be read, on the draft set's time line (days after today, 00:00 UTC)."""
    draft: DraftOrder
    anchor: float       # where its own days count from: its earliest stated dosage start, else authoredOn, else today
    stated: dt.datetime | None      # its dosage start as stated (_timeline), None when the dosage states none
    start: float
    end: float

    def first_day(self, today: dt.datetime | None) -> dt.date | None:
        """The (UTC) date its days count from."""
        return shift(today, dt.timedelta(days=self.start)).date() if today else None

    def describe(self, today: dt.datetime | None) -> str:
        """'Dexamethasone 4 mg (MedicationRequest/dex-1): 3 days from 2026-11-30', as the card names it."""
        starts = f" from {self.first_day(today).isoformat()}" if today else ""
        return f"{_labels([self.draft])}: {days_in_words(min(self.end - self.start, CALENDAR_DAYS))} days{starts}"

    def evidence(self, today: dt.datetime | None) -> Evidence:
        """The draft as the card's "why" lists it, dated by the day its days count from (as describe dates it)."""
        return dataclasses.replace(self.draft.evidence, when=self.first_day(today)) if today else self.draft.evidence


def _midnight(today: dt.date | None) -> dt.datetime | None:
    return dt.datetime.combine(today, dt.time(), UTC) if today else None


def _course_drafts(dexamethasone: list[DraftOrder], today: dt.datetime | None) -> list[CourseDraft]:
    """The draft set's dexamethasone drafts whose duration can be read (section 5: one that cannot draws no warning,
    and adds nothing to the others), each placed by its earliest dosage start, else by the day it was authored
    (section 3 dates a MedicationRequest so: a changed order sent again keeps the days it has run), else today."""
    placed = []
    for draft in dexamethasone:
        extent = _extent(draft.resource)
        if extent is None:
            continue
        stated, start, end = extent
        anchor = stated or _authored_start(draft, today)
        at = (anchor - today) / DAY if anchor is not None and today is not None else 0.0
        placed.append(CourseDraft(draft, at, stated, at + start, at + end))
    return placed


def _authored_start(draft: DraftOrder, today: dt.datetime | None) -> dt.datetime | None:
    """The day a draft was authored, read by days on the UTC line the record counts course days on (pathway.md
    section 3: a new draft authored now starts today, not hours into it, whatever its time zone); an authoredOn after
    today is no start (a later start is stated in the dosage), and the draft starts today."""
    if draft.authored is None or today is None or draft.authored > today.date():
        return today
    return _midnight(draft.authored)


def _steroid_outcome(drafts: tuple[DraftOrder, ...], facts: Facts, base: tuple,
                     selections: frozenset[str] | None) -> tuple[Fire | str, dict]:
    """Section 5 over the draft set: its dexamethasone runs from the earliest start to the latest end of its drafts
    (drafts one after another add up, drafts side by side do not), after the course days already taken. order-select
    speaks when a selected draft is part of that course (the other drafts are the context it is signed with)."""
    spoken = _spoken(drafts, selections, "dexamethasone")
    if not spoken:
        return _none_drafted("dexamethasone", selections), {}
    today = _midnight(facts.today)
    course = _course_drafts(_spoken(drafts, None, "dexamethasone"), today)
    if not {id(d) for d in spoken} & {id(c.draft) for c in course}:
        return f"the duration of {_labels(spoken)} cannot be read", {}
    orders = [c.draft for c in course]
    taken = _days_taken(facts)
    first, last = min(c.start for c in course), max(c.end for c in course)
    drafted = min(last - first, CALENDAR_DAYS)
    again = _taken_again(first, last, taken)
    together = f" ({_labels(orders)} together, earliest start to latest end)" if len(course) > 1 else ""
    shared = f", {days_in_words(again)} of them among the days taken" if again else ""
    if taken + drafted - again <= STEROID_COURSE_DAYS + TOLERANCE_DAYS:
        return (f"{days_in_words(taken)} course days taken + {days_in_words(drafted)} drafted{together}{shared}: "
                f"within the {STEROID_COURSE_DAYS}-day course"), {}
    if not any(_high_or_unknown(d, facts) for d in orders):
        return f"over {STEROID_COURSE_DAYS} days, but at {MODERATE_DAILY_DOSE_MG:g} mg/day or less: not a high dose", {}
    counted = facts.dexamethasone.entries if facts.dexamethasone else ()
    added, total = _days_added_in_words(taken, drafted - again)
    left = STEROID_COURSE_DAYS - taken
    flags = {"dex_course_taken"} if taken > 0 else set()
    if len(course) > 1:
        flags.add("draft_dexamethasone_set")
    shortening, withheld = _shortened_course(course, _course_end(first, taken), left)
    if withheld:
        flags.add(withheld)
    return Fire(base + counted + tuple(c.evidence(today) for c in course), f"dexamethasone course of {total} days{together}"), {
        "draft_orders": _labels(orders) if len(course) == 1 else "; ".join(c.describe(today) for c in course),
        "dex_days": total,
        "draft_days": days_phrase(added),      # the days it adds to those taken
        "dex_taken": days_in_words(taken),
        "dex_taken_days": days_phrase(days_in_words(taken)),
        "dex_dose": _course_dose_text(orders, facts),
        "actions": {"shorten-course": shortening},
        FLAGS: frozenset(flags)}


def _taken_again(first: float, last: float, taken: float) -> float:
    """The days of the drafts' span (`first` to `last`, days after today) before today that the course days taken
    already count (they run from `taken` days ago to today): a draft dated in the past, by its dosage start or its
    authoredOn (a changed order sent again), ran on those days once, not twice."""
    return max(0.0, min(last, 0.0) - max(first, -taken))


def _course_end(first: float, taken: float) -> float:
    """Where the drafts must end (days after today) for the course to be 13 days: `first` + the days left, and later
    by the days taken the drafts run on again (_taken_again) when they end today or after."""
    end = first + STEROID_COURSE_DAYS - taken
    again = _taken_again(first, 0.0, taken)
    return end + again if end + again >= 0 else end


def _shortened_course(course: list[CourseDraft], end: float, left: float) -> tuple[list[dict], str | None]:
    """The one-click shortening: each draft running past `end` (on the time line) cut there, each starting at or after
    it removed. All or nothing: none when nothing is left of the course, when a draft to change has no id (an update
    or delete names the resource by it), since what is left would draw this warning again once signed, or when a
    draft to remove changes an order on file (that order would stay as filed). With none, the card's flag saying why."""
    if left <= 0:
        return [], "dex_course_used_up"
    together = len(course) > 1
    actions = []
    for c in course:
        if c.end <= end + TOLERANCE_DAYS:
            continue
        if not c.draft.has_id:
            return [], "draft_without_id"
        resource = shortened(c.draft.resource, end - c.anchor) if c.start < end else None
        # nothing of it left, or not its start (a bare date cut within its first day is dropped): the rest would move
        extent = _extent(resource) if resource is not None else None
        if extent is None or extent[0] != c.stated:
            if c.draft.changes_filed:
                return [], "draft_changes_filed"
            actions.append({"type": "delete", "resourceId": c.draft.ref, "description": f"Remove {c.draft.ref}: "
                            f"the drafts together use up the {left:g} days left of the {STEROID_COURSE_DAYS}-day "
                            f"course before it starts"})
            continue
        # the length it gives the order, not the days left: a changed order sent again has run some of its days
        description = (f"Shorten {c.draft.ref} so that the drafts together end with the {left:g} days left of the "
                       f"{STEROID_COURSE_DAYS}-day course" if together else
                       f"Shorten {c.draft.ref} to {days_in_words(extent[2] - extent[1])} days, ending with the "
                       f"{left:g} days left of the {STEROID_COURSE_DAYS}-day course")
        actions.append({"type": "update", "description": description, "resource": resource})
    return actions, None


def _course_dose_text(orders: list[DraftOrder], facts: Facts) -> str:
    """The course's highest daily dose with these drafts, as the chart's card names it (section 4: when known)."""
    doses = [draft_daily_dose(d.resource) for d in orders]
    if facts.dexamethasone is not None:
        doses.append(facts.dexamethasone.daily_dose_mg)
    dose = course_dose([d for d in doses if d is not None], None in doses)
    if dose is not None:
        return f"up to {dose:g} mg/day"
    # a dose in tablets (the CDS Hooks sandbox's {pill}) is stated, just not in mg: still an unknown dose
    return "daily dose not stated in mg" if any(map(_dosed_in_other_units, orders)) else \
        "daily dose not stated in structured form"


def decide_orders(drafts: tuple[DraftOrder, ...], facts: Facts, selections: frozenset[str] | None = None) -> tuple[list[Decision], list[Unchecked]]:
    """order-sign (selections None: every draft) and order-select (only the selected drafts)."""
    if not in_order_checks(facts):
        return [], scope_unchecked(facts)
    fired = [(topic, outcome, variables) for topic, outcome, variables in order_outcomes(drafts, facts, selections)
             if isinstance(outcome, Fire)]
    more = {t: v[FLAGS] for t, _, v in fired if FLAGS in v}
    return _decide({t: o.evidence for t, o, _ in fired}, facts, ORDER_FLAGS,
                   {t: {k: x for k, x in v.items() if k != FLAGS} for t, _, v in fired}, more)


def _days_taken(facts: Facts) -> int:
    """The course days already taken in the episode (section 5), 0 without a counted course."""
    return (facts.dexamethasone_days or 0) if facts.dexamethasone else 0


def _not_in_order_checks(facts: Facts) -> str:
    if not facts.in_pathway:
        return f"out of scope: {facts.scope_reason}"
    return "a competing cause is on record: no order-time or discharge check speaks (" + \
        "; ".join(e.describe() for e in facts.competing) + ")"


def _explained(found: list[tuple[str, Fire | str]], facts: Facts) -> list[TopicOutcome]:
    return topic_outcomes(found, {topic: _withheld(topic, facts) for topic, _ in found})


def explain_orders(drafts: tuple[DraftOrder, ...], facts: Facts,
                   selections: frozenset[str] | None = None) -> list[TopicOutcome]:
    """Every order-time topic: fired or not, and the one reason why (the same rules as decide_orders)."""
    if not in_order_checks(facts):
        return [TopicOutcome(t, False, _not_in_order_checks(facts)) for t in ORDER_FLAGS]
    return _explained([(t, o) for t, o, _ in order_outcomes(drafts, facts, selections)], facts)


def _high_or_unknown(draft: DraftOrder, facts: Facts) -> bool:
    """The dose rule of section 4: above 16 mg/day on some day of the course (the draft's or the episode's),
    or unknown."""
    dose = draft_daily_dose(draft.resource)
    return dose is None or dose > MODERATE_DAILY_DOSE_MG or (facts.dexamethasone is not None and facts.high_or_unknown_dose)


def discharge_outcome(facts: Facts) -> Fire | str:
    """encounter-discharge (section 5) for a patient in the order checks: an operated patient going home with no
    radiotherapy given or planned."""
    if not facts.post_operative:
        return "not operated in this episode"
    if facts.radiotherapy is not None:
        return f"radiotherapy since the operation: {facts.radiotherapy.describe()}"
    return Fire((facts.hemangioma, facts.compression, facts.surgery),
                f"operated ({facts.surgery.describe()}), no radiotherapy since")


def decide_discharge(facts: Facts) -> tuple[list[Decision], list[Unchecked]]:
    """encounter-discharge: an operated patient going home with no radiotherapy given or planned."""
    if not in_order_checks(facts):
        return [], scope_unchecked(facts)
    if "Procedure" in facts.unavailable:
        return [], [Unchecked("adjuvant-radiotherapy", ("Procedure",))]
    outcome = discharge_outcome(facts)
    if not isinstance(outcome, Fire):
        return [], []
    return _decide({"adjuvant-radiotherapy": outcome.evidence}, facts, {"adjuvant-radiotherapy": "discharge"}, {})


def explain_discharge(facts: Facts) -> list[TopicOutcome]:
    """The discharge topic: fired or not, and the one reason why (the same rule as decide_discharge)."""
    if not in_order_checks(facts):
        return [TopicOutcome("adjuvant-radiotherapy", False, _not_in_order_checks(facts))]
    if "Procedure" in facts.unavailable:
        return [TopicOutcome("adjuvant-radiotherapy", False, "not decided: Procedure could not be read")]
    return _explained([("adjuvant-radiotherapy", discharge_outcome(facts))], facts)
