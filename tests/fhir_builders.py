"""The old call shapes of tests/fhir_records.py (id and patient first, day offsets negative = past), kept
only until test_order_hooks.py moves to tests/fhir_records.py after the pathway v2 merge (then deleted)."""
from __future__ import annotations

from tests import fhir_records
from tests.fhir_records import (CPT, ICD10CM as ICD, NO_AUTH, SNOMED as SCT, UCUM,  # noqa: F401
                                bounds_duration, draft_dexamethasone, draft_order, hook_request,
                                in_pathway_chart as avh_patient, today)


def day(offset: int) -> str:
    return fhir_records.day(-offset, since=today())


def condition(cid: str, pid: str, system: str, code: str, display: str, onset: int = -10, **extra) -> dict:
    return fhir_records.condition((system, code, display), onset=day(onset), patient_id=pid, id=cid, **extra)


def procedure(prid: str, pid: str, system: str, code: str, display: str, when: int, status: str = "completed") -> dict:
    return fhir_records.procedure(system, code, day(when), status, display=display, patient_id=pid, id=prid)


def service_request(srid: str, pid: str, system: str, code: str, display: str, status: str = "draft", **extra) -> dict:
    return draft_order(system, code, display, status, patient_id=pid, id=srid, **extra)


def dexamethasone(mrid: str, pid: str, status: str = "draft", dosage: list | None = None, **extra) -> dict:
    return draft_dexamethasone(dosage, status, patient_id=pid, id=mrid, **extra)
