"""order-select, order-sign and encounter-discharge: the hook's draft orders and the record -> cards."""
from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any, Mapping

from service.clinical.orders import decide_discharge, decide_orders, draft_refs, planned_fixation, read_drafts, selection_refs
from service.api.answer import Answer
from service.api.engine import Engine
from service.fhir.prefetch import Prefetched


def _evaluate_orders(engine: Engine, prefetched: Prefetched, request: Mapping[str, Any], now: dt.datetime,
                     source_url: str, selections: frozenset[str] | None) -> Answer:
    context = request["context"]
    patient_id = context["patientId"]
    drafts_sent = context["draftOrders"]
    # An EHR may already hold the drafts and return them in prefetch: a draft is never "on record".
    drafts = draft_refs(drafts_sent)
    on_record = dataclasses.replace(prefetched, resources=[
        r for r in prefetched.resources if f"{r.get('resourceType')}/{r.get('id')}" not in drafts])
    facts = engine.facts(on_record, patient_id, now)
    decisions, unchecked = decide_orders(read_drafts(drafts_sent, patient_id, engine.valuesets), facts,
                                         planned_fixation(on_record.resources, patient_id, engine.valuesets),
                                         selections)
    return Answer.of(engine.cards(decisions, unchecked, facts, source_url))


def evaluate_order_sign(engine: Engine, prefetched: Prefetched, request: Mapping[str, Any],
                        now: dt.datetime, source_url: str) -> Answer:
    return _evaluate_orders(engine, prefetched, request, now, source_url, None)


def evaluate_order_select(engine: Engine, prefetched: Prefetched, request: Mapping[str, Any],
                          now: dt.datetime, source_url: str) -> Answer:
    """Speaks only about the orders just selected; the rest of the draft set is context."""
    return _evaluate_orders(engine, prefetched, request, now, source_url,
                            selection_refs(request["context"]["selections"]))


def evaluate_encounter_discharge(engine: Engine, prefetched: Prefetched, request: Mapping[str, Any],
                                 now: dt.datetime, source_url: str) -> Answer:
    facts = engine.facts(prefetched, request["context"]["patientId"], now)
    return Answer.of(engine.cards(*decide_discharge(facts), facts, source_url))
