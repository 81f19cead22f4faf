"""Small FHIR R4 patient records for the data-access tests, written as fixture Bundles.

Codes are those of pathway.md section 2. The anchor date is today, so no date shifting is involved.
"""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from service.fhir.fixtures import EXPECTED_CARD_SYSTEM as EXPECTED
from service.clinical.valuesets import CPT, LOCAL, LOINC, RXNORM, SNOMED  # noqa: F401 (re-exported)
from tests.fhir_builders import NO_AUTH as AUTH_OFF, concept  # noqa: F401 (re-exported)

CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
PRE_OP_CARDS = {"surgical-decompression", "corticosteroids", "spine-mri", "preop-cta", "preop-embolization"}


def _days_ago(days: int) -> str:
    return (dt.date.today() - dt.timedelta(days=days)).isoformat()


def patient(pid: str, birth: str = "1975-03-02") -> dict:
    return {"resourceType": "Patient", "id": pid, "gender": "female", "birthDate": birth}


def condition(cid: str, pid: str, code: tuple, onset_days: int = 10) -> dict:
    return {"resourceType": "Condition", "id": cid, "subject": {"reference": f"Patient/{pid}"},
            "clinicalStatus": concept(CLINICAL, "active"),
            "code": concept(*code), "onsetDateTime": _days_ago(onset_days)}


HEMANGIOMA = (SNOMED, "448232005", "Hemangioma of T7 vertebra")
COMPRESSION = (SNOMED, "71286001", "Spinal cord compression")


def observation_ambulatory(oid: str, pid: str, status: str = "ambulatory", days: int = 1) -> dict:
    return {"resourceType": "Observation", "id": oid, "status": "final", "subject": {"reference": f"Patient/{pid}"},
            "code": concept(LOCAL, "ambulatory-status"), "effectiveDateTime": _days_ago(days),
            "valueCodeableConcept": concept(LOCAL, status)}


def procedure(prid: str, pid: str, code: tuple, days: int = 5) -> dict:
    return {"resourceType": "Procedure", "id": prid, "status": "completed", "subject": {"reference": f"Patient/{pid}"},
            "code": concept(*code), "performedDateTime": _days_ago(days)}


def pre_operative(pid: str) -> list[dict]:
    """In the pathway, not operated, ambulatory, thoracic MRI only: five pre-operative cards."""
    return [patient(pid),
            condition(f"{pid}-hem", pid, HEMANGIOMA),
            condition(f"{pid}-cmp", pid, COMPRESSION),
            observation_ambulatory(f"{pid}-amb", pid),
            procedure(f"{pid}-mri", pid, (CPT, "72146", "MRI thoracic spine"), days=3)]


def operated(pid: str) -> list[dict]:
    """Decompressed and fixed 5 days ago, no radiotherapy: the adjuvant-radiotherapy card only."""
    return [patient(pid),
            condition(f"{pid}-hem", pid, HEMANGIOMA, onset_days=30),
            condition(f"{pid}-cmp", pid, COMPRESSION, onset_days=30),
            procedure(f"{pid}-dec", pid, (SNOMED, "387731002", "Decompressive laminectomy")),
            procedure(f"{pid}-fix", pid, (CPT, "22842", "Posterior segmental instrumentation")),
            procedure(f"{pid}-mri", pid, (LOINC, "36067-7", "MRI entire spine"), days=20)]


def bundle(resources: list[dict], expected: set[str]) -> dict:
    return {"resourceType": "Bundle", "type": "collection",
            "meta": {"lastUpdated": dt.date.today().isoformat() + "T00:00:00Z",
                     "tag": [{"system": EXPECTED, "code": c} for c in sorted(expected)] or
                     [{"system": EXPECTED, "code": "silent"}]},
            "entry": [{"fullUrl": f"urn:uuid:{r['resourceType']}-{r['id']}", "resource": r} for r in resources]}


def write_fixtures(directory: Path) -> Path:
    """Two patients: pre-op (pt-pre) and operated (pt-op)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "pre-operative.json").write_text(json.dumps(bundle(pre_operative("pt-pre"), PRE_OP_CARDS)))
    (directory / "operated.json").write_text(json.dumps(bundle(operated("pt-op"), {"adjuvant-radiotherapy"})))
    return directory


def searchset(resources: list[dict], next_url: str | None = None) -> dict:
    body = {"resourceType": "Bundle", "type": "searchset", "total": len(resources),
            "entry": [{"resource": r} for r in resources]}
    if next_url:
        body["link"] = [{"relation": "next", "url": next_url}]
    return body


def full_prefetch(resources: list[dict], templates: dict[str, str], patient_id: str) -> dict:
    """Every key filled as a FHIR server holding `resources` would answer it (what an EHR prefetches)."""
    from service.fhir.search import answer_query
    from service.fhir.prefetch import fill_template
    context = {"patientId": patient_id, "userId": "Practitioner/u1"}
    return {key: answer_query(fill_template(t, context), resources) for key, t in templates.items()}


def topics(cards: list[dict]) -> set[str]:
    return {c["source"]["topic"]["code"] for c in cards}
