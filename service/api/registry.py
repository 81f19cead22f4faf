"""The registry of CDS services this deployment offers (discovery order is this order)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

from service.clinical.valuesets import ValueSets

# Which value sets narrow each prefetch query (token search, comma = OR, in the spec's query subset).
WORKUP = ("mri-entire-spine", "mri-thoracic-spine", "spine-ct-angiography")
PREFETCH_CODES = {
    "conditions": ("Condition", ("vertebral-hemangioma", "hemangioma-site-unspecified", "spinal-cord-compression",
                                 "neurologic-deficit", "pregnancy", "rapid-deterioration", "competing-cause", "injury")),
    "observations": ("Observation", ("ambulatory-status", "lower-extremity-motor-score", "joa-score",
                                     "rapid-deterioration", "pregnancy-status")),
    "procedures": ("Procedure", ("decompression-surgery", "posterior-stabilization", "vertebroplasty", "embolization",
                                 "radiotherapy") + WORKUP),
    "serviceRequests": ("ServiceRequest", ("radiotherapy", "decompression-surgery", "posterior-stabilization",
                                           "embolization") + WORKUP),
    "diagnosticReports": ("DiagnosticReport", WORKUP),
}
# Dexamethasone is also ordered by reference to a Medication, or named in text only: no code narrows these
# queries, and the referenced Medications come along (pathway.md section 2).
MEDICATION_TEMPLATES = {
    "medicationRequests": "MedicationRequest?patient={{context.patientId}}&_include=MedicationRequest:medication",
    "medicationAdministrations": "MedicationAdministration?patient={{context.patientId}}"
                                 "&_include=MedicationAdministration:medication",
}


def prefetch_templates(valuesets: ValueSets, codes: Mapping = PREFETCH_CODES) -> dict[str, str]:
    templates = {"patient": "Patient/{{context.patientId}}"}
    for key, (rtype, names) in codes.items():
        tokens = ",".join(f"{system}|{code}" for system, code in sorted(valuesets.union(names)))
        templates[key] = f"{rtype}?patient={{{{context.patientId}}}}&code={tokens}"
    return {**templates, **MEDICATION_TEMPLATES}


@dataclass(frozen=True)
class CdsService:
    id: str
    hook: str
    title: str
    description: str
    prefetch: dict[str, str]
    evaluate: Callable = field(compare=False, repr=False)

    def discovery(self) -> dict:
        return {"hook": self.hook, "id": self.id, "title": self.title, "description": self.description,
                "prefetch": self.prefetch}


class Registry:
    def __init__(self, services: list[CdsService]):
        self._services = {s.id: s for s in services}

    def get(self, service_id: str) -> CdsService | None:
        return self._services.get(service_id)

    def __iter__(self):
        return iter(self._services.values())
