"""The CDS services avh-cds offers."""
from __future__ import annotations

from service.api.engine import evaluate_patient_view
from service.api.order_hooks import evaluate_encounter_discharge, evaluate_orders
from service.api.registry import CdsService, Registry, prefetch_templates
from service.clinical.valuesets import ValueSets

IN_SCOPE = ("for a patient with an aggressive vertebral hemangioma compressing the spinal cord (the current "
            "compression and a hemangioma at the same level on the problem list; see docs/input-contract.md)")
ORDER_RULES = (
    "a spine decompression order with no posterior instrumented stabilization in the same order set or on record "
    "(never operate without posterior fixation); an embolization order while the deficit progresses rapidly (go "
    "straight to surgery); a dexamethasone order running longer than the 13-day course (3 days + 10-day taper). "
    "Suggestions complete, shorten or remove the draft order.")


def build_registry(valuesets: ValueSets) -> Registry:
    templates = prefetch_templates(valuesets)
    return Registry([
        CdsService(
            id="avh-patient-view",
            hook="patient-view",
            title="Aggressive vertebral hemangioma with cord compression: care pathway",
            description=(
                "When a chart is opened, recognises an aggressive vertebral hemangioma compressing the spinal "
                "cord and shows where the patient stands on the care pathway for the current compression "
                "(its episode: earlier operations and workup do not count): urgent decompression with posterior stabilization, "
                "dexamethasone, MRI of the entire spine, CT angiography, preoperative embolization (or not when "
                "the deficit progresses rapidly), adjuvant radiotherapy after surgery, and the pitfalls to avoid. "
                "Silent for every other patient."),
            prefetch=templates,
            evaluate=evaluate_patient_view,
        ),
        CdsService(
            id="avh-order-select",
            hook="order-select",
            title="Aggressive vertebral hemangioma: order safety as orders are selected",
            description=f"As orders are selected, and only about the selected orders, {IN_SCOPE}, warns of: "
                        f"{ORDER_RULES} Silent for every other patient.",
            prefetch=templates,
            evaluate=evaluate_orders,
        ),
        CdsService(
            id="avh-order-sign",
            hook="order-sign",
            title="Aggressive vertebral hemangioma: order safety before signing",
            description=f"Before the orders are signed, checks the whole draft order set {IN_SCOPE} and warns of: "
                        f"{ORDER_RULES} Silent for every other patient.",
            prefetch=templates,
            evaluate=evaluate_orders,
        ),
        CdsService(
            id="avh-encounter-discharge",
            hook="encounter-discharge",
            title="Aggressive vertebral hemangioma: radiotherapy before discharge",
            description=f"At discharge, {IN_SCOPE} who was operated for it, warns when no radiotherapy is given or planned since the operation (30 Gy in 10 "
                        "fractions after wound healing; omission leads to recurrence) and suggests the referral. "
                        "Silent for every other patient.",
            prefetch=templates,
            evaluate=evaluate_encounter_discharge,
        ),
    ])
