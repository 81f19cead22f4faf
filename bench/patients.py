"""Synthetic patient-view requests of a given size: one in-scope AVH patient, padded with the rest of a chart.

The in-scope part is coded with the codes in cards/valuesets (hemangioma at T7, cord compression,
paraparesis, ambulatory-status and motor-score observations, a thoracic MRI, dexamethasone). The
padding is what a real chart holds and an EHR that ignores the prefetch `code=` filter would send:
vitals, labs, unrelated conditions, procedures and medications, spread over the same prefetch keys.
Deterministic for a given (n, seed) so runs compare; dates are relative to `today`.
"""
from __future__ import annotations

import datetime as dt
import random
import uuid

from service.clinical.valuesets import CPT, ICD10CM, LOCAL, LOINC, RXNORM, SNOMED

PATIENT_ID = "bench-avh-1"
FHIR_SERVER = "https://ehr.example.org/fhir"
CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"

# (key, resourceType) for each prefetch key the service declares.
KEYS = {"Condition": "conditions", "Observation": "observations", "Procedure": "procedures",
        "MedicationRequest": "medicationRequests", "ServiceRequest": "serviceRequests",
        "DiagnosticReport": "diagnosticReports", "MedicationAdministration": "medicationAdministrations"}

VITALS = [("8867-4", "Heart rate", "/min", 55, 110), ("8480-6", "Systolic blood pressure", "mm[Hg]", 95, 170),
          ("8462-4", "Diastolic blood pressure", "mm[Hg]", 55, 100), ("8310-5", "Body temperature", "Cel", 36, 39),
          ("9279-1", "Respiratory rate", "/min", 10, 24), ("29463-7", "Body weight", "kg", 50, 110),
          ("59408-5", "Oxygen saturation", "%", 90, 100)]
LABS = [("2345-7", "Glucose [Mass/volume] in Serum or Plasma", "mg/dL", 70, 200),
        ("718-7", "Hemoglobin [Mass/volume] in Blood", "g/dL", 9, 16),
        ("2160-0", "Creatinine [Mass/volume] in Serum or Plasma", "mg/dL", 0.5, 2),
        ("2951-2", "Sodium [Moles/volume] in Serum or Plasma", "mmol/L", 130, 148),
        ("2823-3", "Potassium [Moles/volume] in Serum or Plasma", "mmol/L", 3.2, 5.4),
        ("6690-2", "Leukocytes [#/volume] in Blood", "10*3/uL", 3, 14),
        ("777-3", "Platelets [#/volume] in Blood", "10*3/uL", 120, 420)]
CONDITIONS = [(SNOMED, "44054006", "Diabetes mellitus type 2"), (SNOMED, "38341003", "Hypertensive disorder"),
              (ICD10CM, "J45.909", "Unspecified asthma, uncomplicated"), (SNOMED, "55822004", "Hyperlipidemia"),
              (ICD10CM, "M54.5", "Low back pain"), (SNOMED, "35489007", "Depressive disorder"),
              (ICD10CM, "K21.9", "Gastro-esophageal reflux disease without esophagitis"),
              (SNOMED, "40055000", "Chronic sinusitis")]
PROCEDURES = [(SNOMED, "73761001", "Colonoscopy"), (SNOMED, "80146002", "Appendectomy"),
              (CPT, "71046", "Radiologic examination, chest; 2 views"), (SNOMED, "241615005", "Magnetic resonance imaging of knee"),
              (CPT, "93000", "Electrocardiogram, routine ECG with at least 12 leads"),
              (SNOMED, "16310003", "Ultrasonography of abdomen")]
MEDICATIONS = [("860975", "metformin 500 MG Oral Tablet"), ("314076", "lisinopril 10 MG Oral Tablet"),
               ("617312", "atorvastatin 10 MG Oral Tablet"), ("198211", "simvastatin 40 MG Oral Tablet")]


def _cc(system: str, code: str, display: str) -> dict:
    return {"coding": [{"system": system, "code": code, "display": display}], "text": display}


def _ref(patient_id: str) -> dict:
    return {"reference": f"Patient/{patient_id}"}


def _when(today: dt.date, days_ago: float) -> str:
    moment = dt.datetime.combine(today, dt.time(8, 0), dt.timezone.utc) - dt.timedelta(days=days_ago)
    return moment.isoformat().replace("+00:00", "Z")


def _condition(pid, rid, system, code, display, onset, body_site=None, verification="confirmed") -> dict:
    res = {"resourceType": "Condition", "id": rid, "meta": {"versionId": "1", "lastUpdated": onset},
           "clinicalStatus": {"coding": [{"system": CLINICAL, "code": "active"}]},
           "verificationStatus": {"coding": [{"system": VERIFICATION, "code": verification}]},
           "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category",
                                     "code": "problem-list-item", "display": "Problem List Item"}]}],
           "code": _cc(system, code, display), "subject": _ref(pid), "onsetDateTime": onset, "recordedDate": onset}
    if body_site:
        res["bodySite"] = [_cc(SNOMED, *body_site)]
    return res


def _observation(pid, rid, system, code, display, when, value: dict, category="exam") -> dict:
    return {"resourceType": "Observation", "id": rid, "meta": {"versionId": "1", "lastUpdated": when},
            "status": "final",
            "category": [{"coding": [{"system": OBS_CATEGORY, "code": category}]}],
            "code": _cc(system, code, display), "subject": _ref(pid), "effectiveDateTime": when, "issued": when,
            **value}


def _procedure(pid, rid, system, code, display, when) -> dict:
    return {"resourceType": "Procedure", "id": rid, "meta": {"versionId": "1", "lastUpdated": when},
            "status": "completed", "code": _cc(system, code, display), "subject": _ref(pid),
            "performedDateTime": when}


def in_scope_resources(today: dt.date, pid: str = PATIENT_ID) -> list[dict]:
    """The AVH patient itself (10 resources): pre-operative, T7 hemangioma compressing the cord, walking with help."""
    local = lambda code, display: (LOCAL, code, display)   # noqa: E731
    return [
        {"resourceType": "Patient", "id": pid, "gender": "female", "birthDate": "1971-03-14",
         "name": [{"use": "official", "family": "Benchmark", "given": ["Avery"]}]},
        _condition(pid, "avh-hem", SNOMED, "448232005", "Vertebral hemangioma", _when(today, 20),
                   ("62487009", "T7 vertebra")),
        _condition(pid, "avh-scc", ICD10CM, "G95.20", "Unspecified cord compression", _when(today, 6)),
        _condition(pid, "avh-para", SNOMED, "102568007", "Paraparesis", _when(today, 5)),
        _observation(pid, "avh-amb-1", *local("ambulatory-status", "Ambulatory status"), _when(today, 3),
                     {"valueCodeableConcept": _cc(LOCAL, "ambulatory", "Ambulatory")}),
        _observation(pid, "avh-amb-2", *local("ambulatory-status", "Ambulatory status"), _when(today, 1),
                     {"valueCodeableConcept": _cc(LOCAL, "ambulatory-with-assistance", "Ambulatory with assistance")}),
        _observation(pid, "avh-motor-1", *local("lower-extremity-motor-score", "Lower extremity motor score"),
                     _when(today, 3), {"valueInteger": 44}),
        _observation(pid, "avh-motor-2", *local("lower-extremity-motor-score", "Lower extremity motor score"),
                     _when(today, 1), {"valueInteger": 42}),
        _procedure(pid, "avh-mri-t", CPT, "72146", "MRI thoracic spine without contrast", _when(today, 6)),
        {"resourceType": "MedicationRequest", "id": "avh-dex", "status": "active", "intent": "order",
         "medicationCodeableConcept": _cc(RXNORM, "1116927", "dexamethasone phosphate 4 MG/ML Injectable Solution"),
         "subject": _ref(pid), "authoredOn": _when(today, 2),
         "dosageInstruction": [{"text": "16 mg/day IV in divided doses",
                                "timing": {"repeat": {"boundsPeriod": {"start": _when(today, 2)}}}}]},
    ]


def _filler(i: int, rng: random.Random, today: dt.date, pid: str) -> dict:
    """One unrelated chart entry; the mix is mostly observations, like a real chart."""
    kind = rng.random()
    rid = f"fill-{i}"
    when = _when(today, rng.uniform(0, 3650))
    if kind < 0.45:
        code, display, unit, lo, hi = rng.choice(VITALS)
        return _observation(pid, rid, LOINC, code, display, when, {"valueQuantity": {
            "value": round(rng.uniform(lo, hi), 1), "unit": unit, "system": "http://unitsofmeasure.org", "code": unit}},
            category="vital-signs")
    if kind < 0.75:
        code, display, unit, lo, hi = rng.choice(LABS)
        return _observation(pid, rid, LOINC, code, display, when, {
            "valueQuantity": {"value": round(rng.uniform(lo, hi), 2), "unit": unit,
                              "system": "http://unitsofmeasure.org", "code": unit},
            "referenceRange": [{"low": {"value": lo, "unit": unit}, "high": {"value": hi, "unit": unit}}]},
            category="laboratory")
    if kind < 0.87:
        return _condition(pid, rid, *rng.choice(CONDITIONS), when)
    if kind < 0.95:
        return _procedure(pid, rid, *rng.choice(PROCEDURES), when)
    code, display = rng.choice(MEDICATIONS)
    return {"resourceType": "MedicationRequest", "id": rid, "status": rng.choice(["active", "completed", "stopped"]),
            "intent": "order", "medicationCodeableConcept": _cc(RXNORM, code, display), "subject": _ref(pid),
            "authoredOn": when, "dosageInstruction": [{"text": "1 tablet by mouth daily"}]}


def _bundle(resources: list[dict]) -> dict:
    return {"resourceType": "Bundle", "type": "searchset", "total": len(resources),
            "entry": [{"fullUrl": f"https://ehr.example.org/fhir/{r['resourceType']}/{r['id']}", "resource": r,
                       "search": {"mode": "match"}} for r in resources]}


def patient_view_request(n: int, seed: int = 0, today: dt.date | None = None, patient_id: str = PATIENT_ID) -> dict:
    """A patient-view request whose prefetch holds `n` resources in all (Patient included)."""
    today = today or dt.date.today()
    rng = random.Random(seed)
    core = in_scope_resources(today, patient_id)[:n]
    resources = core + [_filler(i, rng, today, patient_id) for i in range(n - len(core))]
    patient = resources[0]
    by_key: dict[str, list[dict]] = {key: [] for key in KEYS.values()}
    for res in resources[1:]:
        by_key[KEYS[res["resourceType"]]].append(res)
    return {
        "hook": "patient-view",
        "hookInstance": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "fhirServer": FHIR_SERVER,
        "context": {"patientId": patient_id, "userId": "Practitioner/bench-practitioner"},
        "prefetch": {"patient": patient, **{key: _bundle(items) for key, items in by_key.items()}},
    }
