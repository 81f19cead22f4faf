"""order-select, order-sign and encounter-discharge: the hook's draft orders and the record -> cards."""
from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any, Mapping

from service.clinical.facts import Facts
from service.clinical.orders import (DraftOrder, dated_as_filed, decide_discharge, decide_orders, read_drafts,
                                     record_at_order_time, selection_names)
from service.api.answer import Answer
from service.api.engine import Engine
from service.fhir.prefetch import Prefetched


def order_facts(engine: Engine, prefetched: Prefetched, request: Mapping[str, Any],
                now: dt.datetime) -> tuple[Facts, tuple[DraftOrder, ...]]:
    """The record's facts, its resources at order time (orders.record_at_order_time), and the hook's draft orders,
    those of an order on file that state no date dated as it (orders.dated_as_filed)."""
    patient_id = request["context"]["patientId"]
    drafts_sent = dated_as_filed(request["context"]["draftOrders"], patient_id, prefetched.resources)
    resources, changes_filed = record_at_order_time(
        drafts_sent, patient_id, prefetched.resources, engine.selector.wanted,
        lambda order: engine.validate(order)[1] is None)
    on_record = dataclasses.replace(prefetched, resources=resources)
    return (engine.facts(on_record, patient_id, now),
            read_drafts(drafts_sent, patient_id, engine.valuesets, resources, changes_filed))


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
