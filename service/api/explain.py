""""Why no card?": the facts avh-cds derived from a hook request and, per topic, fired or not and why.

The one place explanations are made, for `avh-cds explain` and for `POST /cds-services/<id>/explain` (a
development server with AVH_CDS_AUTH=off only: the blueprint is not registered otherwise, so the URL is a 404).
Every service is explained: patient-view (prefetch -> Engine.facts -> decide_chart -> Engine.cards), order-select
and order-sign (the same facts without the drafts -> decide_orders) and encounter-discharge (decide_discharge);
nothing here decides anything of its own.

The facts in words and each topic's reason come from the clinical rules themselves (`clinical.pathway.fact_lines`,
`clinical.pathway.explain`, `clinical.orders.explain_orders` and `explain_discharge`, the same rules as the
decisions): this module only gathers and prints them.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass

from flask import Blueprint, current_app, jsonify, request

from service.api.order_hooks import order_facts, selections_of
from service.api.routes import hook_call, precondition_failed
from service.clinical.cards import UNCHECKED_TOPIC
from service.clinical import orders, pathway
from service.clinical.pathway import Unchecked
from service.errors import ApiError
from service.fhir.prefetch import PrefetchFailed
from service.security import require_json
from service.security.limits import check_limits

bp = Blueprint("explain", __name__)


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


def _with_entries(outcome: pathway.TopicOutcome) -> str:
    """A fired topic's reason and the record entries behind it, each named once."""
    entries = "; ".join(e.describe() for e in dict.fromkeys(outcome.evidence))
    return f"{outcome.reason} ({entries})" if outcome.fired and entries else outcome.reason


def topic_reasons(outcomes: list[pathway.TopicOutcome], unchecked: list[Unchecked]) -> list[TopicReason]:
    """Each topic of the hook: fired or not, and the one reason why; and the data-unavailable card's."""
    reasons = [TopicReason(o.topic, o.fired, _with_entries(o)) for o in outcomes]
    if unchecked:
        missing = sorted({t for u in unchecked for t in u.missing} | {r for u in unchecked for r in u.unreadable})
        reasons.append(TopicReason(UNCHECKED_TOPIC, True, f"could not be read: {', '.join(missing)}"))
    return reasons


def explain(avh, service, body: dict, now: dt.datetime) -> Explanation:
    """The explanation of one checked hook request; raises PrefetchFailed as a call would (412)."""
    prefetched = avh.prefetch.resolve(service.prefetch, body)
    facts, decisions, unchecked, outcomes = _decided(avh.engine, prefetched, body, now)
    cards = avh.engine.cards(decisions, unchecked, facts, "")
    return Explanation(patient=facts.patient_ref, service=service.id, at=now.isoformat(timespec="seconds"),
                       facts=pathway.fact_lines(facts), topics=topic_reasons(outcomes, unchecked),
                       cards=[c["source"]["topic"]["code"] for c in cards])


def _decided(engine, prefetched, body: dict, now: dt.datetime):
    """(facts, decisions, unchecked, every topic's outcome) as the hook's own service reaches them."""
    if body["hook"] in ("order-select", "order-sign"):
        facts, drafts = order_facts(engine, prefetched, body, now)
        selections = selections_of(body)
        return (facts, *orders.decide_orders(drafts, facts, selections),
                orders.explain_orders(drafts, facts, selections))
    facts = engine.facts(prefetched, body["context"]["patientId"], now)
    if body["hook"] == "encounter-discharge":
        return (facts, *orders.decide_discharge(facts), orders.explain_discharge(facts))
    return (facts, *pathway.decide_chart(facts), pathway.explain(facts))


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
    require_json(request)       # the guard checks the service's own blueprint, not this one
    avh = current_app.extensions["avh"]
    service, body = hook_call(avh, service_id)
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
