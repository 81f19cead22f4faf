"""Decisions of pathway.md (version 2) section 4: which cards a patient's facts call for, and why not. Pure.

Each topic has one rule: facts -> the record entries that make it fire, or the one reason it does not
(`Fire` or `Silent`). decide_chart turns the rules into decisions; explain gives every topic's outcome
in words, from the same rules (what `avh-cds explain` prints).

A card whose reason is the *absence* of data (no MRI, no dexamethasone, not yet operated) only fires
when the resource types that would hold that data were read; otherwise the decision is withheld and
reported as unchecked, so a failed query never turns into clinical advice. A Condition that could not
be read but whose code could change who is in scope is reported too: never silence from unread data.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from itertools import compress
from typing import Callable

from service.clinical.frozen import set_at_once
from service.clinical.facts import RADIOTHERAPY_LATE_DAYS, STEROID_COURSE_DAYS, Evidence, Facts

# Resource types whose absence each topic relies on.
ABSENCE_OF = {
    "surgical-decompression": ("Procedure",),
    "corticosteroids": ("Procedure", "MedicationRequest", "MedicationAdministration"),
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
    "surgical-decompression": _RAPID + ("Procedure", "ServiceRequest", "Patient"),   # Patient: age, deceased
    "corticosteroids": _RAPID + ("Procedure", "MedicationRequest", "MedicationAdministration", "Medication", "Patient"),
    "spine-mri": ("Condition", "Procedure", "DiagnosticReport", "ServiceRequest"),
    "preop-cta": ("Condition", "Procedure", "DiagnosticReport", "ServiceRequest"),
    "preop-embolization": _RAPID + ("Procedure", "ServiceRequest"),
    "embolization-deferred": _RAPID + ("Procedure",),
    "adjuvant-radiotherapy": ("Condition", "Procedure", "ServiceRequest", "Patient"),
    "posterior-fixation": ("Condition", "Procedure", "ServiceRequest"),
    "steroid-duration": ("Condition", "MedicationRequest", "MedicationAdministration", "Medication"),
    "differential-diagnosis": ("Condition",),
}
PRE_OPERATIVE_TOPICS = frozenset({"surgical-decompression", "corticosteroids", "spine-mri", "preop-cta",
                                  "preop-embolization", "embolization-deferred", "differential-diagnosis"})
UNCONFIRMED_COMPRESSION_TOPICS = frozenset({"corticosteroids", "spine-mri", "differential-diagnosis"})
ALL_TOPICS = frozenset(TOPIC_ORDER)


@set_at_once
@dataclass(frozen=True)
class Decision:
    topic: str
    evidence: tuple[Evidence, ...]
    flags: frozenset[str] = frozenset()
    variables: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Unchecked:
    """A topic that could not be decided because the data it depends on was unavailable, or a record entry
    that could not be read and could change whether the patient is in scope (`topic` is then "scope")."""
    topic: str
    missing: tuple[str, ...]
    unreadable: tuple[str, ...] = ()       # "Condition/x: why", for a scope-changing entry left out


@dataclass(frozen=True)
class TopicOutcome:
    """One topic for one patient: fired or not, and the one reason, in words (for `avh-cds explain`)."""
    topic: str
    fired: bool
    reason: str
    evidence: tuple[Evidence, ...] = ()


@set_at_once
@dataclass(frozen=True)
class Fire:
    evidence: tuple[Evidence | None, ...]
    reason: str


Outcome = Fire | str          # a rule fires, or says in words why it does not


def _named(ev: Evidence | None) -> str:
    if ev is None:
        return "nothing on record"
    date = ev.when.isoformat() if ev.when else "an unknown date"
    return f"{ev.label} on {date} ({ev.ref})"


def patient_flags(facts: Facts) -> frozenset[str]:
    """The words a card file may test (cards/schema.json `when`/`unless`)."""
    flags = {"rapid" if facts.rapid_deterioration else ("lapsed" if facts.deterioration_lapsed else "stable")}
    flags.add(WALKING_FLAGS.get(facts.ambulatory_status, "ambulatory_unknown"))
    optional = {
        "pediatric": facts.pediatric, "age_unknown": facts.age_unknown, "pregnant": facts.pregnancy is not None,
        "recurrence": facts.recurrence, "joa_recorded": facts.joa is not None,
        "mri_thoracic_only": facts.mri_thoracic is not None and facts.mri_entire_spine is None,
        "multilevel_thoracic": facts.multilevel_thoracic, "minor_trauma": facts.injury is not None,
        "decompression_ordered": facts.decompression_ordered is not None,
        "undated_decompression": facts.undated_decompression is not None,
        "unconfirmed_compression": facts.unconfirmed_compression, "competing_cause": bool(facts.competing),
        "earlier_operation": facts.earlier_operation is not None,
        "late_radiotherapy": (facts.days_since_surgery or 0) > RADIOTHERAPY_LATE_DAYS,
    }
    flags |= set(compress(optional, optional.values()))     # the names whose test holds (a set: the same order)
    if "pediatric" in flags or "age_unknown" in flags:
        flags.add("no_adult_dose")
    if not WITHOUT_DOSE.isdisjoint(flags):
        flags.add("referral_without_dose")
    return frozenset(flags)


WALKING_FLAGS = {"ambulatory": "ambulatory", "ambulatory-with-assistance": "ambulatory",
                 "non-ambulatory": "non_ambulatory"}
WITHOUT_DOSE = frozenset({"no_adult_dose", "late_radiotherapy"})     # either makes a referral carry no dose


# --- one rule per topic ------------------------------------------------------------------------------------

def _not_pre_operative(f: Facts) -> str:
    return f"not pre-operative: operated in this episode ({_named(f.surgery)})" if f.operated else "not pre-operative"


def _base(f: Facts) -> tuple[Evidence | None, ...]:
    return (f.hemangioma, f.compression)


def surgical_decompression(f: Facts) -> Outcome:
    if not f.pre_operative:
        return _not_pre_operative(f)
    extra = (f.ambulatory_evidence, f.pregnancy, f.injury, f.decompression_ordered, f.undated_decompression,
             f.earlier_operation) + ((f.joa[1],) if f.joa else ())
    return Fire(_base(f) + f.rapid_evidence + extra, "pre-operative: surgery is the standard of care")


def corticosteroids(f: Facts) -> Outcome:
    if not f.pre_operative:
        return _not_pre_operative(f)
    if f.dexamethasone is not None:
        return f"dexamethasone in this episode: {_named(f.dexamethasone.entries[0])}"
    return Fire(_base(f) + f.rapid_evidence + f.lapsed_evidence + (f.pregnancy,), "no dexamethasone in this episode")


def spine_mri(f: Facts) -> Outcome:
    if not f.pre_operative:
        return _not_pre_operative(f)
    if f.mri_entire_spine is not None:
        return f"MRI of the entire spine in this episode: {_named(f.mri_entire_spine)}"
    return Fire(_base(f) + (f.mri_thoracic, f.pregnancy), "no MRI of the entire spine in this episode")


def preop_cta(f: Facts) -> Outcome:
    if not f.pre_operative:
        return _not_pre_operative(f)
    if f.spine_cta is not None:
        return f"vessels mapped in this episode: {_named(f.spine_cta)}"
    return Fire(_base(f) + (f.pregnancy,), "vessels not mapped in this episode")


def preop_embolization(f: Facts) -> Outcome:
    if not f.pre_operative:
        return _not_pre_operative(f)
    if f.rapid_deterioration:
        return "rapid deterioration, no waiting for embolization: " + "; ".join(_named(e) for e in f.rapid_evidence if e)
    if f.embolization is not None:
        return f"embolization in this episode: {_named(f.embolization)}"
    return Fire(_base(f) + (f.ambulatory_evidence, f.pregnancy) + f.lapsed_evidence, "no embolization in this episode")


def embolization_deferred(f: Facts) -> Outcome:
    if not f.pre_operative:
        return _not_pre_operative(f)
    if not f.rapid_deterioration:
        return "no rapid deterioration now" + (" (it lapsed)" if f.deterioration_lapsed else "")
    return Fire(_base(f) + f.rapid_evidence, "rapid deterioration")


def adjuvant_radiotherapy(f: Facts) -> Outcome:
    if f.post_operative:
        if f.radiotherapy is not None:
            return f"radiotherapy since the operation: {_named(f.radiotherapy)}"
        return Fire(_base(f) + (f.surgery,), f"operated ({_named(f.surgery)}), no radiotherapy since")
    if f.pre_operative and f.recurrence:
        if f.radiotherapy is not None:
            return f"recurrence, radiotherapy on record: {_named(f.radiotherapy)}"
        return Fire(_base(f) + (f.earlier_operation, f.undated_decompression) + f.rapid_evidence,
                    "recurrence with no radiotherapy since the earlier operation")
    return "not operated in this episode and not a recurrence"


def posterior_fixation(f: Facts) -> Outcome:
    if not f.post_operative:
        return "not operated in this episode"
    if f.posterior_fixation is not None:
        return f"posterior instrumentation in this episode: {_named(f.posterior_fixation)}"
    return Fire(_base(f) + (f.surgery,), f"no posterior instrumentation for the operation ({_named(f.surgery)})")


def steroid_duration(f: Facts) -> Outcome:
    dex = f.dexamethasone
    if dex is None or not dex.ongoing:
        return "no dexamethasone ongoing in this episode"
    if f.dexamethasone_days is None or f.dexamethasone_days <= STEROID_COURSE_DAYS:
        return f"course day {f.dexamethasone_days if f.dexamethasone_days is not None else '?'}, within the " \
               f"{STEROID_COURSE_DAYS}-day course"
    if not f.high_or_unknown_dose:
        return f"course day {f.dexamethasone_days} at {dex.daily_dose_mg:g} mg/day: not a high dose"
    return Fire(_base(f) + dex.entries, f"dexamethasone course day {f.dexamethasone_days}")


def differential_diagnosis(f: Facts) -> Outcome:
    if f.competing:
        return Fire(_base(f) + f.competing, "a competing cause is on record")
    if not f.pre_operative:
        return _not_pre_operative(f)
    if f.hemangioma_verification in ("provisional", "differential", "unconfirmed") or f.unconfirmed_compression:
        return Fire(_base(f), "the diagnosis is not confirmed")
    return "the hemangioma and the compression are confirmed"


RULES: dict[str, Callable[[Facts], Outcome]] = {
    "surgical-decompression": surgical_decompression, "corticosteroids": corticosteroids, "spine-mri": spine_mri,
    "preop-cta": preop_cta, "preop-embolization": preop_embolization, "embolization-deferred": embolization_deferred,
    "adjuvant-radiotherapy": adjuvant_radiotherapy, "posterior-fixation": posterior_fixation,
    "steroid-duration": steroid_duration, "differential-diagnosis": differential_diagnosis,
}


def narrowed(f: Facts) -> list[tuple[frozenset[str], str]]:
    """Why the episode's circumstances silence topics whatever their rules say (section 1): (the topics, why), the
    first that holds a topic says why; worked out once per patient.

    A competing cause narrows post-operative patients too: section 1 and seed-trace row 23 make the
    differential card the only one while the cause of the compression is uncertain."""
    found = []
    if f.competing:
        found.append((ALL_TOPICS - {"differential-diagnosis"},
                      "a competing cause is on record: only the differential diagnosis card fires ("
                      + ", ".join(_named(e) for e in f.competing) + ")"))
    if f.surgery_under_way is not None:
        # a recurrence's radiotherapy card is the pre-operative pathway's too ("even without repeat surgery")
        found.append((PRE_OPERATIVE_TOPICS | ({"adjuvant-radiotherapy"} if f.pre_operative else frozenset()),
                      f"surgery under way: {_named(f.surgery_under_way)}"))
    if f.pre_operative and f.unconfirmed_compression:
        found.append((ALL_TOPICS - UNCONFIRMED_COMPRESSION_TOPICS,
                      f"the compression is {f.compression_verification}: only steroids, MRI and the differential fire"))
    return found


def outcomes(f: Facts) -> list[tuple[str, Outcome]]:
    """Every topic's outcome for a patient in the pathway, in TOPIC_ORDER."""
    narrowing = narrowed(f)
    if not narrowing:
        return [(topic, RULES[topic](f)) for topic in TOPIC_ORDER]
    found = []
    for topic in TOPIC_ORDER:
        why_not = next((why for topics, why in narrowing if topic in topics), None)
        found.append((topic, why_not if why_not else RULES[topic](f)))
    return found


def scope_unchecked(f: Facts) -> list[Unchecked]:
    """A Condition left out whose code could change whether the patient is in scope: never silence."""
    if f.deceased or not f.left_out:
        return []
    unreadable = tuple(f"{lo.ref}: {lo.reason}" for lo in f.left_out if lo.could_change_scope)
    return [Unchecked("scope", ("Condition",), unreadable)] if unreadable else []


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
    if facts.deceased:
        return [], []
    if not facts.in_pathway:
        return [], scope_unchecked(facts)
    flags = patient_flags(facts)
    decisions, unchecked = [], scope_unchecked(facts)
    if "Procedure" in facts.unavailable:
        # Without procedures we cannot tell pre- from post-operative: every stage-specific card waits.
        unchecked += [Unchecked(t, ("Procedure",)) for t in TOPIC_ORDER if "Procedure" in ABSENCE_OF[t]]
    for topic, outcome in outcomes(facts):
        if not isinstance(outcome, Fire):
            continue
        missing = tuple(t for t in ABSENCE_OF[topic] if t in facts.unavailable) if facts.unavailable else ()
        if missing:
            if "Procedure" not in missing:
                unchecked.append(Unchecked(topic, missing))
            continue
        decisions.append(Decision(topic, tuple(filter(None, outcome.evidence)), flags))   # an Evidence is never false
    undecided = _undecided_for_want_of_data(facts)
    if undecided:
        reported = {u.topic for u in unchecked}
        unchecked += [Unchecked(t, missing) for t, missing in undecided.items() if t not in reported]
    return decisions, unchecked


def explain(facts: Facts) -> list[TopicOutcome]:
    """Every topic for this patient: fired or not, and the one reason why (the same rules as decide_chart)."""
    if not facts.in_pathway:
        reason = f"out of scope: {facts.scope_reason}"
        if not facts.deceased and scope_unchecked(facts):
            reason += "; but a Condition that could change this could not be read (data-unavailable card)"
        return [TopicOutcome(t, False, reason) for t in TOPIC_ORDER]
    _, unchecked = decide_chart(facts)
    return topic_outcomes(outcomes(facts), {u.topic: u.missing for u in unchecked})


def topic_outcomes(found: list[tuple[str, Outcome]], withheld: dict[str, tuple[str, ...]]) -> list[TopicOutcome]:
    """Rule outcomes in words: fired (with its entries), not fired and why, or not decided for want of data."""
    said = []
    for topic, outcome in found:
        if isinstance(outcome, Fire) and withheld.get(topic):
            said.append(TopicOutcome(topic, False, f"not decided: {', '.join(withheld[topic])} could not be read"))
        elif isinstance(outcome, Fire):
            said.append(TopicOutcome(topic, True, outcome.reason, tuple(e for e in outcome.evidence if e)))
        else:
            said.append(TopicOutcome(topic, False, outcome))
    return said


def fact_lines(f: Facts) -> list[tuple[str, str]]:
    """The facts behind the decisions, as (name, value in words) lines for `avh-cds explain` to print."""
    if not f.in_pathway:
        return [("scope", f"out of scope: {f.scope_reason}")]

    def entries(items) -> str:
        return "; ".join(e.describe() for e in items if e) or "none"
    dex = f.dexamethasone
    course = "none in this episode" if dex is None else (
        f"{'ongoing' if dex.ongoing else 'given'}, started {dex.course_start or 'on an unknown date'}, "
        f"day {f.dexamethasone_days if f.dexamethasone_days is not None else '?'}, "
        f"{f'up to {dex.daily_dose_mg:g} mg/day' if dex.daily_dose_mg is not None else 'daily dose unknown'}: "
        f"{entries(dex.entries)}")
    population = [name for name, holds in (("pediatric", f.pediatric), ("age unknown", f.age_unknown),
                                           ("pregnant", f.pregnancy is not None),
                                           ("multilevel thoracic (T5-T10)", f.multilevel_thoracic),
                                           ("minor trauma", f.injury is not None)) if holds]
    return [
        ("scope", f"{f.stage}{' (recurrence)' if f.recurrence else ''}"),
        ("episode", f"{entries([f.compression])}, start {f.episode_start or 'unknown'}"
                    f"{f' (from {f.episode_start_from})' if f.episode_start_from else ''}, window from "
                    f"{f.window_start or 'the beginning of the record'}"),
        ("hemangioma", f"{entries([f.hemangioma])} ({f.hemangioma_verification}), levels {', '.join(f.levels) or 'none'}"),
        ("operated", entries([f.surgery]) if f.surgery else "no" + (
            f"; earlier operation {entries([f.earlier_operation])}" if f.earlier_operation else "")),
        ("rapid deterioration", entries(f.rapid_evidence) if f.rapid_deterioration else
         ("lapsed: " + entries(f.lapsed_evidence)) if f.deterioration_lapsed else "no"),
        ("ambulatory status", f"{f.ambulatory_status or 'unknown'} ({entries([f.ambulatory_evidence])})"),
        ("dexamethasone", course),
        ("workup in the episode", f"MRI entire spine: {entries([f.mri_entire_spine])}; vessels mapped: "
                                  f"{entries([f.spine_cta])}; embolization: {entries([f.embolization])}; "
                                  f"decompression ordered: {entries([f.decompression_ordered])}"),
        ("since the operation", f"radiotherapy: {entries([f.radiotherapy])}; fixation: {entries([f.posterior_fixation])}"),
        ("population", f"age {f.age if f.age is not None else 'unknown'}"
                       + (f"; {', '.join(population)}" if population else "")),
    ]
