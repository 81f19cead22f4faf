"""Decisions of pathway.md section 4: which cards a patient's facts call for. Pure.

A card whose reason is the *absence* of data (no MRI, no dexamethasone, not yet operated) only
fires when the resource types that would hold that data were read; otherwise the decision is
withheld and reported as unchecked, so a failed query never turns into clinical advice. A card
that would fire on the *presence* of data that could not be read is reported as unchecked too, so
its silence is not taken for "nothing to say".
"""
from __future__ import annotations

from dataclasses import dataclass, field

from service.clinical.facts import Evidence, Facts

# Resource types whose absence each topic relies on.
ABSENCE_OF = {
    "surgical-decompression": ("Procedure",),
    "corticosteroids": ("Procedure", "MedicationRequest"),
    "spine-mri": ("Procedure", "DiagnosticReport"),
    "preop-cta": ("Procedure", "DiagnosticReport"),
    "preop-embolization": ("Procedure", "Observation"),   # "no rapid deterioration" may rest on Observations
    "embolization-deferred": ("Procedure",),
    "adjuvant-radiotherapy": ("Procedure", "ServiceRequest"),
    "posterior-fixation": ("Procedure",),
    "steroid-duration": (),
    "differential-diagnosis": (),
}

# Order of cards with the same indicator.
TOPIC_ORDER = tuple(ABSENCE_OF)

# Resource types each topic's decision reads: an invalid resource of these types is named on the card.
_RAPID = ("Condition", "Observation")
READS = {
    "surgical-decompression": _RAPID + ("Procedure",),
    "corticosteroids": _RAPID + ("Procedure", "MedicationRequest"),
    "spine-mri": ("Condition", "Procedure", "DiagnosticReport"),
    "preop-cta": ("Condition", "Procedure", "DiagnosticReport"),
    "preop-embolization": _RAPID + ("Procedure",),
    "embolization-deferred": _RAPID + ("Procedure",),
    "adjuvant-radiotherapy": ("Condition", "Procedure", "ServiceRequest"),
    "posterior-fixation": ("Condition", "Procedure"),
    "steroid-duration": ("Condition", "MedicationRequest"),
    "differential-diagnosis": ("Condition",),
}


@dataclass(frozen=True)
class Decision:
    topic: str
    evidence: tuple[Evidence, ...]
    flags: frozenset[str] = frozenset()
    variables: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Unchecked:
    """A topic that could not be decided because the data it depends on was unavailable."""
    topic: str
    missing: tuple[str, ...]


def patient_flags(facts: Facts) -> frozenset[str]:
    flags = {"rapid" if facts.rapid_deterioration else "stable"}
    status = facts.ambulatory_status
    flags.add({"ambulatory": "ambulatory", "ambulatory-with-assistance": "ambulatory",
               "non-ambulatory": "non_ambulatory"}.get(status, "ambulatory_unknown"))
    if facts.pediatric:
        flags.add("pediatric")
    if facts.pregnancy:
        flags.add("pregnant")
    if facts.hemangioma_recurrence:
        flags.add("recurrence")
    if facts.joa:
        flags.add("joa_recorded")
    if facts.mri_thoracic and not facts.mri_entire_spine:
        flags.add("mri_thoracic_only")
    return frozenset(flags)


def _chart_reasons(f: Facts) -> dict[str, tuple[Evidence | None, ...]]:
    """Topic -> the record entries that make it fire, for every topic whose rule holds."""
    base = (f.hemangioma, f.compression)
    reasons: dict[str, tuple] = {}
    if f.pre_operative:
        reasons["surgical-decompression"] = base + f.rapid_evidence + (f.ambulatory_evidence, f.pregnancy)
        if f.dexamethasone is None:
            reasons["corticosteroids"] = base + f.rapid_evidence
        if f.mri_entire_spine is None:
            reasons["spine-mri"] = base + (f.mri_thoracic,)
        if f.spine_cta is None:
            reasons["preop-cta"] = base
        if f.rapid_deterioration:
            reasons["embolization-deferred"] = base + f.rapid_evidence
        elif f.embolization is None:
            reasons["preop-embolization"] = base + (f.ambulatory_evidence,)
    if f.operated:
        if f.radiotherapy is None:
            reasons["adjuvant-radiotherapy"] = base + (f.surgery,)
        if f.posterior_fixation is None:
            reasons["posterior-fixation"] = base + (f.surgery,)
    if f.steroid_course_exceeded:
        reasons["steroid-duration"] = base + (f.dexamethasone,)
    if f.hemangioma_verification in {"provisional", "differential", "unconfirmed"}:
        reasons["differential-diagnosis"] = base
    return reasons


def _undecided_for_want_of_data(f: Facts) -> dict[str, tuple[str, ...]]:
    """Topics that fire on the *presence* of data that could not be read: they might be due."""
    undecided = {}
    if "MedicationRequest" in f.unavailable:
        undecided["steroid-duration"] = ("MedicationRequest",)
    if "Observation" in f.unavailable and f.pre_operative and not f.rapid_deterioration:
        undecided["embolization-deferred"] = ("Observation",)   # rapid deterioration may rest on Observations
    return undecided


def decide_chart(facts: Facts) -> tuple[list[Decision], list[Unchecked]]:
    """The chart-level (patient-view) decisions for a patient."""
    if not facts.in_pathway:
        return [], []
    flags = patient_flags(facts)
    decisions, unchecked = [], []
    if "Procedure" in facts.unavailable:
        # Without procedures we cannot tell pre- from post-operative: every stage-specific card waits.
        unchecked += [Unchecked(t, ("Procedure",)) for t in TOPIC_ORDER if "Procedure" in ABSENCE_OF[t]]
    for topic, evidence in _chart_reasons(facts).items():
        missing = tuple(t for t in ABSENCE_OF[topic] if t in facts.unavailable)
        if missing:
            if "Procedure" not in missing:
                unchecked.append(Unchecked(topic, missing))
            continue
        decisions.append(Decision(topic, tuple(e for e in evidence if e is not None), flags))
    reported = {u.topic for u in unchecked}
    unchecked += [Unchecked(t, missing) for t, missing in _undecided_for_want_of_data(facts).items()
                  if t not in reported]
    return decisions, unchecked
