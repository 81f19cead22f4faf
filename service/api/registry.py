"""The registry of CDS services this deployment offers (discovery order is this order)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

from service.clinical.valuesets import ValueSets

# Which value sets narrow each prefetch query (token search, comma = OR, in the spec's query subset).
PREFETCH_CODES = {
    "conditions": ("Condition", ("vertebral-hemangioma", "hemangioma-site-unspecified", "spinal-cord-compression",
                                 "neurologic-deficit", "pregnancy", "rapid-deterioration")),
    "observations": ("Observation", ("ambulatory-status", "lower-extremity-motor-score", "joa-score",
                                     "rapid-deterioration")),
    "procedures": ("Procedure", ("decompression-surgery", "posterior-stabilization", "vertebroplasty", "embolization",
                                 "radiotherapy", "mri-entire-spine", "mri-thoracic-spine", "spine-ct-angiography")),
    "medicationRequests": ("MedicationRequest", ("dexamethasone",)),
    "serviceRequests": ("ServiceRequest", ("radiotherapy",)),
    "diagnosticReports": ("DiagnosticReport", ("mri-entire-spine", "mri-thoracic-spine", "spine-ct-angiography")),
}
# At order time a signed order for posterior instrumentation also counts as "on record".
ORDER_PREFETCH_CODES = {**PREFETCH_CODES,
                        "serviceRequests": ("ServiceRequest", ("radiotherapy", "posterior-stabilization"))}


def prefetch_templates(valuesets: ValueSets, codes: Mapping = PREFETCH_CODES) -> dict[str, str]:
    templates = {"patient": "Patient/{{context.patientId}}"}
    for key, (rtype, names) in codes.items():
        tokens = ",".join(f"{system}|{code}" for system, code in sorted(valuesets.union(names)))
        templates[key] = f"{rtype}?patient={{{{context.patientId}}}}&code={tokens}"
    return templates


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
