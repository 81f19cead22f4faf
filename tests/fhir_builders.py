"""Small builders for FHIR R4 resources and CDS Hooks request bodies with full prefetch (test data only)."""
from __future__ import annotations

import datetime as dt
import uuid

from service.clinical.valuesets import CPT, ICD10CM as ICD, LOCAL, RXNORM, SNOMED as SCT  # noqa: F401 (re-exported)

UCUM = "http://unitsofmeasure.org"
# These tests are not about authentication: they say so explicitly (ignored where auth does not exist yet).
NO_AUTH = {"AVH_CDS_AUTH": "off"}
PREFETCH_TYPES = {"conditions": "Condition", "observations": "Observation", "procedures": "Procedure",
                  "medicationRequests": "MedicationRequest", "serviceRequests": "ServiceRequest",
                  "diagnosticReports": "DiagnosticReport", "medicationAdministrations": "MedicationAdministration"}


def day(offset: int) -> str:
    return (dt.date.today() + dt.timedelta(days=offset)).isoformat()


def concept(system: str, code: str, display: str | None = None) -> dict:
    coding = {"system": system, "code": code}
    if display:
        coding["display"] = display
    return {"coding": [coding], "text": display or code}


def condition(cid: str, pid: str, system: str, code: str, display: str, onset: int = -10, **extra) -> dict:
    return {"resourceType": "Condition", "id": cid, "subject": {"reference": f"Patient/{pid}"},
            "clinicalStatus": concept("http://terminology.hl7.org/CodeSystem/condition-clinical", "active"),
            "code": concept(system, code, display), "onsetDateTime": day(onset), **extra}


def procedure(prid: str, pid: str, system: str, code: str, display: str, when: int, status: str = "completed") -> dict:
    return {"resourceType": "Procedure", "id": prid, "status": status, "subject": {"reference": f"Patient/{pid}"},
            "code": concept(system, code, display), "performedDateTime": day(when)}


def service_request(srid: str, pid: str, system: str, code: str, display: str, status: str = "draft", **extra) -> dict:
    return {"resourceType": "ServiceRequest", "id": srid, "status": status, "intent": "order",
            "subject": {"reference": f"Patient/{pid}"}, "code": concept(system, code, display),
            "authoredOn": day(0), **extra}


def dexamethasone(mrid: str, pid: str, status: str = "draft", dosage: list | None = None, **extra) -> dict:
    return {"resourceType": "MedicationRequest", "id": mrid, "status": status, "intent": "order",
            "subject": {"reference": f"Patient/{pid}"},
            "medicationCodeableConcept": concept(RXNORM, "3264", "dexamethasone"),
            "authoredOn": day(0), "dosageInstruction": dosage or [], **extra}


def bounds_duration(value: float, unit: str = "d", sequence: int | None = None) -> dict:
    dosage = {"text": f"for {value} {unit}",
              "timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d",
                                    "boundsDuration": {"value": value, "unit": unit, "system": UCUM, "code": unit}}}}
    if sequence is not None:
        dosage["sequence"] = sequence
    return dosage


def avh_patient(pid: str, birth: str = "1970-05-01", rapid: bool = False) -> list[dict]:
    """A patient in the pathway: vertebral hemangioma at T7 compressing the cord (optionally deteriorating fast)."""
    out = [{"resourceType": "Patient", "id": pid, "birthDate": birth},
           condition(f"{pid}-hem", pid, SCT, "448232005", "Aggressive vertebral hemangioma T7",
                     bodySite=[concept(SCT, "62487009", "T7 vertebra")]),
           condition(f"{pid}-scc", pid, ICD, "G95.20", "Spinal cord compression")]
    if rapid:
        out.append(condition(f"{pid}-rapid", pid, LOCAL, "rapidly-progressive-neurologic-deficit",
                             "Rapidly progressive neurologic deficit", onset=-1))
    return out


def bundle(resources: list[dict], kind: str = "searchset") -> dict:
    return {"resourceType": "Bundle", "type": kind, "entry": [{"resource": r} for r in resources]}


def prefetch_for(resources: list[dict]) -> dict:
    """Every prefetch key of the services, filled (an empty Bundle = the client looked, nothing there)."""
    patient = next(r for r in resources if r["resourceType"] == "Patient")
    out = {"patient": patient}
    for key, rtype in PREFETCH_TYPES.items():
        out[key] = bundle([r for r in resources if r["resourceType"] == rtype])
    return out


def hook_request(hook: str, pid: str, record: list[dict], drafts: list[dict] | None = None,
                 selections: list[str] | None = None) -> dict:
    context = {"userId": "Practitioner/doc-1", "patientId": pid}
    if hook in ("order-select", "order-sign"):
        context["draftOrders"] = bundle(drafts or [], kind="collection")
    if hook == "order-select":
        context["selections"] = selections
    if hook == "encounter-discharge":
        context["encounterId"] = f"enc-{pid}"
    return {"hook": hook, "hookInstance": str(uuid.uuid4()), "context": context, "prefetch": prefetch_for(record)}
