"""The one builder of FHIR R4 test records: resources, charts, Bundles, prefetch and CDS Hooks requests.

Every resource builder takes `patient_id=` (default PATIENT_ID) and `id=` (default: a fresh automatic id).
Dates: a positive number of days is in the past, counted from NOW (a fixed moment, for pure tests) or
from `since=today()` (for tests of the running service, whose clock is the real one).
Codes are those of pathway.md section 2; the displays of the code tuples are read (spinal level).
"""
from __future__ import annotations

import datetime as dt
import itertools
import json
import uuid
from pathlib import Path

import pytest
import time_machine

from service.clinical.facts import Facts, derive_facts
from service.clinical.record import Selector, build_record
from service.clinical.valuesets import CPT, ICD10CM, LOCAL, LOINC, RXNORM, SNOMED, load_valuesets
from service.fhir.fixtures import EXPECTED_CARD_SYSTEM as EXPECTED

UCUM = "http://unitsofmeasure.org"
CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
# These tests are not about authentication: they say so explicitly.
NO_AUTH = {"AVH_CDS_AUTH": "off"}
VALUESETS = load_valuesets(Path(__file__).resolve().parent.parent / "cards" / "valuesets")
SELECTOR = Selector(VALUESETS)
NOW = dt.datetime(2026, 11, 24, 12, 0, tzinfo=dt.timezone.utc)
PATIENT_ID = "unit-1"
PRE_OP_CARDS = {"surgical-decompression", "corticosteroids", "spine-mri", "preop-cta", "preop-embolization"}
PREFETCH_TYPES = {"conditions": "Condition", "observations": "Observation", "procedures": "Procedure",
                  "medicationRequests": "MedicationRequest", "serviceRequests": "ServiceRequest",
                  "diagnosticReports": "DiagnosticReport", "medicationAdministrations": "MedicationAdministration"}

HEMANGIOMA = (SNOMED, "448232005", "Hemangioma of T7 vertebra")
HEMANGIOMA_T7_AGGRESSIVE = (SNOMED, "448232005", "Aggressive vertebral hemangioma T7")
HEMANGIOMA_OF_SPINE = (SNOMED, "448232005", "Hemangioma of vertebral column")
COMPRESSION = (SNOMED, "71286001", "Spinal cord compression")
COMPRESSION_OF_CORD = (SNOMED, "71286001", "Compression of spinal cord")
COMPRESSION_ICD = (ICD10CM, "G95.20", "Spinal cord compression")
RAPID_DEFICIT = (LOCAL, "rapidly-progressive-neurologic-deficit", "Rapidly progressive neurologic deficit")
T7 = (SNOMED, "62487009", "T7 vertebra")
T8 = (SNOMED, "11068009")

_ids = itertools.count(1)


# --- dates ------------------------------------------------------------------------------------

def today() -> dt.datetime:
    """Midnight at the start of today's date: the anchor of records for the running service."""
    return dt.datetime.combine(dt.date.today(), dt.time(), tzinfo=dt.timezone.utc)


def stay_on(day: dt.date):
    """A module-scoped autouse fixture (assign it to a module global): the clock starts at noon UTC of `day` and runs
    on from there, so a module whose records were dated from the real clock at import gets the same answers from the
    service in a run that crosses midnight UTC."""
    @pytest.fixture(scope="module", autouse=True)
    def clock_on_the_day_of_the_records():
        with time_machine.travel(dt.datetime.combine(day, dt.time(12), tzinfo=dt.timezone.utc), tick=True):
            yield
    return clock_on_the_day_of_the_records


def ago(days: float = 0, hours: float = 0, *, since: dt.datetime = NOW) -> str:
    """A dateTime this long before `since`."""
    return (since - dt.timedelta(days=days, hours=hours)).strftime("%Y-%m-%dT%H:%M:%SZ")


def day(days: int = 0, *, since: dt.datetime = NOW) -> str:
    """A date this many days before `since` (negative: after)."""
    return (since - dt.timedelta(days=days)).date().isoformat()


# --- resources --------------------------------------------------------------------------------

def concept(system: str, code: str, display: str | None = None) -> dict:
    """A CodeableConcept; a display is both the coding's display and the text."""
    coding = {"system": system, "code": code}
    if display:
        coding["display"] = display
    return {"coding": [coding], "text": display} if display else {"coding": [coding]}


def _coded(code) -> dict:
    return code if isinstance(code, dict) else concept(*code)


def _subject(patient_id: str) -> dict:
    return {"reference": f"Patient/{patient_id}"}


def _id(given: str | None, prefix: str) -> str:
    return given if given is not None else f"{prefix}{next(_ids)}"


def patient(birth_date: str = "1970-01-01", patient_id: str = PATIENT_ID, **extra) -> dict:
    return {"resourceType": "Patient", "id": patient_id, "birthDate": birth_date, **extra}


def condition(code, clinical: str | None = "active", verification: str = "confirmed", onset: str | None = None,
              sites: list[dict] | None = None, *, patient_id: str = PATIENT_ID, id: str | None = None,
              **extra) -> dict:
    """A Condition; `code` is a (system, code[, display]) tuple or a CodeableConcept."""
    res = {"resourceType": "Condition", "id": _id(id, "c"), "code": _coded(code), "subject": _subject(patient_id),
           "verificationStatus": concept(VERIFICATION, verification)}
    if clinical:
        res["clinicalStatus"] = concept(CLINICAL, clinical)
    if onset:
        res["onsetDateTime"] = onset
    if sites:
        res["bodySite"] = sites
    return {**res, **extra}


def hemangioma(code=None, sites: list[dict] | None = None, **kw) -> dict:
    """A vertebral hemangioma (SNOMED), at T8 unless sites are given."""
    return condition(code or concept(SNOMED, "448232005"), sites=[concept(*T8)] if sites is None else sites, **kw)


def compression(**kw) -> dict:
    return condition(concept(ICD10CM, "G95.20"), **kw)


def observation(code, when: str, status: str = "final", *, patient_id: str = PATIENT_ID, id: str | None = None,
                **value) -> dict:
    """An Observation; a bare string `code` is a local code (pathway.md section 2)."""
    coded = concept(LOCAL, code) if isinstance(code, str) else _coded(code)
    return {"resourceType": "Observation", "id": _id(id, "o"), "status": status, "code": coded,
            "subject": _subject(patient_id), "effectiveDateTime": when, **value}


def walking(value: str, when: str, **kw) -> dict:
    return observation("ambulatory-status", when, valueCodeableConcept=concept(LOCAL, value), **kw)


def motor(score: int, when: str, **kw) -> dict:
    return observation("lower-extremity-motor-score", when, valueQuantity={"value": score}, **kw)


def procedure(system: str, code: str, when: str | None, status: str = "completed", *, display: str | None = None,
              patient_id: str = PATIENT_ID, id: str | None = None) -> dict:
    res = {"resourceType": "Procedure", "id": _id(id, "p"), "status": status, "code": concept(system, code, display),
           "subject": _subject(patient_id)}
    if when:
        res["performedDateTime"] = when
    return res


def decompression(when: str | None, status: str = "completed", **kw) -> dict:
    return procedure(CPT, "63046", when, status, **kw)


def service_request(system: str, code: str, authored: str, status: str = "active", *, display: str | None = None,
                    patient_id: str = PATIENT_ID, id: str | None = None, **extra) -> dict:
    return {"resourceType": "ServiceRequest", "id": _id(id, "s"), "status": status, "intent": "order",
            "code": concept(system, code, display), "subject": _subject(patient_id), "authoredOn": authored,
            **extra}


def dexamethasone(start: str, status: str = "active", *, code=(RXNORM, "1116927"), dosage: list | None = None,
                  patient_id: str = PATIENT_ID, id: str | None = None, **extra) -> dict:
    """A dexamethasone order authored on `start` (with dosageInstruction only when a dosage is given)."""
    res = {"resourceType": "MedicationRequest", "id": _id(id, "m"), "status": status, "intent": "order",
           "medicationCodeableConcept": _coded(code), "subject": _subject(patient_id), "authoredOn": start}
    if dosage is not None:
        res["dosageInstruction"] = dosage
    return {**res, **extra}


def draft_order(system: str, code: str, display: str, status: str = "draft", *, patient_id: str = PATIENT_ID,
                id: str | None = None, **extra) -> dict:
    """A ServiceRequest being written today (as CDS Hooks draftOrders carry them)."""
    return service_request(system, code, day(since=today()), status, display=display, patient_id=patient_id, id=id,
                           **extra)


def draft_dexamethasone(dosage: list | None = None, status: str = "draft", *, patient_id: str = PATIENT_ID,
                        id: str | None = None, **extra) -> dict:
    """A dexamethasone order being written today, RxNorm's ingredient code, with these dosage instructions."""
    return dexamethasone(day(since=today()), status, code=(RXNORM, "3264", "dexamethasone"), dosage=dosage or [],
                         patient_id=patient_id, id=id, **extra)


def bounds_duration(value: float, unit: str = "d", sequence: int | None = None) -> dict:
    """A once-daily dosage lasting `value` `unit`s (timing.repeat.boundsDuration)."""
    dosage = {"text": f"for {value} {unit}",
              "timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d",
                                    "boundsDuration": {"value": value, "unit": unit, "system": UCUM, "code": unit}}}}
    if sequence is not None:
        dosage["sequence"] = sequence
    return dosage


def report(system: str, code: str, when: str, status: str = "final", *, patient_id: str = PATIENT_ID,
           id: str | None = None) -> dict:
    return {"resourceType": "DiagnosticReport", "id": _id(id, "r"), "status": status, "code": concept(system, code),
            "subject": _subject(patient_id), "effectiveDateTime": when}


# --- charts: one patient's resources ----------------------------------------------------------

def pre_operative_chart(pid: str) -> list[dict]:
    """In the pathway, not operated, ambulatory, thoracic MRI only: five pre-operative cards (dates from today)."""
    return [patient("1975-03-02", pid, gender="female"),
            condition(HEMANGIOMA, onset=day(10, since=today()), patient_id=pid, id=f"{pid}-hem"),
            condition(COMPRESSION, onset=day(10, since=today()), patient_id=pid, id=f"{pid}-cmp"),
            walking("ambulatory", day(1, since=today()), patient_id=pid, id=f"{pid}-amb"),
            procedure(CPT, "72146", day(3, since=today()), display="MRI thoracic spine", patient_id=pid,
                      id=f"{pid}-mri")]


def operated_chart(pid: str) -> list[dict]:
    """Decompressed and fixed 5 days ago, no radiotherapy: the adjuvant-radiotherapy card only."""
    def done(prid, system, code, display, days=5):
        return procedure(system, code, day(days, since=today()), display=display, patient_id=pid, id=f"{pid}-{prid}")
    return [patient("1975-03-02", pid, gender="female"),
            condition(HEMANGIOMA, onset=day(30, since=today()), patient_id=pid, id=f"{pid}-hem"),
            condition(COMPRESSION, onset=day(30, since=today()), patient_id=pid, id=f"{pid}-cmp"),
            done("dec", SNOMED, "387731002", "Decompressive laminectomy"),
            done("fix", CPT, "22842", "Posterior segmental instrumentation"),
            done("mri", LOINC, "36067-7", "MRI entire spine", days=20)]


def in_pathway_chart(pid: str, birth: str = "1970-05-01", rapid: bool = False) -> list[dict]:
    """A patient in the pathway: vertebral hemangioma at T7 compressing the cord (optionally deteriorating fast)."""
    onset = day(10, since=today())
    out = [patient(birth, pid),
           condition(HEMANGIOMA_T7_AGGRESSIVE, onset=onset, sites=[concept(*T7)], patient_id=pid, id=f"{pid}-hem"),
           condition(COMPRESSION_ICD, onset=onset, patient_id=pid, id=f"{pid}-scc")]
    if rapid:
        out.append(condition(RAPID_DEFICIT, onset=day(1, since=today()), patient_id=pid, id=f"{pid}-rapid"))
    return out


def named_in_pathway_chart(given: str = "Ada", family: str = "Testpatient", pid: str = "pt-1") -> list[dict]:
    """A patient with a name and a record number (that must never be logged), an AVH compressing the cord."""
    return [patient("1931-02-03", pid, gender="female", name=[{"family": family, "given": [given]}],
                    identifier=[{"system": "urn:oid:1.2.3.4", "value": "MRN-99887766"}]),
            condition(HEMANGIOMA_OF_SPINE, patient_id=pid, id="c-1"),
            condition(COMPRESSION_OF_CORD, patient_id=pid, id="c-2")]


# --- Bundles, prefetch and requests -----------------------------------------------------------

def searchset(resources: list[dict], next_url: str | None = None) -> dict:
    body = {"resourceType": "Bundle", "type": "searchset", "total": len(resources),
            "entry": [{"resource": r} for r in resources]}
    if next_url:
        body["link"] = [{"relation": "next", "url": next_url}]
    return body


def collection(resources: list[dict]) -> dict:
    return {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in resources]}


def fixture_bundle(resources: list[dict], expected: set[str], last_updated: str | None = None) -> dict:
    """A fixture Bundle as fhir_fixtures/ holds them: tagged with the expected cards ("silent" for none)."""
    return {"resourceType": "Bundle", "type": "collection",
            "meta": {"lastUpdated": last_updated or today().strftime("%Y-%m-%dT%H:%M:%SZ"),
                     "tag": [{"system": EXPECTED, "code": c} for c in sorted(expected)] or
                     [{"system": EXPECTED, "code": "silent"}]},
            "entry": [{"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": r} for r in resources]}


def write_fixtures(directory: Path) -> Path:
    """Two patients: pre-op (pt-pre) and operated (pt-op)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "pre-operative.json").write_text(json.dumps(fixture_bundle(pre_operative_chart("pt-pre"),
                                                                            PRE_OP_CARDS)))
    (directory / "operated.json").write_text(json.dumps(fixture_bundle(operated_chart("pt-op"),
                                                                       {"adjuvant-radiotherapy"})))
    return directory


def prefetch_by_type(resources: list[dict]) -> dict:
    """Every prefetch key of the services, filled by resource type (an empty Bundle = looked, nothing there)."""
    out = {"patient": next(r for r in resources if r["resourceType"] == "Patient")}
    for key, rtype in PREFETCH_TYPES.items():
        out[key] = searchset([r for r in resources if r["resourceType"] == rtype])
    return out


def prefetch_as_searched(resources: list[dict], templates: dict[str, str], patient_id: str) -> dict:
    """Every key filled as a FHIR server holding `resources` would answer it (what an EHR prefetches)."""
    from service.fhir.search import answer_query
    from service.fhir.prefetch import fill_template
    context = {"patientId": patient_id, "userId": "Practitioner/u1"}
    return {key: answer_query(fill_template(t, context), resources) for key, t in templates.items()}


def hook_request(hook: str, pid: str, record: list[dict], drafts: list[dict] | None = None,
                 selections: list[str] | None = None) -> dict:
    """A CDS Hooks request for `hook` with the whole record prefetched (and draft orders at order time)."""
    context = {"userId": "Practitioner/doc-1", "patientId": pid}
    if hook in ("order-select", "order-sign"):
        context["draftOrders"] = collection(drafts or [])
    if hook == "order-select":
        context["selections"] = selections
    if hook == "encounter-discharge":
        context["encounterId"] = f"enc-{pid}"
    return {"hook": hook, "hookInstance": str(uuid.uuid4()), "context": context, "prefetch": prefetch_by_type(record)}


# --- what the pure clinical functions make of them ---------------------------------------------

def facts_of(*resources: dict, now: dt.datetime = NOW, unavailable=()) -> Facts:
    """Facts of PATIENT_ID from these resources (a Patient is added when none is given)."""
    items = list(resources)
    if not any(r["resourceType"] == "Patient" for r in items):
        items.append(patient())
    return derive_facts(build_record(items, SELECTOR, PATIENT_ID, unavailable), VALUESETS, now)


def in_pathway(*resources: dict, **kw) -> Facts:
    """Facts of a confirmed T8 hemangioma with cord compression, onset 30 days ago, plus these resources."""
    return facts_of(hemangioma(onset=day(30)), compression(onset=day(10)), *resources, **kw)


def topics(cards: list[dict]) -> set[str]:
    return {c["source"]["topic"]["code"] for c in cards}
