"""order-select, order-sign and encounter-discharge: the hook's draft orders and the record -> cards."""
from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any, Mapping

from service.clinical.facts import Facts
from service.clinical.orders import (WITHDRAWN, DraftOrder, decide_discharge, decide_orders, draft_refs,
                                     named_orders, read_drafts, selection_names)
from service.api.answer import Answer
from service.api.engine import Engine
from service.fhir.prefetch import Prefetched


def order_facts(engine: Engine, prefetched: Prefetched, request: Mapping[str, Any],
                now: dt.datetime) -> tuple[Facts, tuple[DraftOrder, ...]]:
    """The record's facts and the hook's draft orders. An EHR may already hold the drafts and return them in
    prefetch: a draft is never "on record". A draft that withdraws an order (stopped, cancelled, ...) is what became
    of that order: on record in place of the version prefetch returns (else stopping the ongoing dexamethasone order
    while signing a new one would leave the course days taken uncounted). A draft of an order on record that the
    record cannot read (invalid FHIR, such as an unreadable dosage), withdrawn or changed, would take that version off
    the record and tell nothing in its place: prefetch's version stays instead."""
    context = request["context"]
    patient_id = context["patientId"]
    drafts_sent = context["draftOrders"]
    on_file = {f"{r.get('resourceType')}/{r.get('id')}" for r in prefetched.resources}
    withdrawn, unreadable = [], set()
    for order in named_orders(drafts_sent, patient_id):
        ref = f"{order['resourceType']}/{order['id']}"
        gone = str(order.get("status")) in WITHDRAWN
        if not (gone or ref in on_file) or not engine.selector.wanted(order):
            continue
        if engine.validate(order)[1] is not None:
            unreadable.add(ref)
        elif gone:
            withdrawn.append(order)
    drafts = draft_refs(drafts_sent) - unreadable
    on_record = dataclasses.replace(prefetched, resources=[
        r for r in prefetched.resources if f"{r.get('resourceType')}/{r.get('id')}" not in drafts] + withdrawn)
    return (engine.facts(on_record, patient_id, now),
            read_drafts(drafts_sent, patient_id, engine.valuesets, on_record.resources))


def selections_of(request: Mapping[str, Any]) -> frozenset[str] | None:
    """order-select speaks only of the orders just selected (the rest of the draft set is context); order-sign
    of every draft (None)."""
    return selection_names(request["context"]["selections"]) if request["hook"] == "order-select" else None


def evaluate_orders(engine: Engine, prefetched: Prefetched, request: Mapping[str, Any], now: dt.datetime,
                    source_url: str) -> Answer:
    """order-sign and order-select."""
    facts, drafts = order_facts(engine, prefetched, request, now)
    decisions, unchecked = decide_orders(drafts, facts, selections_of(request))
    return Answer.of(engine.cards(decisions, unchecked, facts, source_url))


def evaluate_encounter_discharge(engine: Engine, prefetched: Prefetched, request: Mapping[str, Any],
                                 now: dt.datetime, source_url: str) -> Answer:
    facts = engine.facts(prefetched, request["context"]["patientId"], now)
    return Answer.of(engine.cards(*decide_discharge(facts), facts, source_url))
