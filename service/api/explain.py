""""Why no card?": the facts avh-cds derived from a patient-view request and, per topic, fired or not and why.

The one place explanations are made, for `avh-cds explain` and for `POST /cds-services/<id>/explain` (a
development server with AVH_CDS_AUTH=off only: the blueprint is not registered otherwise, so the URL is a 404).
The facts and decisions come from the service's own path (prefetch -> Engine.facts -> decide_chart ->
Engine.cards); nothing here decides anything of its own.

`topic_reasons` is the seam for the pathway's own per-topic reasons. Until the clinical pathway exposes
them, a topic that did not fire is explained by asking the pathway itself: which single fact, taken away
or made true (LEVERS), would make `decide_chart` fire it. When `clinical.pathway.explain(facts)` lands,
`topic_reasons` returns its (topic, fired, reason) triples and LEVERS go.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
from dataclasses import dataclass
from typing import Any, Callable

from flask import Blueprint, current_app, jsonify

from service.api.routes import hook_call, precondition_failed
from service.clinical.cards import UNCHECKED_TOPIC
from service.clinical.facts import STEROID_COURSE_DAYS, Evidence, Facts
from service.clinical.pathway import TOPIC_ORDER, Decision, Unchecked, decide_chart
from service.errors import ApiError
from service.fhir.prefetch import PrefetchFailed
from service.security.limits import check_limits

bp = Blueprint("explain", __name__)
EXPLAINED_HOOKS = frozenset({"patient-view"})


@dataclass(frozen=True)
class TopicReason:
    topic: str
    fired: bool
    reason: str


@dataclass(frozen=True)
class Explanation:
    patient: str
    service: str
    at: str
    facts: list[tuple[str, str]]
    topics: list[TopicReason]
    cards: list[str]            # the topics of the cards the service answers for this request

    def as_json(self) -> dict:
        return {"patient": self.patient, "service": self.service, "at": self.at,
                "facts": [{"fact": name, "value": value} for name, value in self.facts],
                "topics": [dataclasses.asdict(t) for t in self.topics], "cards": self.cards}

    @classmethod
    def from_json(cls, data: dict) -> "Explanation":
        return cls(data["patient"], data["service"], data["at"], [(f["fact"], f["value"]) for f in data["facts"]],
                   [TopicReason(**t) for t in data["topics"]], data["cards"])


# --- the facts, in words ------------------------------------------------------------------------

def _words(value: Any) -> str:
    if value is None or value == () or value == frozenset():
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Evidence):
        return value.describe()
    if isinstance(value, (tuple, list, frozenset, set)):
        parts = [_words(v) for v in value]
        return "; ".join(sorted(parts) if isinstance(value, (frozenset, set)) else parts)
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_words(v)}" for k, v in value.items())
    if dataclasses.is_dataclass(value):
        return ", ".join(f"{_words(getattr(value, f.name))}" for f in dataclasses.fields(value))
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def fact_rows(facts: Facts) -> list[tuple[str, str]]:
    """Every field and derived property of the facts, named in words ("dexamethasone days": "4")."""
    names = [f.name for f in dataclasses.fields(facts)]
    names += [n for n, v in vars(type(facts)).items() if isinstance(v, property)]
    return [(name.replace("_", " "), _words(getattr(facts, name))) for name in names if name != "patient_ref"]


# --- per topic: fired or not, and the one reason ----------------------------------------------

@dataclass(frozen=True)
class Lever:
    """One fact changed to see whether a topic would then fire: `applies` to these facts, `change` them, `says`
    why the topic stayed silent."""
    applies: Callable[[Facts], bool]
    change: Callable[[Facts], Facts]
    says: Callable[[Facts], str]


R = dataclasses.replace
LEVERS = (
    Lever(lambda f: f.operated, lambda f: R(f, operated=False, surgery=None),
          lambda f: f"operated: {_words(f.surgery)}"),
    Lever(lambda f: not f.operated, lambda f: R(f, operated=True),
          lambda f: "not operated (no decompression on record)"),
    Lever(lambda f: f.rapid_deterioration, lambda f: R(f, rapid_deterioration=False, rapid_evidence=()),
          lambda f: f"deficit progressing rapidly: {_words(f.rapid_evidence)}"),
    Lever(lambda f: not f.rapid_deterioration, lambda f: R(f, rapid_deterioration=True),
          lambda f: "no rapid deterioration on record"),
    Lever(lambda f: f.mri_entire_spine is not None, lambda f: R(f, mri_entire_spine=None),
          lambda f: f"MRI of the entire spine on record: {_words(f.mri_entire_spine)}"),
    Lever(lambda f: f.spine_cta is not None, lambda f: R(f, spine_cta=None),
          lambda f: f"CT angiography on record: {_words(f.spine_cta)}"),
    Lever(lambda f: f.embolization is not None, lambda f: R(f, embolization=None),
          lambda f: f"embolization on record: {_words(f.embolization)}"),
    Lever(lambda f: f.dexamethasone is not None, lambda f: R(f, dexamethasone=None, dexamethasone_days=None),
          lambda f: f"dexamethasone on record: {_words(f.dexamethasone)}"),
    Lever(lambda f: f.radiotherapy is not None, lambda f: R(f, radiotherapy=None),
          lambda f: f"radiotherapy given or planned: {_words(f.radiotherapy)}"),
    Lever(lambda f: f.posterior_fixation is not None, lambda f: R(f, posterior_fixation=None),
          lambda f: f"posterior fixation on record: {_words(f.posterior_fixation)}"),
    Lever(lambda f: not f.steroid_course_exceeded, lambda f: R(f, dexamethasone_days=STEROID_COURSE_DAYS + 1),
          lambda f: (f"dexamethasone day {f.dexamethasone_days}, not beyond the {STEROID_COURSE_DAYS}-day course"
                     if f.dexamethasone_days is not None else "no dexamethasone course on record")),
    Lever(lambda f: f.hemangioma_verification == "confirmed", lambda f: R(f, hemangioma_verification="provisional"),
          lambda f: "the diagnosis is confirmed"),
)


OUT_OF_SCOPE = ("not in the pathway: the record holds no current vertebral hemangioma together with a current "
                "spinal cord compression (nothing else is considered)")


def _silence(topic: str, facts: Facts) -> str:
    """The fact, or the two facts, whose change would make the pathway fire `topic`."""
    levers = [lever for lever in LEVERS if lever.applies(facts)]
    for chosen in itertools.chain(itertools.combinations(levers, 1), itertools.combinations(levers, 2)):
        changed = facts
        for lever in chosen:
            changed = lever.change(changed)
        if any(d.topic == topic for d in decide_chart(changed)[0]):
            return "; and ".join(lever.says(facts) for lever in chosen)
    return "its rule does not hold for these facts"


def topic_reasons(facts: Facts, decisions: list[Decision], unchecked: list[Unchecked]) -> list[TopicReason]:
    """Each topic of the pathway: fired or not, and the one reason why."""
    fired = {d.topic: d for d in decisions}
    withheld = {u.topic: u for u in unchecked}
    reasons = []
    for topic in TOPIC_ORDER:
        if topic in fired:
            reasons.append(TopicReason(topic, True, _words(tuple(dict.fromkeys(fired[topic].evidence)))))
        elif topic in withheld:
            reasons.append(TopicReason(topic, False, f"not decided: {', '.join(withheld[topic].missing)} could not "
                                                     "be read (see the data-unavailable card)"))
        elif not facts.in_pathway:
            reasons.append(TopicReason(topic, False, OUT_OF_SCOPE))
        else:
            reasons.append(TopicReason(topic, False, _silence(topic, facts)))
    if unchecked:
        missing = sorted({t for u in unchecked for t in u.missing})
        reasons.append(TopicReason(UNCHECKED_TOPIC, True, f"could not be read: {', '.join(missing)}"))
    return reasons


def explain(avh, service, body: dict, now: dt.datetime) -> Explanation:
    """The explanation of one checked hook request; raises PrefetchFailed as a call would (412)."""
    prefetched = avh.prefetch.resolve(service.prefetch, body)
    patient_id = body["context"]["patientId"]
    facts = avh.engine.facts(prefetched, patient_id, now)
    decisions, unchecked = decide_chart(facts)
    cards = avh.engine.cards(decisions, unchecked, facts, "")
    return Explanation(patient=facts.patient_ref, service=service.id, at=now.isoformat(timespec="seconds"),
                       facts=fact_rows(facts), topics=topic_reasons(facts, decisions, unchecked),
                       cards=[c["source"]["topic"]["code"] for c in cards])


def format_table(explanation: Explanation) -> str:
    """The explanation as a terminal reads it: the facts, then one line per topic."""
    width = max(len(name) for name, _ in explanation.facts)
    lines = [f"{explanation.patient} ({explanation.service}, at {explanation.at})", "", "Facts"]
    lines += [f"  {name:<{width}}  {value}" for name, value in explanation.facts]
    topic_width = max(len(t.topic) for t in explanation.topics)
    lines += ["", "Topics", f"  {'topic':<{topic_width}}  {'fired?':<9}  why"]
    lines += [f"  {t.topic:<{topic_width}}  {'FIRED' if t.fired else 'not fired':<9}  {t.reason}"
              for t in explanation.topics]
    lines += ["", "Cards the service answers: " + (", ".join(explanation.cards) or "none")]
    return "\n".join(lines)


@bp.post("/cds-services/<service_id>/explain")
def explain_call(service_id: str):
    avh = current_app.extensions["avh"]
    service, body = hook_call(service_id)
    if service.hook not in EXPLAINED_HOOKS:
        raise ApiError(400, "not_explained", f"explain covers the patient-view service; {service.id} answers "
                                             f"{service.hook} (order-time cards depend on the draft orders)")
    settings = avh.settings
    check_limits(body, settings.max_json_depth, settings.max_prefetch_resources)
    server = body.get("fhirServer")
    policy = current_app.extensions["avh_security"].development_fhir
    if isinstance(server, str) and not policy.allows(server):
        raise ApiError(403, "fhir_server_not_allowed", f"fhirServer {server[:200]!r} is not one avh-cds may contact "
                                                       f"(development: {policy.describe()}; AVH_CDS_FHIR_SERVERS)")
    try:
        explanation = explain(avh, service, body, dt.datetime.now(dt.timezone.utc))
    except PrefetchFailed as exc:
        return precondition_failed(exc)
    return jsonify(explanation.as_json())
