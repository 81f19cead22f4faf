"""The CDS services avh-cds offers."""
from __future__ import annotations

from .engine import evaluate_patient_view
from .registry import CdsService, Registry, prefetch_templates
from .valuesets import ValueSets


def build_registry(valuesets: ValueSets) -> Registry:
    templates = prefetch_templates(valuesets)
    return Registry([
        CdsService(
            id="avh-patient-view",
            hook="patient-view",
            title="Aggressive vertebral hemangioma with cord compression: care pathway",
            description=(
                "When a chart is opened, recognises an aggressive vertebral hemangioma compressing the spinal "
                "cord (hemangioma and cord compression both active on the problem list) and shows where the "
                "patient stands on the care pathway: urgent decompression with posterior stabilization, "
                "dexamethasone, MRI of the entire spine, CT angiography, preoperative embolization (or not when "
                "the deficit progresses rapidly), adjuvant radiotherapy after surgery, and the pitfalls to avoid. "
                "Silent for every other patient."),
            prefetch=templates,
            evaluate=evaluate_patient_view,
        ),
    ])
