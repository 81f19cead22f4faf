"""Facts of pathway.md (version 2) section 3, derived per episode from a PatientRecord. Pure.

Read it top to bottom beside pathway.md: the service's conventions, how dates and statuses are read,
the episode and its window, then one small function per fact. `chart_facts` derives what the record
says whatever the moment (kept by the engine while the chart is unchanged); `facts_at` finishes the
facts for the moment of a call (what is recent, course days, age, pregnancy, surgery under way).
Every derivation is linear in the record, or n log n where it sorts.
"""
from __future__ import annotations

import datetime as dt
import functools
import re
from collections import deque
from dataclasses import dataclass
from itertools import repeat
from operator import attrgetter
from typing import Iterable

from service.clinical.frozen import set_at_once
from service.clinical.markdown import literal
from service.clinical.record import LeftOut, PatientRecord, named_resource, says_deceased
from service.clinical.valuesets import (LEVEL_PATTERN, LEVELS, LOCAL, SPINE_WORDS, ValueSets, codings,  # noqa: F401
                                        in_set, level_rank, named_levels, sets_holding)  # LEVEL_PATTERN: an oracle's

# --- the service's own conventions (pathway.md *(convention)*; docs/input-contract.md lists them) -----
EPISODE_LEAD = dt.timedelta(days=30)                  # the window opens this long before the episode start
EPISODE_LEAD_RECORDED_ONLY = dt.timedelta(days=365)   # ... or this long, when the start is only a recordedDate
SURGERY_UNDER_WAY = dt.timedelta(days=2)              # an in-progress decompression this recent is under way
RAPID_RECENT = dt.timedelta(days=7)                   # a sign of rapid deterioration counts this long
RAPID_PAIR = dt.timedelta(hours=72)                   # two readings at most this far apart make a worsening
MOTOR_DROP = 5                                        # motor-score points lost within RAPID_PAIR
PEDIATRIC_AGE = 18                                    # under this age, a child
PREGNANCY_SPAN = dt.timedelta(days=294)               # 42 weeks: a pregnancy recorded earlier is over
INJURY_BEFORE_EPISODE = dt.timedelta(days=14)         # an injury this long before the episode start is "minor trauma"
RADIOTHERAPY_LATE_DAYS = 365                          # past 12 months after surgery the referral carries no dose
# --- the source's numbers -----------------------------------------------------------------------------
STEROID_COURSE_DAYS = 13          # 3 days at 96 mg + a 10-day taper
MODERATE_DAILY_DOSE_MG = 16.0     # the moderate regimen; above it is high-dose
MULTILEVEL_THORACIC = ("T5", "T10")

# --- statuses (pathway.md section 3, "What counts") ---------------------------------------------------
EXCLUDED_VERIFICATION = frozenset({"refuted", "entered-in-error"})
UNCONFIRMED_VERIFICATION = frozenset({"provisional", "differential", "unconfirmed"})
ACTIVE_CLINICAL = frozenset({None, "active", "recurrence", "relapse"})
RECURRENT_CLINICAL = frozenset({"recurrence", "relapse"})
REPORT_COUNTS = frozenset({"preliminary", "final", "amended", "corrected", "appended"})
ORDER_INTENTS = frozenset({"order", "original-order", "reflex-order", "filler-order", "instance-order"})
ORDERED = frozenset({"active", "on-hold", "completed"})
MEDICATION_ONGOING = frozenset({"active", "on-hold"})
MEDICATION_GIVEN = frozenset({"completed", "stopped"})
MEDICATION_COUNTED = MEDICATION_ONGOING | MEDICATION_GIVEN
ADMINISTRATION_GIVEN = frozenset({"completed", "in-progress"})
OBSERVATION_EXCLUDED = frozenset({"entered-in-error", "cancelled"})
RADIOTHERAPY_GIVEN = frozenset({"completed", "in-progress"})
AMBULATORY_VALUES = ("ambulatory", "ambulatory-with-assistance", "non-ambulatory")

# Dexamethasone named in words (pathway.md section 2): a topical or combined product does not count.
DEXAMETHASONE_WORD = re.compile(r"dexamethasone", re.IGNORECASE)
# Local forms also as drug databases and sigs abbreviate them: "OPHTH SUSP", "oint", "1 gtt OU", route "Both eyes".
# Only unambiguous abbreviations: "OD" is "once daily" in UK prescriptions ("dexamethasone 4 mg OD" is systemic) and
# "right eye" in US sigs, "OS" is as ambiguous, "AS" (left ear) is the English word and "AD" the Latin one: these
# four stay words of no form (an eye or ear product written with them alone counts: a known limit, docs/codes.md).
LOCAL_FORMS = ("eyes?", "eyedrops?", "ophth\\w*", "opht", "oph", "opth\\w*", "ocular", "intraocular", "intravitreal",
               "conjunctival", "implant", "gtts?", "ou", "ears?", "eardrops?", "otic", "aural", "auricular", "au", "skin",
               "topical", "cutaneous", "dermal", "transdermal", "cream", "crm", "ointment", "oint", "lotion", "gel",
               "inhal\\w*", "respiratory", "nasal", "intranasal")
# The first letters looked at before the words: a word start no form begins with is passed in one step (half the cost)
NOT_SYSTEMIC = re.compile(rf"\b(?=[{''.join(sorted({w[0] for w in LOCAL_FORMS}))}])({'|'.join(LOCAL_FORMS)})\b",
                          re.IGNORECASE)
# RxNorm writes combinations "A 1 MG/ML / B 3 MG/ML": a spaced slash, not the one in "MG/ML"; EHRs also write
# "neomycin/dexamethasone": a slash between two words of three letters or more, neither a unit nor a dose form
# ("tablets/day", "solution/injection"); the words' shape is looked for first, the long list only where it is met.
NOT_AN_INGREDIENT = r"(?:mcg|actuat\w*|unt|units?|meq|mmol|hrs?|hours?|days?|wks?|weeks?|doses?|sprays?|drops?|tabs?" \
                    r"|tablets?|caps?|capsules?|vials?|amps?|ampules?|syringes?|patch(?:es)?|puffs?|inh|min|soln" \
                    r"|solutions?|inj|injections?|infusions?|elixirs?|susp|suspensions?|conc|concentrates?|oral" \
                    r"|intravenous|intramuscular|syrups?|liquids?|powders?|kits?)\b"
# EHRs and US generic names join a combination's ingredients by dashes, spaced or not ("neomycin-polymyxin
# B-dexamethasone", "Neomycin - Polymyxin B - Dexamethasone", "dexamethasone-tobramycin", "Dexamethasone Sodium
# Phosphate-Neomycin Sulfate", "dexamethasone 0.1%-tobramycin 0.3%"). A dash joins a second ingredient when
# - it comes before dexamethasone and after an ingredient's word: three letters or more or a letter alone ("polymyxin
#   B"), or a strength's "%", but none of NOT_BEFORE_DEXAMETHASONE (a form, route, dose word or labeller: "Inj-",
#   "high-dose-", "PMS-"; "IV-" has two letters; a salt there is another ingredient's: "Sulfacetamide Sodium-");
# - or it comes after dexamethasone, its salt or its strength (a "%", mg, mcg, mL) and before a word of three letters
#   or more that is not its own product's (NOT_AN_INGREDIENT, OWN_PRODUCT_AFTER_DASH: a unit, form, route, salt,
#   brand, sig word or labeller: "dexamethasone-IVPB", "dexamethasone-preservative free", "DEXAMETHASONE-OMEGA",
#   "dexamethasone 4 mg - take 1 daily"); a dose after it joins nothing ("dexamethasone - 4 mg tablet").
# Every check is a fixed-width look-around taken only where a word ends just before a dash (one space allowed each
# side): one pass over the words, a few steps a character. Labellers are open-ended: only a few known prefixes and
# suffixes are listed; another labeller's "Xyz-Dexamethasone" does not count (nuisance direction, docs/codes.md).
LABELLERS = ("apo", "auro", "jamp", "mar", "mint", "mylan", "nat", "novo", "omega", "pms", "ratio", "riva", "sandoz",
             "sdz", "teva")
NOT_BEFORE_DEXAMETHASONE = ("inj", "injection", "injectable", "oral", "intravenous",
                            "intramuscular", "ivpb", "ivp", "high", "low", "dose", "pre", "post", "taper", "tapering",
                            "preservative", "free", "generic") + LABELLERS
OWN_PRODUCT_AFTER_DASH = (
    "dexamethasone", "sodium", "phosphate", "acetate", "intensol", "injectable", "ivpb", "ivp", "piggyback", "push",
    "premix\\w*", "bolus", "preservative", "free", "generic", "high", "low", "pre", "post", "taper", "tapering",
    "decadron", "hemady", "dexpak", "taperdex", "zcort", "dxevo", "hidex", "dexabliss", "doubledex", "baycadron",
    "take", "give", "inject", "administer", "start", "then", "once", "twice", "daily", "every", "each", "per", "for",
    "stat", "now", "bid", "tid", "qid", "qds", "tds", "prn", "nightly", "morning", "evening", "night", "hold", "until",
    "see", "use", "via", "over", "slow", "slowly") + LABELLERS
DASH = "[-\u2010-\u2015\u2212]"       # hyphen-minus, hyphen, non-breaking hyphen, figure dash, en/em dash, minus
JOINED_BY_DASH = (
    rf"(?= ?{DASH})(?<=[a-z%])(?:"
    rf"(?= ?{DASH} ?dexamethasone)(?:(?<=[a-z]{{3}})|(?<=\b[a-z])|(?<=%))"
    + "".join(rf"(?<!\b{w})" for w in NOT_BEFORE_DEXAMETHASONE)
    + r"|(?:(?<=dexamethasone)|(?<=\bsodium)|(?<=\bphosphate)|(?<=\bacetate)|(?<=%)|(?<=[^a-z]mg)|(?<=[^a-z]mcg)"
    rf"|(?<=[^a-z]ml))(?= ?{DASH} ?(?=[a-z]{{3}})(?!{NOT_AN_INGREDIENT}|(?:{'|'.join(OWN_PRODUCT_AFTER_DASH)})\b)))")
SECOND_INGREDIENT = re.compile(r"\s/\s|\+|\band\b|\bwith\b|;"
                               rf"|\b(?=[a-z]{{3,}}/[a-z]{{3}})(?!{NOT_AN_INGREDIENT})[a-z]+/(?!{NOT_AN_INGREDIENT})[a-z]{{3}}"
                               rf"|{JOINED_BY_DASH}", re.IGNORECASE)

UTC = dt.timezone.utc
EARLIEST = dt.datetime.min.replace(tzinfo=UTC)
LATEST = dt.datetime.max.replace(tzinfo=UTC)
ENTRY_WORDS = {"Condition": "problem", "Procedure": "procedure", "ServiceRequest": "order",
               "MedicationRequest": "medication order", "MedicationAdministration": "medication given",
               "DiagnosticReport": "report", "Observation": "observation", "Patient": "patient"}


# --- dates ----------------------------------------------------------------------------------------------

def instant(value) -> dt.datetime | None:
    """A FHIR date/dateTime (model value or ISO string, possibly partial) -> an aware UTC datetime.
    A partial date counts from its first day; a date alone is 00:00 UTC; year 1 and 9999 never overflow."""
    if type(value) is not str:
        return _instant_of_model(value)
    text = value.strip()
    if len(text) > 10:
        try:
            moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return None
        return moment if moment.tzinfo is UTC else in_utc(moment)     # "Z" and "+00:00" are UTC's own tzinfo
    if PARTIAL_DATE.fullmatch(text):       # the forms a FHIR date has: read without strptime (~10 times its cost)
        return midnight_utc(int(text[:4]), int(text[5:7] or 1), int(text[8:] or 1))
    for fmt, size in (("%Y-%m-%d", 10), ("%Y-%m", 7), ("%Y", 4)):
        if len(text) == size:
            try:
                return dt.datetime.strptime(text, fmt).replace(tzinfo=UTC)
            except ValueError:
                return None
    return None


def _instant_of_model(value) -> dt.datetime | None:
    """instant() of what a model holds: a datetime, a date, None; anything else is read as its string."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return in_utc(value)
    if isinstance(value, dt.date):
        return midnight_utc(value.year, value.month, value.day)
    return instant(str(value))


def in_utc(moment: dt.datetime) -> dt.datetime:
    """An aware datetime in UTC (a naive one is taken as UTC), held at the ends of the calendar."""
    if not moment.tzinfo:
        moment = moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        return EARLIEST if moment.year < 2 else LATEST


def midnight_utc(year: int, month: int, day: int) -> dt.datetime | None:
    """00:00 UTC of a day; None when the day does not exist. tzinfo is passed by position: as a keyword the
    constructor costs ~3 times more (1.8 against 0.6 µs), and a chart reads dozens of dates."""
    try:
        return dt.datetime(year, month, day, 0, 0, 0, 0, UTC)
    except ValueError:
        return None


PARTIAL_DATE = re.compile(r"[0-9]{4}(-[0-9]{2}(-[0-9]{2})?)?")   # ASCII digits; any other form: strptime


def shift(moment: dt.datetime, delta: dt.timedelta) -> dt.datetime:
    """moment + delta, held at the ends of the calendar instead of overflowing."""
    try:
        return moment + delta
    except OverflowError:
        return EARLIEST if delta < dt.timedelta(0) else LATEST


def day_of(moment: dt.datetime | None) -> dt.date | None:
    return moment.date() if moment else None


AGE_UNITS = {"a": 365.25, "mo": 30.4375, "wk": 7.0, "d": 1.0}
# An Age's unit as EHRs write it when they send no UCUM code ("54 years"): the UCUM unit it means.
AGE_UNIT_WORDS = {word: code for code, words in (("a", ("a", "y", "yr", "yrs", "year", "years")),
                                                 ("mo", ("mo", "mos", "month", "months")),
                                                 ("wk", ("wk", "wks", "week", "weeks")),
                                                 ("d", ("d", "day", "days"))) for word in words}


def after_birth(age, born: dt.datetime | None) -> dt.datetime | None:
    """An Age (units a, mo, wk, d) added to the birth date."""
    if age is None or born is None or age.value is None:
        return None
    unit = age_unit(age)
    days = AGE_UNITS.get(unit)
    if days is None:
        return None
    if unit == "a" and float(age.value).is_integer():          # whole years: the birthday of that year
        year = born.year + int(age.value)
        if 1 <= year <= 9999:
            return born.replace(year=year, day=28) if (born.month, born.day) == (2, 29) else born.replace(year=year)
    try:
        return shift(born, dt.timedelta(days=float(age.value) * days))
    except (OverflowError, ValueError):
        return None


def age_unit(age) -> str | None:
    """The UCUM unit of an Age: its code, else its unit as written ("years", "yr", "months")."""
    if age.code in AGE_UNITS:
        return age.code
    return AGE_UNIT_WORDS.get(age.unit.strip().lower()) if isinstance(age.unit, str) else None


def iso_string(text) -> dt.datetime | None:
    """An onsetString / performedString read only when it is an ISO 8601 date."""
    return instant(text) if isinstance(text, str) and re.fullmatch(r"\d{4}(-\d{2}(-\d{2}(T.+)?)?)?", text.strip()) else None


def condition_start(c, born: dt.datetime | None) -> tuple[dt.datetime | None, str | None]:
    """When a Condition began and from what: 'onset' (onset[x]) or 'recordedDate'; (None, None) unknown."""
    onset = (instant(c.onsetDateTime) or instant(c.onsetPeriod.start if c.onsetPeriod else None)
             or after_birth(c.onsetAge, born) or iso_string(c.onsetString))
    if onset:
        return onset, "onset"
    recorded = instant(c.recordedDate)
    return (recorded, "recordedDate") if recorded else (None, None)


def procedure_date(p, born: dt.datetime | None) -> dt.datetime | None:
    return (instant(p.performedDateTime) or instant(p.performedPeriod.start if p.performedPeriod else None)
            or iso_string(p.performedString) or after_birth(p.performedAge, born)
            or after_birth(p.performedRange.low if p.performedRange else None, born))


def report_date(r) -> dt.datetime | None:
    return instant(r.effectiveDateTime) or instant(r.effectivePeriod.start if r.effectivePeriod else None) \
        or instant(r.issued)


def request_date(r) -> dt.datetime | None:
    return (instant(r.occurrenceDateTime) or instant(r.occurrencePeriod.start if r.occurrencePeriod else None)
            or timing_start(r.occurrenceTiming) or instant(r.authoredOn))


def timing_start(timing) -> dt.datetime | None:
    """When a Timing begins: its earliest event, else its repeat's boundsPeriod.start."""
    if timing is None:
        return None
    events = [when for when in map(instant, timing.event or ()) if when]
    if events:
        return min(events)
    bounds = timing.repeat.boundsPeriod if timing.repeat else None
    return instant(bounds.start) if bounds else None


def medication_request_date(m) -> dt.datetime | None:
    """The earliest dosage start, else authoredOn (order_date)."""
    dated = order_date([d.timing.repeat.boundsPeriod.start for d in m.dosageInstruction or ()
                        if d.timing and d.timing.repeat and d.timing.repeat.boundsPeriod], m.authoredOn)
    return dated and dated[0]


def order_date(starts: Iterable, authored) -> tuple[dt.datetime, object] | None:
    """A medication order's date (pathway.md section 3): its earliest readable dosage start, else its authoredOn when
    readable, as (the instant, the value as written: a model's, or a draft's text, service/clinical/orders.py); None
    when it states no readable one."""
    earliest = None
    for start in starts:
        when = instant(start)
        if when is not None and (earliest is None or when < earliest[0]):
            earliest = (when, start)
    if earliest is None and (when := instant(authored)) is not None:
        earliest = (when, authored)
    return earliest


def administration_date(a) -> dt.datetime | None:
    return instant(a.effectiveDateTime) or instant(a.effectivePeriod.start if a.effectivePeriod else None)


def observation_date(o) -> dt.datetime | None:
    return (instant(o.effectiveDateTime) or instant(o.effectiveInstant)
            or instant(o.effectivePeriod.start if o.effectivePeriod else None) or timing_start(o.effectiveTiming)
            or instant(o.issued))


# --- what a clinician reads -----------------------------------------------------------------------------

class worked_out_once:
    """functools.cached_property as Python 3.12 has it, without the lock 3.11's takes at every first read: ~4 k of the
    ~14 k instructions an Evidence's first `description` cost (callgrind). Two threads reading an entry's value
    first at once (a remembered chart) both work out the same value."""

    def __init__(self, func):
        self.func = func
        self.name = func.__name__
        self.__doc__ = func.__doc__

    def __get__(self, instance, owner=None):
        if instance is None:
            return self
        value = instance.__dict__[self.name] = self.func(instance)
        return value


@set_at_once                    # a chart makes an Evidence of every entry a fact names
@dataclass(frozen=True)
class Evidence:
    """A record entry behind a fact: shown to the clinician as 'why am I seeing this'."""
    ref: str
    label: str
    when: dt.date | None = None
    STATE = ""      # what the entry's kind is prefixed with: DraftEvidence's "draft "

    def describe(self) -> str:
        return self.description

    @worked_out_once
    def description(self) -> str:
        """The line a card's "why" shows, worked out once per entry (the cards of a chart repeat its entries); the
        record's label and reference (a draft order's id is not validated) as markdown shows them literally."""
        kind = ENTRY_WORDS.get(self.ref.split("/")[0], "entry")
        date = self.when.isoformat() if self.when else "no date recorded"
        return literal(f"{self.label} ({self.STATE}{kind}, {date}; {self.ref})")


class DraftEvidence(Evidence):
    """A draft order of the hook's draftOrders, not on record: 'Dexamethasone (draft medication order, 2026-11-30;
    MedicationRequest/dex-1)', its kind said once."""
    STATE = "draft "


def label_of(concept, vs: ValueSets | None = None) -> str:
    """What a clinician reads for a CodeableConcept: its text, else a coding's display, else the display the
    value sets give its code; the bare code only when nothing names it."""
    if concept is None:
        return "uncoded"
    if concept.text:
        return concept.text
    for c in concept.coding or []:
        if c.display:
            return c.display
    found = codings(concept)
    named = [vs.displays[code] for code in found if code in vs.displays] if vs is not None else []
    return named[0] if named else (found[0][1] if found else "uncoded")


def ref_of(resource) -> str:
    return f"{resource.get_resource_type()}/{resource.id}"


def evidence(resource, concept, when: dt.datetime | None, vs: ValueSets, label: str | None = None) -> Evidence:
    return Evidence(ref_of(resource), label or label_of(concept, vs), day_of(when))


def status_code(concept, system: str | None = None) -> str | None:
    """The status a CodeableConcept codes: its coding in `system` (HL7's status code system) when there is one, else
    its first coding's code (an EHR may send its own code first, HL7's beside it)."""
    found = codings(concept)
    if system is not None and len(found) > 1:
        for coded_in, code in found:
            if coded_in == system:
                return code
    return found[0][1] if found else None


CLINICAL_STATUS = "http://terminology.hl7.org/CodeSystem/condition-clinical"
VERIFICATION_STATUS = "http://terminology.hl7.org/CodeSystem/condition-ver-status"


# --- facts -----------------------------------------------------------------------------------------------

@set_at_once
@dataclass(frozen=True)
class Dexamethasone:
    """The episode's dexamethasone: what was counted, when the course began, the highest stated daily dose."""
    entries: tuple[Evidence, ...]
    ongoing: bool
    course_start: dt.date | None
    daily_dose_mg: float | None        # None: no structured dose on some counted entry and none above 16 mg


@set_at_once                    # 46 fields: object.__setattr__ a field cost ~1.3 k instructions each
@dataclass(frozen=True)
class Facts:
    patient_ref: str
    in_pathway: bool
    scope_reason: str = ""                 # why not in the pathway (the one reason), when not
    deceased: bool = False
    stage: str | None = None               # "pre-operative" | "post-operative"
    recurrence: bool = False
    episode_start: dt.date | None = None
    episode_start_from: str | None = None  # "onset" | "recordedDate"
    window_start: dt.date | None = None    # None: the window holds everything
    hemangioma: Evidence | None = None
    hemangioma_ref: str = ""
    hemangioma_verification: str = "confirmed"
    compression: Evidence | None = None
    compression_verification: str = "confirmed"
    competing: tuple[Evidence, ...] = ()
    levels: tuple[str, ...] = ()
    multilevel_thoracic: bool = False
    surgery: Evidence | None = None                 # the operation of the episode
    earlier_operation: Evidence | None = None       # the latest dated decompression before the window
    undated_decompression: Evidence | None = None
    surgery_under_way: Evidence | None = None
    decompression_ordered: Evidence | None = None
    posterior_fixation: Evidence | None = None
    embolization: Evidence | None = None
    radiotherapy: Evidence | None = None            # since the operation (or the earlier one, in recurrence)
    mri_entire_spine: Evidence | None = None
    mri_thoracic: Evidence | None = None
    spine_cta: Evidence | None = None
    rapid_deterioration: bool = False
    rapid_evidence: tuple[Evidence, ...] = ()
    deterioration_lapsed: bool = False
    lapsed_evidence: tuple[Evidence, ...] = ()
    ambulatory_status: str | None = None
    ambulatory_evidence: Evidence | None = None
    dexamethasone: Dexamethasone | None = None
    dexamethasone_days: int | None = None
    age: int | None = None
    pregnancy: Evidence | None = None
    injury: Evidence | None = None
    joa: tuple[float, Evidence] | None = None
    today: dt.date | None = None
    unavailable: frozenset[str] = frozenset()
    left_out: tuple[LeftOut, ...] = ()

    @property
    def operated(self) -> bool:
        return self.surgery is not None

    @property
    def pre_operative(self) -> bool:
        return self.in_pathway and self.stage == "pre-operative"

    @property
    def post_operative(self) -> bool:
        return self.in_pathway and self.stage == "post-operative"

    @property
    def pediatric(self) -> bool:
        return self.age is not None and self.age < PEDIATRIC_AGE

    @property
    def age_unknown(self) -> bool:
        return self.age is None

    @property
    def unconfirmed_compression(self) -> bool:
        return self.compression_verification in UNCONFIRMED_VERIFICATION

    @property
    def days_since_surgery(self) -> int | None:
        if self.surgery and self.surgery.when and self.today:
            return (self.today - self.surgery.when).days
        return None

    @property
    def dexamethasone_ongoing(self) -> bool:
        return self.dexamethasone is not None and self.dexamethasone.ongoing

    @property
    def high_or_unknown_dose(self) -> bool:
        dose = self.dexamethasone.daily_dose_mg if self.dexamethasone else None
        return dose is None or dose > MODERATE_DAILY_DOSE_MG

    @property
    def steroid_course_exceeded(self) -> bool:
        return (self.dexamethasone_ongoing and self.dexamethasone_days is not None
                and self.dexamethasone_days > STEROID_COURSE_DAYS and self.high_or_unknown_dose)


# --- conditions: scope ---------------------------------------------------------------------------------

def counts(c) -> bool:
    """A Condition counts unless refuted or entered in error."""
    return status_code(c.verificationStatus, VERIFICATION_STATUS) not in EXCLUDED_VERIFICATION


def is_active(c) -> bool:
    return status_code(c.clinicalStatus, CLINICAL_STATUS) in ACTIVE_CLINICAL


def is_recurrent(c) -> bool:
    return status_code(c.clinicalStatus, CLINICAL_STATUS) in RECURRENT_CLINICAL


def is_vertebral_hemangioma(c, vs: ValueSets) -> bool:
    """SNOMED vertebral hemangioma; or a site-unspecified ICD-10-CM hemangioma whose coded bodySite is a spine
    structure, or, with no bodySite coded, whose text names the spine. A coded site, none of it in the spine (a
    liver, the skin), excludes either: the coded site is the record's most specific word (pathway.md section 2)."""
    vertebral_code = in_set(c.code, vs["vertebral-hemangioma"])
    if not vertebral_code and not in_set(c.code, vs["hemangioma-site-unspecified"]):
        return False
    coded_site = False
    for site in c.bodySite or ():
        if codings(site):
            if in_set(site, vs["spine-structure"]):
                return True
            coded_site = True
    if coded_site:
        return False
    if vertebral_code:
        return True
    names = [c.code.text or ""] + [cd.display or "" for cd in c.code.coding or []]
    names += [site.text or "" for site in c.bodySite or []]
    return any(SPINE_WORDS.search(n) for n in names)


HEMANGIOMA_CODES = ("vertebral-hemangioma", "hemangioma-site-unspecified")


def coded_hemangiomas(conditions: list, problems: Coded) -> list:
    """The counting Conditions by_value_set filed under a hemangioma code, in the record's order: only these can be
    a vertebral hemangioma (is_vertebral_hemangioma is asked of no other Condition)."""
    vertebral, unspecified = problems.get(HEMANGIOMA_CODES[0], ()), problems.get(HEMANGIOMA_CODES[1], ())
    if not vertebral or not unspecified:        # filed under one code only (most charts): in the record's order
        return vertebral or unspecified
    filed = set(map(id, vertebral)) | set(map(id, unspecified))
    return [entry for entry in conditions if id(entry) in filed]


def levels_of(c, vs: ValueSets) -> set[str]:
    """Vertebral levels a Condition names: coded bodySites, then the words of its sites and code (searched at once,
    a line each: a level never runs from one line into the next)."""
    found = set()
    words = []
    for site in c.bodySite or ():
        for code in codings(site):
            if code in vs.levels:
                found.add(vs.levels[code])
        words.append(label_of(site))
    words.append(c.code.text or "")
    for cd in c.code.coding or ():
        words.append(cd.display or "")
    found.update(named_levels("\n".join(words)))
    return found.intersection(LEVEL_NAMES)


LEVEL_NAMES = frozenset(LEVELS)


def sorted_levels(levels: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(set(levels), key=level_rank))


def same_lesion(hemangioma_levels: set[str], compression_levels: set[str]) -> bool:
    """Within one level of each other, when both name a level."""
    if not hemangioma_levels or not compression_levels:
        return True
    return any(abs(level_rank(a) - level_rank(b)) <= 1 for a in hemangioma_levels for b in compression_levels)


def the_episode(compressions: list[tuple[object, tuple]]) -> tuple[object, tuple] | None:
    """The latest (by start) active counting compression, else the latest counting one, with its start. Ties:
    active first, then one with onset[x], then the lowest id."""
    if len(compressions) < 2:       # none, or the one most charts have: nothing to rank
        return compressions[0] if compressions else None

    def rank(entry):
        c, (start, source) = entry
        return (not is_active(c), -(start - EARLIEST).total_seconds() if start else float("inf"),
                source != "onset", c.id or "")
    return min(compressions, key=rank)


def episode_window(start: dt.datetime | None, source: str | None) -> dt.datetime | None:
    """The first moment of the episode's window; None when the start is unknown (everything is in it)."""
    if start is None:
        return None
    return shift(start, -(EPISODE_LEAD_RECORDED_ONLY if source == "recordedDate" else EPISODE_LEAD))


def in_window(when: dt.datetime | None, window: dt.datetime | None) -> bool:
    """In the episode: dated within the window, or undated."""
    return when is None or window is None or when >= window


# --- the record read once for the facts -------------------------------------------------------------------

Coded = dict   # value-set name -> [(entry, its date)], in the record's order


def by_value_set(dated: list[tuple[object, object]], vs: ValueSets) -> Coded:
    """Each dated entry under every value set its code is in: the facts ask for entries by value set, some of
    them several times, and each entry's code and date are read once."""
    found: Coded = {}
    for entry in dated:
        for name in sets_holding(entry[0].code, vs):
            found.setdefault(name, []).append(entry)
    return found


def dated_conditions(record: PatientRecord, born) -> list[tuple[object, tuple]]:
    """The counting Conditions, each with its start and what it is from (condition_start, read once)."""
    return [(c, condition_start(c, born)) for c in record.of("Condition") if counts(c)]


@set_at_once
@dataclass(frozen=True)
class Entries:
    """What was done, ordered and reported, by the value sets of the entries' codes, each with its date; read once
    a call, when the patient is in scope."""
    procedures: Coded
    orders: Coded        # ServiceRequests
    reports: Coded       # DiagnosticReports


def entries_of(record: PatientRecord, vs: ValueSets, born) -> Entries:
    procedures, orders, reports = record.of("Procedure"), record.of("ServiceRequest"), record.of("DiagnosticReport")
    return Entries(by_value_set(list(zip(procedures, map(procedure_date, procedures, repeat(born)))), vs),
                   by_value_set(list(zip(orders, map(request_date, orders))), vs) if orders else {},
                   by_value_set(list(zip(reports, map(report_date, reports))), vs) if reports else {})


# --- record entries in the episode -----------------------------------------------------------------------

def is_ordered(r) -> bool:
    """A ServiceRequest (or MedicationRequest) that is an order on record."""
    return r.intent in ORDER_INTENTS and r.doNotPerform is not True and r.status in ORDERED


def latest_of(found: list[tuple[dt.datetime | None, Evidence]]) -> Evidence | None:
    """The latest dated entry, else an undated one; ties by reference, so the order sent never matters."""
    if not found:
        return None
    return found[0][1] if len(found) == 1 else max(found, key=latest_order)[1]


def latest_order(item: tuple) -> tuple:
    """The order of dated Evidence, (date or None, Evidence): by date (undated first), ties by reference."""
    return item[0] or EARLIEST, item[1].ref


def by_entry_id(entry: tuple) -> str:
    """The order of (entry, ...) pairs by the entry's id: the order they were sent in never matters."""
    return entry[0].id or ""


def done_in_episode(entries: Entries, vs: ValueSets, name: str, window) -> list[tuple[dt.datetime | None, Evidence]]:
    out = []
    for p, when in entries.procedures.get(name, ()):
        if p.status == "completed" and in_window(when, window):
            out.append((when, evidence(p, p.code, when, vs)))
    return out


def ordered_in_episode(entries: Entries, vs: ValueSets, name: str, window) -> list[tuple[dt.datetime | None, Evidence]]:
    out = []
    for r, when in entries.orders.get(name, ()):
        if is_ordered(r) and in_window(when, window):
            out.append((when, evidence(r, r.code, when, vs, f"{label_of(r.code, vs)} (ordered)")))
    return out


def reported_in_episode(entries: Entries, vs: ValueSets, name: str, window) -> list[tuple[dt.datetime | None, Evidence]]:
    out = []
    for r, when in entries.reports.get(name, ()):
        if r.status in REPORT_COUNTS and in_window(when, window):
            out.append((when, evidence(r, r.code, when, vs)))
    return out


def workup(entries: Entries, vs: ValueSets, name: str, window, done: bool = True,
           reported: bool = True) -> Evidence | None:
    """Done, reported or ordered in the episode: the latest such entry (`done`, `reported`: whether those kinds count;
    an order always does). A kind is read only when some entry of it is filed under the code: most charts hold few
    procedures and no report or order."""
    found = done_in_episode(entries, vs, name, window) if done and name in entries.procedures else []
    if reported and name in entries.reports:
        found += reported_in_episode(entries, vs, name, window)
    if name in entries.orders:
        found += ordered_in_episode(entries, vs, name, window)
    return latest_of(found) if found else None


def the_operation(found, window, vs: ValueSets) -> Evidence | None:
    """The earliest done decompression dated in the episode (an undated one never makes operated)."""
    if not found:                   # most charts: no decompression on record
        return None
    dated = [(when, p) for p, when in found if p.status == "completed" and when and in_window(when, window)]
    if not dated:
        return None
    when, p = min(dated, key=lambda item: (item[0], item[1].id or ""))
    return evidence(p, p.code, when, vs)


def earlier_operation(found, window, vs: ValueSets) -> Evidence | None:
    """The latest dated done decompression before the episode's window."""
    if window is None or not found:
        return None
    dated = [(when, p) for p, when in found if p.status == "completed" and when and when < window]
    if not dated:
        return None
    when, p = max(dated, key=lambda item: (item[0], item[1].id or ""))
    return evidence(p, p.code, when, vs)


def undated_decompression(found, vs: ValueSets) -> Evidence | None:
    if not found:
        return None
    undated = sorted((p for p, when in found if p.status == "completed" and when is None), key=lambda p: p.id or "")
    return evidence(undated[0], undated[0].code, None, vs, f"{label_of(undated[0].code, vs)}, without a date") if undated else None


def decompressions_in_progress(found, vs: ValueSets) -> tuple[tuple[dt.datetime, Evidence], ...]:
    if not found:
        return ()
    return tuple((when, evidence(p, p.code, when, vs, f"{label_of(p.code, vs)} (in progress)"))
                 for p, when in found if p.status == "in-progress" and when)


def radiotherapy_since(entries: Entries, vs: ValueSets, since: dt.datetime | None, window,
                       ever: bool = False) -> Evidence | None:
    """A radiotherapy Procedure given on or after `since` (undated counts), or a radiotherapy order in the
    episode whatever its date; `ever`: any radiotherapy on record counts."""
    found = []
    for p, when in entries.procedures.get("radiotherapy", ()):
        if p.status in RADIOTHERAPY_GIVEN and (ever or when is None or since is None or when.date() >= since.date()):
            found.append((when, evidence(p, p.code, when, vs)))
    if "radiotherapy" in entries.orders:
        found += ordered_in_episode(entries, vs, "radiotherapy", None if ever else window)
    return latest_of(found)


# --- dexamethasone ---------------------------------------------------------------------------------------

def medication_concept(resource, medications: dict[str, object]):
    """medicationCodeableConcept, or the code of the Medication it references (contained, or sent)."""
    if resource.medicationCodeableConcept is not None:
        return resource.medicationCodeableConcept
    ref = resource.medicationReference.reference if resource.medicationReference else None
    if not ref:
        return None
    if ref.startswith("#"):
        contained = {c.id: c for c in resource.contained or () if c.get_resource_type() == "Medication"}
        medication = contained.get(ref[1:])
    else:
        medication = medications.get(named_resource(ref))        # a version of it names the Medication too
    return medication.code if medication is not None else None


def route_words(resource) -> str:
    """The words of the dosage routes: an administration's one dosage, an order's dosage lines (each type has only its
    own element: reading the other's, absent, was a first read of an element for nothing)."""
    if resource.get_resource_type() == "MedicationAdministration":
        dosages = () if resource.dosage is None else (resource.dosage,)
    else:
        dosages = resource.dosageInstruction or ()
    words = []
    for d in dosages:
        if d.route is not None:
            words += [d.route.text or ""] + [c.display or "" for c in d.route.coding or ()]
    return " ".join(words)


def names_local_form(words: str) -> bool:
    """Whether the words name a topical or local form (NOT_SYSTEMIC). The search costs ~10 µs a name, and the same
    product names and routes come back chart after chart: a short one's answer is remembered (a pure function of
    the words; at most REMEMBERED_WORDS of at most REMEMBERED_LENGTH characters)."""
    return _local_form(words) if len(words) <= REMEMBERED_LENGTH else NOT_SYSTEMIC.search(words) is not None


REMEMBERED_WORDS, REMEMBERED_LENGTH = 1024, 256


@functools.lru_cache(maxsize=REMEMBERED_WORDS)
def _local_form(words: str) -> bool:
    return NOT_SYSTEMIC.search(words) is not None


def names_dexamethasone(names: list[str], route: str, coded: bool) -> bool:
    """The words of a medication (its text and displays) and its route: systemic single-ingredient
    dexamethasone? `coded`: a coding is in the dexamethasone set (the words then only exclude)."""
    if names_local_form(route) or any(map(names_local_form, names)):
        return False
    if coded:
        return True
    named = [n for n in names if DEXAMETHASONE_WORD.search(n)]
    return bool(named) and not any(SECOND_INGREDIENT.search(n) for n in named)


def dexamethasone_concept(resource, medications: dict[str, object], vs: ValueSets):
    """The medication's concept when it is systemic, single-ingredient dexamethasone (a coding in the set, else the
    word in the text or a display; never when the words or the dosage route name a topical form or a second
    ingredient), else None: the counted entry's label reads the same concept."""
    concept = medication_concept(resource, medications)
    if concept is None:
        return None
    names = [concept.text or ""] + [c.display or "" for c in concept.coding or ()]
    return concept if names_dexamethasone(names, route_words(resource), in_set(concept, vs["dexamethasone"])) else None


def milligrams(quantity) -> float | None:
    if quantity is None or quantity.value is None:
        return None
    unit = (quantity.code or quantity.unit or "").strip().lower()
    factor = MILLIGRAMS_IN.get(unit)
    return float(quantity.value) * factor if factor is not None else None


DOSE_QUANTITY = attrgetter("doseQuantity")
MILLIGRAMS_IN = {"mg": 1.0, "g": 1000.0, "ug": 0.001, "mcg": 0.001}     # a dose's unit -> milligrams in one


PERIOD_DAYS = {"s": 1 / 86400, "min": 1 / 1440, "h": 1 / 24, "d": 1.0, "wk": 7.0, "mo": 30.4375, "a": 365.25}


def dosage_daily_mg(dosage) -> float | None:
    """The daily dose a structured dosage line of the record states (line_daily_mg), else None."""
    repeat = dosage.timing.repeat if dosage.timing else None
    if repeat is None:
        return None
    return line_daily_mg(map(milligrams, map(DOSE_QUANTITY, dosage.doseAndRate or ())), repeat.frequency,
                         repeat.period, repeat.periodUnit, repeat.count)


def line_daily_mg(doses: Iterable[float | None], frequency, period, period_unit, count) -> float | None:
    """The daily dose one dosage line states in structured form (pathway.md section 4: doseAndRate with timing.repeat,
    in mg), the one rule of an order on record (dosage_daily_mg) and of a draft (orders._dosage_lines, section 5).
    `doses`: its doseAndRate's doseQuantity, each in mg or None (not in mg, or none); the first in mg is the line's
    dose (a line of [2 tablets, 8 mg] states 8 mg). A day's dose: the dose times timing.repeat's frequency per period
    (one dose when less often than daily: "every 2 days"), or the dose when repeat gives a count only; else None."""
    for dose in doses:
        if dose is not None:
            break
    else:
        return None
    days = PERIOD_DAYS.get(period_unit) if isinstance(period_unit, str) else None
    if frequency and period and days:
        per_day = float(frequency) / (float(period) * days)
        return dose * per_day if per_day >= 1 else dose
    return dose if count else None


def daily_dose_mg(resource) -> float | None:
    """The highest daily dose an order or administration states; None when a line states none (unless one states
    more than 16 mg: course_dose)."""
    if resource.get_resource_type() == "MedicationAdministration":
        return milligrams(resource.dosage.dose) if resource.dosage is not None else None
    known, unknown = [], False
    for line in resource.dosageInstruction or ():
        dose = dosage_daily_mg(line)
        if dose is None:
            unknown = True
        else:
            known.append(dose)
    return course_dose(known, unknown)      # the course's rule, over the order's lines


def dexamethasone_course(record: PatientRecord, vs: ValueSets, window) -> Dexamethasone | None:
    """Ongoing or given dexamethasone in the episode, its course start and highest stated daily dose."""
    sent = record.of("Medication")
    medications = dict(zip(map(ref_of, sent), sent))
    counted = []
    for m in record.of("MedicationRequest"):
        if m.intent not in ORDER_INTENTS or m.doNotPerform is True:
            continue
        if m.status not in MEDICATION_COUNTED:
            continue
        when = medication_request_date(m)
        if in_window(when, window) and (concept := dexamethasone_concept(m, medications, vs)) is not None:
            counted.append((when, m, m.status in MEDICATION_ONGOING, concept))
    for a in record.of("MedicationAdministration"):
        when = administration_date(a)
        if (a.status in ADMINISTRATION_GIVEN and in_window(when, window)
                and (concept := dexamethasone_concept(a, medications, vs)) is not None):
            counted.append((when, a, False, concept))
    if not counted:
        return None
    if len(counted) > 1:            # most charts count one entry, or none
        counted.sort(key=course_order)
    entries, known, dated, ongoing, unknown = [], [], [], False, False
    for when, r, is_ongoing, concept in counted:        # one pass: a course is read once, entry by entry
        entries.append(evidence(r, concept, when, vs, f"{label_of(concept, vs)} ({_medication_state(r)})"))
        dose = daily_dose_mg(r)
        if dose is None:
            unknown = True
        else:
            known.append(dose)
        if when:
            dated.append(when)
        ongoing = ongoing or is_ongoing
    return Dexamethasone(tuple(entries), ongoing, day_of(min(dated)) if dated else None, course_dose(known, unknown))


def course_order(item: tuple) -> tuple:
    """The order of a course's counted entries: by date (undated last), ties by id."""
    return item[0] or LATEST, item[1].id or ""


def course_dose(known: list[float], unknown: bool) -> float | None:
    """The highest daily dose above 16 mg on some entry; else the highest stated, when every entry states one."""
    highest = max(known, default=None)      # above 16 mg, it is the highest above 16 mg
    return highest if highest is not None and (highest > MODERATE_DAILY_DOSE_MG or not unknown) else None


def _medication_state(resource) -> str:
    if resource.get_resource_type() == "MedicationAdministration":
        return "given"
    return ORDER_STATES.get(resource.status, resource.status)


ORDER_STATES = {"active": "active order", "on-hold": "order on hold", "completed": "completed order",
                "stopped": "stopped order"}


# --- observations: status, scores, deterioration --------------------------------------------------------

OBSERVATION_CONCEPTS = ("ambulatory-status", "lower-extremity-motor-score", "joa-score", "rapid-deterioration",
                        "pregnancy-status")
OBSERVED_CONCEPTS = frozenset(OBSERVATION_CONCEPTS)
Readings = dict   # value-set name -> [(time, Observation)], oldest first


def readings_by_concept(record: PatientRecord, vs: ValueSets) -> Readings:
    """Counting, dated observations by the value set of their code, oldest first (ties by id): one pass."""
    found: Readings = {name: [] for name in OBSERVATION_CONCEPTS}
    for o in record.of("Observation"):
        if o.status in OBSERVATION_EXCLUDED:
            continue
        names = OBSERVED_CONCEPTS.intersection(sets_holding(o.code, vs))
        when = observation_date(o) if names else None
        for name in names if when else ():
            found[name].append((when, o))
    for series in found.values():
        if len(series) > 1:         # most concepts have no reading or one: nothing to sort
            series.sort(key=oldest_first)
    return found


def oldest_first(reading: tuple) -> tuple:
    """The order of a concept's readings: by time, ties by id."""
    return reading[0], reading[1].id or ""


def walking_value(o) -> str | None:
    for system, code in codings(o.valueCodeableConcept):
        if system == LOCAL and code in AMBULATORY_VALUES:
            return code
    return None


Walking = list   # [(time, Observation, its walking value)], oldest first


def walking_readings(readings: Readings) -> Walking:
    """The ambulatory-status readings that say how the patient walks, each value read once (the status and the
    deterioration both read them)."""
    return [(when, o, v) for when, o in readings["ambulatory-status"] for v in [walking_value(o)] if v]


def number(o, low: float, high: float) -> float | None:
    """valueQuantity or valueInteger within [low, high]; else None."""
    value = None
    if o.valueQuantity is not None and o.valueQuantity.value is not None:
        value = float(o.valueQuantity.value)
    elif o.valueInteger is not None:
        value = float(o.valueInteger)
    return value if value is not None and low <= value <= high else None


def motor_score(o) -> float | None:
    """0-50; without a value, the sum of the components when each lies in 0-25."""
    if o.valueQuantity is not None or o.valueInteger is not None:
        return number(o, 0, 50)
    parts = []
    for comp in o.component or ():
        value = comp.valueQuantity.value if comp.valueQuantity is not None else comp.valueInteger
        if value is None or not 0 <= float(value) <= 25:
            return None
        parts.append(float(value))
    return sum(parts) if parts else None


def reading(o, value_words: str, when: dt.datetime, vs: ValueSets) -> Evidence:
    return Evidence(ref_of(o), f"{label_of(o.code, vs)}: {value_words}", day_of(when))


def worsenings(series: list[tuple[dt.datetime, object, float]], worse) -> list[tuple[dt.datetime, tuple[Evidence, ...]]]:
    """Each later reading that is worse than some reading at most RAPID_PAIR before it: (its time, the pair).

    `series` is (time, evidence-maker, value) oldest first; `worse(earlier_best, later)` compares the later value
    with the best earlier value of the window, kept by a monotonic deque (one pass: linear)."""
    found, window = [], deque()      # (time, value, index) with values decreasing from the left
    for i, (when, make, value) in enumerate(series):
        while window and when - window[0][0] > RAPID_PAIR:
            window.popleft()
        if window and worse(window[0][1], value):
            found.append((when, (series[window[0][2]][1], make)))
        while window and window[-1][1] <= value:
            window.pop()
        window.append((when, value, i))
    return found


@set_at_once
@dataclass(frozen=True)
class Deterioration:
    """The signs of rapid deterioration on record, ready to be judged at any moment in O(signs)."""
    stated: tuple[tuple[dt.datetime, bool, Evidence], ...]   # conditions: (later of start/recorded, current-able, ev)
    flag: tuple[dt.datetime, Evidence] | None                # the latest flag observation, when it says true
    latest_pairs: tuple[tuple[dt.datetime, tuple[Evidence, ...]], ...]   # per series: the pair ending at its latest
    first_sign: tuple[dt.datetime, tuple[Evidence, ...]] | None           # the earliest sign dated in the episode

    def current(self, now: dt.datetime) -> tuple[Evidence, ...]:
        recent = shift(now, -RAPID_RECENT)
        found: list[Evidence] = ([ev for when, able, ev in self.stated if able and when >= recent]
                                 if self.stated else [])
        if self.flag and self.flag[0] >= recent:
            found.append(self.flag[1])
        for when, pair in self.latest_pairs:
            if when >= recent:
                found += pair
        return tuple(found)

    def lapsed(self, now: dt.datetime) -> tuple[Evidence, ...]:
        """A sign that held in the episode more than RAPID_RECENT ago: the earliest one names it."""
        if self.first_sign and self.first_sign[0] < shift(now, -RAPID_RECENT):
            return self.first_sign[1]
        return ()


def deterioration(readings: Readings, walking: Walking, vs: ValueSets, problems: Coded, window) -> Deterioration:
    stated, in_episode = [], []
    for c, (start, _) in problems.get("rapid-deterioration", ()):
        dates = [d for d in (start, instant(c.recordedDate)) if d]
        if not dates:
            continue
        when = max(dates)
        able = is_active(c) and not any(getattr(c, f"abatement{kind}") is not None for kind in ABATEMENT_FORMS)
        ev = evidence(c, c.code, when, vs)
        stated.append((when, able, ev))
        if in_window(when, window):
            in_episode.append((when, (ev,)))
    flags = [(when, o) for when, o in readings["rapid-deterioration"]
             if o.valueBoolean is not None]
    for when, o in flags:
        if o.valueBoolean and in_window(when, window):
            in_episode.append((when, (reading(o, "yes", when, vs),)))
    flag = None
    if flags and flags[-1][1].valueBoolean:
        when, o = flags[-1]
        flag = (when, reading(o, "yes", when, vs))

    # Each reading as (observation, words, time): made Evidence only when a worsening names it (said_once).
    walking_series = [(when, (o, WALKING_WORDS[v], when), 0.0 if v == "non-ambulatory" else 1.0)
                      for when, o, v in walking]
    motor_series = [(when, (o, f"{m:g} of 50", when), m)
                    for when, o in readings["lower-extremity-motor-score"]
                    for m in [motor_score(o)] if m is not None]
    said = said_once(vs)
    latest_pairs = []
    for series, worse in ((walking_series, stopped_walking), (motor_series, motor_dropped)):
        pairs = worsenings(series, worse)
        if pairs:
            in_episode += [(when, said(pair)) for when, pair in pairs if in_window(when, window)]
        if pairs and series and pairs[-1][0] == series[-1][0] and pairs[-1][1][1] is series[-1][1]:
            latest_pairs.append((pairs[-1][0], said(pairs[-1][1])))
    first = min(in_episode, key=lambda item: (item[0], item[1][0].ref)) if in_episode else None
    return Deterioration(tuple(stated), flag, tuple(latest_pairs), first)


def said_once(vs: ValueSets):
    """A pair of readings, each (observation, words, time), as Evidence; a reading named by several pairs is made
    into Evidence once. Only the readings a worsening names are: a chart may hold thousands, and few worsenings."""
    made: dict[int, Evidence] = {}

    def pair_evidence(pair: tuple) -> tuple[Evidence, ...]:
        found = []
        for item in pair:
            ev = made.get(id(item))
            if ev is None:
                o, words, when = item
                ev = made[id(item)] = reading(o, words, when, vs)
            found.append(ev)
        return tuple(found)
    return pair_evidence


def stopped_walking(best: float, later: float) -> bool:
    """A worsening of the walking series: able to walk (1.0), then not (0.0)."""
    return best > 0 and later == 0


def motor_dropped(best: float, later: float) -> bool:
    """A worsening of the motor series: MOTOR_DROP points or more lost."""
    return best - later >= MOTOR_DROP


ABATEMENT_FORMS = ("DateTime", "Age", "Period", "Range", "String")
WALKING_WORDS = {"ambulatory": "walks unaided", "ambulatory-with-assistance": "walks with assistance",
                 "non-ambulatory": "cannot walk"}


def ambulatory_status(walking: Walking, vs: ValueSets, problems: Coded) -> tuple[str | None, Evidence | None]:
    """The latest ambulatory-status observation; without one, a complete paraplegia means non-ambulatory."""
    if walking:
        when, o, value = walking[-1]
        return value, reading(o, WALKING_WORDS[value], when, vs)
    paraplegia = sorted(((c, start) for c, (start, _) in problems.get("non-ambulatory-deficit", ()) if is_active(c)),
                        key=by_entry_id)
    if paraplegia:
        c, start = paraplegia[0]
        return "non-ambulatory", evidence(c, c.code, start, vs)
    return None, None


def joa_score(readings: Readings, vs: ValueSets) -> tuple[float, Evidence] | None:
    scored = [(when, o, s) for when, o in readings["joa-score"] for s in [number(o, 0, 11)]
              if s is not None]
    if not scored:
        return None
    when, o, score = scored[-1]
    return score, reading(o, f"{score:g} of 11", when, vs)


# --- population ------------------------------------------------------------------------------------------

def birth(record: PatientRecord) -> dt.datetime | None:
    return instant(getattr(record.patient, "birthDate", None)) if record.patient is not None else None


def is_deceased(record: PatientRecord) -> bool:
    """The Patient read says deceased, or its JSON did when it was left out as invalid (record.says_deceased)."""
    return record.deceased_as_sent or (record.patient is not None and says_deceased(record.patient, getattr))


def age_on(born: dt.datetime | None, today: dt.date) -> int | None:
    if born is None:
        return None
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


def multilevel_thoracic(levels: Iterable[str]) -> bool:
    """Two or more of the levels from T5 to T10 (vertebral level names, as levels_of gives)."""
    return len(MULTILEVEL_SPAN.intersection(levels)) >= 2


MULTILEVEL_SPAN = frozenset(LEVELS[level_rank(MULTILEVEL_THORACIC[0]):level_rank(MULTILEVEL_THORACIC[1]) + 1])


@set_at_once
@dataclass(frozen=True)
class Pregnancy:
    """Pregnancy conditions (start, evidence) and the pregnancy-status answers (time, pregnant?, evidence)."""
    conditions: tuple[tuple[dt.datetime, Evidence], ...]           # latest first
    statuses: tuple[tuple[dt.datetime, bool, Evidence], ...]      # oldest first

    def at(self, now: dt.datetime) -> Evidence | None:
        since = shift(now, -PREGNANCY_SPAN)
        latest = self.statuses[-1] if self.statuses else None
        if latest and latest[1] and latest[0] >= since:
            return latest[2]
        for start, ev in self.conditions:             # latest first
            if start >= since and not (latest and latest[0] > start and not latest[1]):
                return ev
        return None


def pregnancy(readings: Readings, vs: ValueSets, problems: Coded) -> Pregnancy:
    found = []
    for c, (start, _) in problems.get("pregnancy", ()):
        if start and is_active(c):
            found.append((start, evidence(c, c.code, start, vs)))
    answers = readings["pregnancy-status"]
    statuses = tuple((when, in_set(o.valueCodeableConcept, vs["pregnancy-status-pregnant"]),
                      reading(o, label_of(o.valueCodeableConcept, vs), when, vs))
                     for when, o in answers if o.valueCodeableConcept) if answers else ()
    if len(found) > 1:
        found.sort(key=latest_order, reverse=True)
    return Pregnancy(tuple(found), statuses)


def minor_trauma(problems: Coded, vs: ValueSets, episode_start: dt.datetime | None) -> Evidence | None:
    """An injury starting in the INJURY_BEFORE_EPISODE before the episode start (undated: never)."""
    if episode_start is None:
        return None
    found = []
    for c, (start, _) in problems.get("injury", ()):
        if start and shift(episode_start, -INJURY_BEFORE_EPISODE) <= start <= episode_start:
            found.append((start, evidence(c, c.code, start, vs)))
    return latest_of(found)


# --- the chart, whatever the moment; then the moment of a call -------------------------------------------

@set_at_once
@dataclass(frozen=True)
class ChartFacts:
    """What the record says whatever the moment, and what the clock-dependent facts are computed from."""
    facts: Facts
    born: dt.datetime | None = None
    deterioration: Deterioration | None = None
    pregnancy: Pregnancy | None = None
    in_progress: tuple[tuple[dt.datetime, Evidence], ...] = ()


def out_of_scope(common: dict, reason: str, deceased: bool = False) -> ChartFacts:
    return ChartFacts(Facts(in_pathway=False, scope_reason=reason, deceased=deceased, **common))


def chart_facts(record: PatientRecord, vs: ValueSets) -> ChartFacts:
    common = dict(patient_ref=f"Patient/{record.patient_id}", unavailable=record.unavailable, left_out=record.left_out)
    if is_deceased(record):
        return out_of_scope(common, "the patient is deceased", deceased=True)
    born = birth(record)
    conditions = dated_conditions(record, born)
    problems = by_value_set(conditions, vs)
    episode = the_episode(problems.get("spinal-cord-compression", ()))
    if episode is None:
        return out_of_scope(common, "no spinal cord compression on record")
    compression, (start, source) = episode
    compression_levels = levels_of(compression, vs)
    # One pass over the vertebral hemangiomas: every one's levels, and those of the compression's lesion (each
    # with its start and levels) and their levels.
    vertebral, hemangioma_levels, lesion_levels, lesion, every_level = False, set(), [], [], set(compression_levels)
    for h, when in coded_hemangiomas(conditions, problems):
        if is_vertebral_hemangioma(h, vs):
            vertebral = True
            levels = levels_of(h, vs)
            hemangioma_levels |= levels
            if same_lesion(levels, compression_levels):
                lesion_levels.append((h, when, levels))
                lesion.append(h)
                every_level |= levels
    if not vertebral:
        return out_of_scope(common, "no vertebral hemangioma on record")
    if not lesion:
        return out_of_scope(common, f"the hemangioma and the compression ({', '.join(sorted_levels(compression_levels))})"
                                    " lie more than one level apart")

    window = episode_window(start, source)
    entries = entries_of(record, vs, born)
    found = entries.procedures.get("decompression-surgery", [])
    operation = the_operation(found, window, vs)
    earlier = earlier_operation(found, window, vs)
    recurrent_status = is_recurrent(compression) or any(map(is_recurrent, lesion))
    if operation is not None:
        stage, recurrence = "post-operative", False
    elif not is_active(compression):
        return out_of_scope(common, "the compression is not active and was not operated in this episode")
    else:
        recurrence = earlier is not None or recurrent_status
        if not recurrence and not any(map(is_active, lesion)):
            return out_of_scope(common, "the hemangioma is not active and this is not a recurrence")
        stage = "pre-operative"
    speaking, (speaking_start, _), _ = speaking_hemangioma(lesion_levels)
    if operation is not None:
        radiotherapy = radiotherapy_since(entries, vs, instant_of(operation), window)
    elif earlier is not None:
        radiotherapy = radiotherapy_since(entries, vs, instant_of(earlier), window)
    else:
        radiotherapy = radiotherapy_since(entries, vs, None, window, ever=True)
    causes = problems.get("competing-cause")
    competing = tuple(evidence(c, c.code, when, vs) for c, (when, _) in sorted(causes, key=by_entry_id)
                      if is_active(c)) if causes else ()
    readings = readings_by_concept(record, vs)
    walking = walking_readings(readings)
    status, status_evidence = ambulatory_status(walking, vs, problems)
    hemangioma = evidence(speaking, speaking.code, speaking_start, vs)
    facts = Facts(
        in_pathway=True,
        stage=stage,
        recurrence=recurrence,
        episode_start=day_of(start),
        episode_start_from=source,
        window_start=day_of(window),
        hemangioma=hemangioma,
        hemangioma_ref=hemangioma.ref,
        hemangioma_verification=status_code(speaking.verificationStatus, VERIFICATION_STATUS) or "confirmed",
        compression=evidence(compression, compression.code, start, vs),
        compression_verification=status_code(compression.verificationStatus, VERIFICATION_STATUS) or "confirmed",
        competing=competing,
        levels=sorted_levels(every_level),
        multilevel_thoracic=multilevel_thoracic(hemangioma_levels),
        surgery=operation,
        earlier_operation=earlier,
        undated_decompression=undated_decompression(found, vs),
        decompression_ordered=workup(entries, vs, "decompression-surgery", window, done=False, reported=False),
        posterior_fixation=workup(entries, vs, "posterior-stabilization", window, reported=False),
        embolization=workup(entries, vs, "embolization", window, reported=False),
        radiotherapy=radiotherapy,
        mri_entire_spine=workup(entries, vs, "mri-entire-spine", window),
        mri_thoracic=workup(entries, vs, "mri-thoracic-spine", window),
        spine_cta=workup(entries, vs, "spine-ct-angiography", window),
        ambulatory_status=status,
        ambulatory_evidence=status_evidence,
        dexamethasone=dexamethasone_course(record, vs, window),
        injury=minor_trauma(problems, vs, start),
        joa=joa_score(readings, vs),
        **common,
    )
    return ChartFacts(facts, born, deterioration(readings, walking, vs, problems, window),
                      pregnancy(readings, vs, problems), decompressions_in_progress(found, vs))


def speaking_hemangioma(lesion_levels: list[tuple]) -> tuple:
    """The hemangioma of the lesion the facts name, (Condition, (start, source), levels): active first, then
    confirmed, then the latest start, then the lowest id; the lesion's one hemangioma (most charts) without ranking."""
    if len(lesion_levels) == 1:
        return lesion_levels[0]
    return min(lesion_levels, key=lambda item: (
        not is_active(item[0]), status_code(item[0].verificationStatus, VERIFICATION_STATUS) in UNCONFIRMED_VERIFICATION,
        -((item[1][0] or EARLIEST) - EARLIEST).total_seconds(), item[0].id or ""))


def instant_of(ev: Evidence) -> dt.datetime | None:
    return midnight_utc(ev.when.year, ev.when.month, ev.when.day) if ev and ev.when else None


Moment = tuple   # (today, rapid evidence, lapsed evidence, surgery under way, pregnancy)


def moment(chart: ChartFacts, now: dt.datetime) -> Moment:
    """All that facts_at reads of the clock, in a few small steps: calls with equal moments get equal facts
    (the engine keeps the cards of a chart by its moment)."""
    today = now.date()
    if not chart.facts.in_pathway:
        return today, (), (), None, None
    rapid = chart.deterioration.current(now)
    under_way = ([ev for when, ev in chart.in_progress if shift(now, -SURGERY_UNDER_WAY) <= when]
                 if chart.in_progress else ())        # most charts: no decompression in progress
    return (today, rapid, () if rapid else chart.deterioration.lapsed(now),
            min(under_way, key=lambda ev: ev.ref) if under_way else None, chart.pregnancy.at(now))


def facts_at(chart: ChartFacts, now: dt.datetime, at: Moment | None = None) -> Facts:
    """The chart's facts at the moment of a call; `at`: moment(chart, now), when the caller has worked it out."""
    today, rapid, lapsed, under_way, pregnant = moment(chart, now) if at is None else at
    f = chart.facts
    if not f.in_pathway:
        return with_moment(f, today=today)
    dex = f.dexamethasone
    return with_moment(f, today=today, rapid_deterioration=bool(rapid), rapid_evidence=rapid,
                   deterioration_lapsed=bool(lapsed), lapsed_evidence=lapsed, surgery_under_way=under_way,
                   dexamethasone_days=(today - dex.course_start).days if dex and dex.course_start else None,
                   age=age_on(chart.born, today), pregnancy=pregnant)


def with_moment(f: Facts, **moment_facts) -> Facts:
    """dataclasses.replace(f, **moment_facts) without its loop over Facts' 45 fields in Python (~10 times the cost;
    facts_at runs at every call). Facts has no __post_init__ to run again."""
    if not MOMENT_FIELDS.issuperset(moment_facts):
        raise TypeError(f"not facts of the moment: {sorted(set(moment_facts) - MOMENT_FIELDS)}")
    finished = object.__new__(Facts)
    finished.__dict__.update(f.__dict__, **moment_facts)
    return finished


MOMENT_FIELDS = frozenset({"today", "rapid_deterioration", "rapid_evidence", "deterioration_lapsed", "lapsed_evidence",
                           "surgery_under_way", "dexamethasone_days", "age", "pregnancy"})


def derive_facts(record: PatientRecord, vs: ValueSets, now: dt.datetime) -> Facts:
    return facts_at(chart_facts(record, vs), now)
