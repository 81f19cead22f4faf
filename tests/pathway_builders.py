"""Small builders of FHIR R4 resource dicts for pure tests of the clinical functions (one patient)."""
from __future__ import annotations

import datetime as dt
import itertools
from pathlib import Path

from service.clinical.facts import Facts, derive_facts
from service.clinical.record import Selector, build_record
from service.clinical.valuesets import CPT, ICD10CM, LOCAL, LOINC, RXNORM, SNOMED, load_valuesets

VALUESETS = load_valuesets(Path(__file__).resolve().parent.parent / "cards" / "valuesets")
SELECTOR = Selector(VALUESETS)
NOW = dt.datetime(2026, 11, 24, 12, 0, tzinfo=dt.timezone.utc)
PATIENT_ID = "unit-1"
_ids = itertools.count(1)


def ago(days: float = 0, hours: float = 0) -> str:
    """A dateTime this long before NOW."""
    return (NOW - dt.timedelta(days=days, hours=hours)).strftime("%Y-%m-%dT%H:%M:%SZ")


def day(days: int) -> str:
    """A date this many days before NOW."""
    return (NOW - dt.timedelta(days=days)).date().isoformat()


def concept(system: str, code: str, text: str | None = None) -> dict:
    out = {"coding": [{"system": system, "code": code}]}
    if text:
        out["text"] = text
    return out


def _subject(patient_id: str) -> dict:
    return {"reference": f"Patient/{patient_id}"}


def patient(birth_date: str = "1970-01-01", patient_id: str = PATIENT_ID) -> dict:
    return {"resourceType": "Patient", "id": patient_id, "birthDate": birth_date}


def condition(code: dict, clinical: str | None = "active", verification: str = "confirmed", onset: str | None = None,
              sites: list[dict] | None = None, patient_id: str = PATIENT_ID, **extra) -> dict:
    res = {"resourceType": "Condition", "id": f"c{next(_ids)}", "code": code, "subject": _subject(patient_id),
           "verificationStatus": concept("http://terminology.hl7.org/CodeSystem/condition-ver-status", verification)}
    if clinical:
        res["clinicalStatus"] = concept("http://terminology.hl7.org/CodeSystem/condition-clinical", clinical)
    if onset:
        res["onsetDateTime"] = onset
    if sites:
        res["bodySite"] = sites
    return {**res, **extra}


def hemangioma(code: dict | None = None, sites: list[dict] | None = None, **kw) -> dict:
    """A vertebral hemangioma (SNOMED), at T8 unless sites are given."""
    return condition(code or concept(SNOMED, "448232005"), sites=[concept(SNOMED, "11068009")] if sites is None else sites,
                     **kw)


def compression(**kw) -> dict:
    return condition(concept(ICD10CM, "G95.20"), **kw)


def observation(code: str, when: str, status: str = "final", **value) -> dict:
    return {"resourceType": "Observation", "id": f"o{next(_ids)}", "status": status, "code": concept(LOCAL, code),
            "subject": _subject(PATIENT_ID), "effectiveDateTime": when, **value}


def walking(value: str, when: str) -> dict:
    return observation("ambulatory-status", when, valueCodeableConcept=concept(LOCAL, value))


def motor(score: int, when: str) -> dict:
    return observation("lower-extremity-motor-score", when, valueQuantity={"value": score})


def procedure(system: str, code: str, when: str | None, status: str = "completed") -> dict:
    res = {"resourceType": "Procedure", "id": f"p{next(_ids)}", "status": status, "code": concept(system, code),
           "subject": _subject(PATIENT_ID)}
    if when:
        res["performedDateTime"] = when
    return res


def decompression(when: str | None, status: str = "completed") -> dict:
    return procedure(CPT, "63046", when, status)


def service_request(system: str, code: str, authored: str, status: str = "active") -> dict:
    return {"resourceType": "ServiceRequest", "id": f"s{next(_ids)}", "status": status, "intent": "order",
            "code": concept(system, code), "subject": _subject(PATIENT_ID), "authoredOn": authored}


def dexamethasone(start: str, status: str = "active") -> dict:
    return {"resourceType": "MedicationRequest", "id": f"m{next(_ids)}", "status": status, "intent": "order",
            "medicationCodeableConcept": concept(RXNORM, "1116927"), "subject": _subject(PATIENT_ID),
            "authoredOn": start}


def report(system: str, code: str, when: str, status: str = "final") -> dict:
    return {"resourceType": "DiagnosticReport", "id": f"r{next(_ids)}", "status": status, "code": concept(system, code),
            "subject": _subject(PATIENT_ID), "effectiveDateTime": when}


def facts_of(*resources: dict, now: dt.datetime = NOW, unavailable=()) -> Facts:
    """Facts of PATIENT_ID from these resources (a Patient is added when none is given)."""
    items = list(resources)
    if not any(r["resourceType"] == "Patient" for r in items):
        items.append(patient())
    return derive_facts(build_record(items, SELECTOR, PATIENT_ID, unavailable), VALUESETS, now)


def in_pathway(*resources: dict, **kw) -> Facts:
    """Facts of a confirmed T8 hemangioma with cord compression, onset 30 days ago, plus these resources."""
    return facts_of(hemangioma(onset=day(30)), compression(onset=day(10)), *resources, **kw)
