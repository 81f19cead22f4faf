"""Facts of pathway.md section 3, derived from a PatientRecord at a given moment. Pure."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from typing import Iterable

from service.clinical.valuesets import LOCAL, SPINE_WORDS, LEVEL_PATTERN, ValueSets, codings, in_set, level_rank
from service.clinical.record import LeftOut, PatientRecord

ACTIVE_CLINICAL = {None, "active", "recurrence", "relapse"}
EXCLUDED_VERIFICATION = {"refuted", "entered-in-error"}
UNCONFIRMED_VERIFICATION = {"provisional", "differential", "unconfirmed"}
FINAL_REPORT = {"final", "amended", "corrected", "appended"}
RADIOTHERAPY_PROCEDURE = {"preparation", "in-progress", "on-hold", "stopped", "completed"}
RADIOTHERAPY_REQUEST = {"active", "completed"}
AMBULATORY_VALUES = ("ambulatory", "ambulatory-with-assistance", "non-ambulatory")
RAPID_WINDOW = dt.timedelta(hours=72)
RECENT = dt.timedelta(days=7)
MOTOR_DROP = 5
STEROID_COURSE_DAYS = 13          # 3 days at 96 mg + a 10-day taper
PEDIATRIC_AGE = 18


@dataclass(frozen=True)
class Evidence:
    """A record entry that made a fact true: shown to the clinician as 'why am I seeing this'."""
    ref: str
    label: str
    when: dt.date | None = None

    def describe(self) -> str:
        date = f", {self.when.isoformat()}" if self.when else ""
        return f"{self.ref.split('/')[0]} '{self.label}'{date} ({self.ref})"


@dataclass(frozen=True)
class Facts:
    patient_ref: str
    in_pathway: bool
    hemangioma: Evidence | None = None
    hemangioma_ref: str = ""
    hemangioma_verification: str = "confirmed"
    hemangioma_recurrence: bool = False
    compression: Evidence | None = None
    levels: tuple[str, ...] = ()
    rapid_deterioration: bool = False
    rapid_evidence: tuple[Evidence, ...] = ()
    ambulatory_status: str | None = None
    ambulatory_evidence: Evidence | None = None
    operated: bool = False
    surgery: Evidence | None = None
    posterior_fixation: Evidence | None = None
    vertebroplasty: Evidence | None = None
    embolization: Evidence | None = None
    radiotherapy: Evidence | None = None
    mri_entire_spine: Evidence | None = None
    mri_thoracic: Evidence | None = None
    spine_cta: Evidence | None = None
    dexamethasone: Evidence | None = None
    dexamethasone_days: int | None = None
    age: int | None = None
    pregnancy: Evidence | None = None
    joa: tuple[float, Evidence] | None = None
    today: dt.date | None = None
    unavailable: frozenset[str] = frozenset()
    left_out: tuple[LeftOut, ...] = ()

    @property
    def pre_operative(self) -> bool:
        return self.in_pathway and not self.operated

    @property
    def pediatric(self) -> bool:
        return self.age is not None and self.age < PEDIATRIC_AGE

    @property
    def days_since_surgery(self) -> int | None:
        if self.surgery and self.surgery.when and self.today:
            return (self.today - self.surgery.when).days
        return None

    @property
    def steroid_course_exceeded(self) -> bool:
        return self.dexamethasone_days is not None and self.dexamethasone_days > STEROID_COURSE_DAYS


@dataclass(frozen=True)
class RapidDeterioration:
    stated: tuple[Evidence, ...]                                      # true whenever the call comes
    worsening: tuple[tuple[tuple[dt.datetime, tuple[Evidence, ...]], ...], ...]   # per series: (later reading's time, pair)

    def at(self, now: dt.datetime) -> tuple[Evidence, ...]:
        """The evidence at `now`: what is stated, then per series the first pair whose later reading is recent."""
        evidence = list(self.stated)
        for pairs in self.worsening:
            evidence += next((pair for when, pair in pairs if now - when <= RECENT), ())
        return tuple(evidence)


@dataclass(frozen=True)
class ChartFacts:
    """What the record says whatever the moment: the Facts without the fields that depend on the clock,
    and what those fields are computed from. facts_at finishes them for one call, so a chart that comes back
    unchanged is derived once (the engine keeps ChartFacts by the record's exact JSON)."""
    facts: Facts
    birth_date: dt.date | None = None
    dexamethasone: tuple[tuple[dt.datetime | None, Evidence], ...] = ()   # (start, evidence minus its date)
    rapid: RapidDeterioration | None = None


# --- small readers over fhir.resources models -------------------------------------------------

def as_datetime(value) -> dt.datetime | None:
    """FHIR date/dateTime (model value or string, possibly partial) -> aware datetime."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day, tzinfo=dt.timezone.utc)
    text = str(value)
    for fmt, size in (("%Y-%m-%d", 10), ("%Y-%m", 7), ("%Y", 4)):
        try:
            return dt.datetime.strptime(text[:size], fmt).replace(tzinfo=dt.timezone.utc)
        except ValueError:
            continue
    return None


def _date(value) -> dt.date | None:
    moment = as_datetime(value)
    return moment.date() if moment else None


def _status(concept) -> str | None:
    found = codings(concept)
    return found[0][1] if found else None


def label_of(concept) -> str:
    if concept is None:
        return "uncoded"
    if concept.text:
        return concept.text
    for c in concept.coding or []:
        if c.display:
            return c.display
    found = codings(concept)
    return found[0][1] if found else "uncoded"


def _ref(resource) -> str:
    return f"{resource.get_resource_type()}/{resource.id}"


def _evidence(resource, concept, when) -> Evidence:
    return Evidence(_ref(resource), label_of(concept), _date(when))


def _period_start(period):
    return period.start if period else None


def clinical_onset(c):
    """When the condition began, if the record says so. recordedDate is only when it was written down."""
    return c.onsetDateTime or _period_start(c.onsetPeriod)


def condition_onset(c):
    """The date shown to the clinician: the onset, else the date it was recorded."""
    return clinical_onset(c) or c.recordedDate


def observation_time(o) -> dt.datetime | None:
    return as_datetime(o.effectiveDateTime or o.effectiveInstant or _period_start(o.effectivePeriod) or o.issued)


def procedure_time(p):
    if p.performedDateTime:
        return p.performedDateTime
    if p.performedPeriod:
        return p.performedPeriod.end or p.performedPeriod.start
    return None


# --- the derivation ---------------------------------------------------------------------------

def _current_conditions(conditions: Iterable) -> list:
    out = []
    for c in conditions:
        if _status(c.verificationStatus) in EXCLUDED_VERIFICATION:
            continue
        if _status(c.clinicalStatus) not in ACTIVE_CLINICAL:
            continue
        out.append(c)
    return out


def _is_vertebral_hemangioma(c, vs: ValueSets) -> bool:
    if in_set(c.code, vs["vertebral-hemangioma"]):
        return True
    if not in_set(c.code, vs["hemangioma-site-unspecified"]):
        return False
    if any(in_set(site, vs["spine-structure"]) for site in c.bodySite or []):
        return True
    names = [c.code.text or ""] + [cd.display or "" for cd in c.code.coding or []]
    names += [label_of(site) for site in c.bodySite or []]
    return any(SPINE_WORDS.search(n) for n in names)


def _speaking_rank(c) -> tuple:
    """Which hemangioma speaks for the patient: a confirmed one before an unconfirmed one, then the latest
    onset (the episode at hand: an operation before it did not treat it), unknown onsets last, then the id,
    so the answer never depends on the order in which the EHR sent the record."""
    onset = as_datetime(clinical_onset(c))
    return (_status(c.verificationStatus) in UNCONFIRMED_VERIFICATION, onset is None,
            -onset.timestamp() if onset else 0.0, c.id or "")


def _levels(conditions: Iterable, vs: ValueSets) -> tuple[str, ...]:
    found = []
    for c in conditions:
        for site in c.bodySite or []:
            found += [vs.levels[code] for code in codings(site) if code in vs.levels]
            found += [m.group(0).upper() for m in LEVEL_PATTERN.finditer(label_of(site))]
        texts = [c.code.text or ""] + [cd.display or "" for cd in c.code.coding or []]
        for text in texts:
            found += [m.group(0).upper() for m in LEVEL_PATTERN.finditer(text)]
    return tuple(sorted(set(found), key=level_rank))


def _local_value(concept) -> str | None:
    for system, code in codings(concept):
        if system == LOCAL and code in AMBULATORY_VALUES:
            return code
    return None


def _number(o) -> float | None:
    if o.valueQuantity is not None and o.valueQuantity.value is not None:
        return float(o.valueQuantity.value)
    if o.valueInteger is not None:
        return float(o.valueInteger)
    return None


def _usable_observations(observations, codes) -> list:
    obs = [o for o in observations if in_set(o.code, codes)
           and o.status not in {"entered-in-error", "cancelled"} and observation_time(o)]
    return sorted(obs, key=observation_time)


def _rapid_deterioration(conditions, observations, vs: ValueSets) -> "RapidDeterioration":
    """What says the neurological status worsened fast: conditions and flags that say so outright, and
    pairs of readings at most RAPID_WINDOW apart that got worse. A pair counts while its later reading is
    no older than RECENT, which only the moment of the call decides (RapidDeterioration.at)."""
    stated = [_evidence(c, c.code, condition_onset(c)) for c in conditions if in_set(c.code, vs["rapid-deterioration"])]
    for o in observations:
        if in_set(o.code, vs["rapid-deterioration"]) and o.valueBoolean is True \
                and o.status not in {"entered-in-error", "cancelled"}:
            stated.append(_evidence(o, o.code, observation_time(o)))

    def describe(o):
        value = _local_value(o.valueCodeableConcept) if o.valueCodeableConcept else _number(o)
        return f"{value:g}" if isinstance(value, float) else str(value)

    def worsening(series, worse) -> tuple:
        """(time of the later reading, the pair), for each later reading in series order that has one."""
        pairs = []
        for i, later in enumerate(series):
            t_later = observation_time(later)
            earlier = next((e for e in series[:i] if t_later - observation_time(e) <= RAPID_WINDOW and worse(e, later)), None)
            if earlier is not None:
                pairs.append((t_later, tuple(Evidence(_ref(o), f"{label_of(o.code)}: {describe(o)}",
                                                      _date(observation_time(o))) for o in (earlier, later))))
        return tuple(pairs)

    walking = [o for o in _usable_observations(observations, vs["ambulatory-status"]) if _local_value(o.valueCodeableConcept)]
    motor = [o for o in _usable_observations(observations, vs["lower-extremity-motor-score"]) if _number(o) is not None]
    return RapidDeterioration(
        tuple(stated),
        (worsening(walking, lambda a, b: _local_value(a.valueCodeableConcept) != "non-ambulatory"
                   and _local_value(b.valueCodeableConcept) == "non-ambulatory"),
         worsening(motor, lambda a, b: _number(a) - _number(b) >= MOTOR_DROP)))


def _ambulatory(conditions, observations, vs: ValueSets) -> tuple[str | None, Evidence | None]:
    for c in conditions:
        if in_set(c.code, vs["non-ambulatory-deficit"]):
            return "non-ambulatory", _evidence(c, c.code, condition_onset(c))
    walking = [o for o in _usable_observations(observations, vs["ambulatory-status"]) if _local_value(o.valueCodeableConcept)]
    if walking:
        latest = walking[-1]
        value = _local_value(latest.valueCodeableConcept)
        return value, Evidence(_ref(latest), f"{label_of(latest.code)}: {value}", _date(observation_time(latest)))
    return None, None


def _latest(resources, key) -> object | None:
    dated = sorted(resources, key=lambda r: as_datetime(key(r)) or dt.datetime.min.replace(tzinfo=dt.timezone.utc))
    return dated[-1] if dated else None


def _age(born: dt.date | None, today: dt.date) -> int | None:
    if born is None:
        return None
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


def dexamethasone_start(m):
    for dosage in m.dosageInstruction or []:
        repeat = dosage.timing.repeat if dosage.timing else None
        if repeat and repeat.boundsPeriod and repeat.boundsPeriod.start:
            return repeat.boundsPeriod.start
    return m.authoredOn


def derive_facts(record: PatientRecord, vs: ValueSets, now: dt.datetime) -> Facts:
    return facts_at(chart_facts(record, vs), now)


Moment = tuple   # (today, recent worsening evidence, index of the dexamethasone course counted, or None)


def moment(chart: ChartFacts, now: dt.datetime) -> Moment:
    """All that facts_at reads of `now`: two calls with equal moments get equal Facts (the engine keeps the
    cards of a chart by its moment)."""
    if not chart.facts.in_pathway:
        return now.date(), (), None
    courses = chart.dexamethasone
    course = min(range(len(courses)), key=lambda i: courses[i][0] or now, default=None)
    return now.date(), chart.rapid.at(now), course


def facts_at(chart: ChartFacts, now: dt.datetime) -> Facts:
    """The chart's facts at the moment of a call: today's date, durations and age, recent deterioration."""
    today, rapid, course = moment(chart, now)
    if not chart.facts.in_pathway:
        return replace(chart.facts, today=today)
    start, dex = chart.dexamethasone[course] if course is not None else (None, None)
    dex_start = start.date() if start else None
    return replace(chart.facts, today=today, rapid_deterioration=bool(rapid), rapid_evidence=rapid,
                   dexamethasone=replace(dex, when=dex_start) if dex else None,
                   dexamethasone_days=(today - dex_start).days if dex_start else None,
                   age=_age(chart.birth_date, today))


def chart_facts(record: PatientRecord, vs: ValueSets) -> ChartFacts:
    patient_ref = f"Patient/{record.patient_id}"
    conditions = _current_conditions(record.of("Condition"))
    hemangiomas = [c for c in conditions if _is_vertebral_hemangioma(c, vs)]
    compressions = [c for c in conditions if in_set(c.code, vs["spinal-cord-compression"])]
    common = dict(patient_ref=patient_ref, unavailable=record.unavailable, left_out=record.left_out)
    if not hemangiomas or not compressions:
        return ChartFacts(Facts(in_pathway=False, **common))

    hemangioma = min(hemangiomas, key=_speaking_rank)
    onset = as_datetime(clinical_onset(hemangioma))   # unknown onset: any decompression counts (pathway.md 3)
    compression = compressions[0]

    def done(rtype, concept, statuses, after=None):
        found = [r for r in record.of(rtype) if in_set(r.code, vs[concept]) and r.status in statuses]
        if after is not None:
            found = [r for r in found if (as_datetime(procedure_time(r)) or after) >= after]
        latest = _latest(found, procedure_time)
        return _evidence(latest, latest.code, procedure_time(latest)) if latest else None

    procedures_done = {"completed"}
    surgery = done("Procedure", "decompression-surgery", procedures_done, after=onset)
    imaging = {}
    for concept in ("mri-entire-spine", "mri-thoracic-spine", "spine-ct-angiography"):
        reports = [r for r in record.of("DiagnosticReport") if in_set(r.code, vs[concept]) and r.status in FINAL_REPORT]
        report = _latest(reports, lambda r: r.effectiveDateTime or r.issued)
        imaging[concept] = (_evidence(report, report.code, report.effectiveDateTime or report.issued) if report
                            else done("Procedure", concept, procedures_done))

    radiotherapy = done("Procedure", "radiotherapy", RADIOTHERAPY_PROCEDURE, after=onset)
    if radiotherapy is None:
        requests = [r for r in record.of("ServiceRequest") if in_set(r.code, vs["radiotherapy"])
                    and r.status in RADIOTHERAPY_REQUEST
                    and (onset is None or (as_datetime(r.authoredOn) or onset) >= onset)]
        request = _latest(requests, lambda r: r.authoredOn)
        radiotherapy = _evidence(request, request.code, request.authoredOn) if request else None

    dex = [m for m in record.of("MedicationRequest") if m.status == "active"
           and in_set(m.medicationCodeableConcept, vs["dexamethasone"])]

    joa_obs = _usable_observations(record.of("Observation"), vs["joa-score"])
    joa_latest = next((o for o in reversed(joa_obs) if _number(o) is not None), None)
    pregnancy = next((c for c in conditions if in_set(c.code, vs["pregnancy"])), None)
    observations = record.of("Observation")
    status, status_evidence = _ambulatory(conditions, observations, vs)
    born = _date(getattr(record.patient, "birthDate", None)) if record.patient is not None else None

    return ChartFacts(Facts(
        in_pathway=True,
        hemangioma=_evidence(hemangioma, hemangioma.code, condition_onset(hemangioma)),
        hemangioma_ref=_ref(hemangioma),
        hemangioma_verification=_status(hemangioma.verificationStatus) or "confirmed",
        hemangioma_recurrence=_status(hemangioma.clinicalStatus) in {"recurrence", "relapse"},
        compression=_evidence(compression, compression.code, condition_onset(compression)),
        levels=_levels(hemangiomas + compressions, vs),
        ambulatory_status=status,
        ambulatory_evidence=status_evidence,
        operated=surgery is not None,
        surgery=surgery,
        posterior_fixation=done("Procedure", "posterior-stabilization", procedures_done),
        vertebroplasty=done("Procedure", "vertebroplasty", procedures_done),
        embolization=done("Procedure", "embolization", procedures_done),
        radiotherapy=radiotherapy,
        mri_entire_spine=imaging["mri-entire-spine"],
        mri_thoracic=imaging["mri-thoracic-spine"],
        spine_cta=imaging["spine-ct-angiography"],
        pregnancy=_evidence(pregnancy, pregnancy.code, condition_onset(pregnancy)) if pregnancy else None,
        joa=(_number(joa_latest), _evidence(joa_latest, joa_latest.code, observation_time(joa_latest))) if joa_latest else None,
        **common,
    ), born, tuple((as_datetime(dexamethasone_start(m)), _evidence(m, m.medicationCodeableConcept, None)) for m in dex),
        _rapid_deterioration(conditions, observations, vs))
