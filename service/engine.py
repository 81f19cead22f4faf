"""Wires the pure pathway to one hook call: resources -> record -> facts -> decisions -> cards.

patient-view fires at every opening of a chart, mostly on a chart that has not changed since the last
one, so a worker remembers (up to model_cache_size of each, least recently used out first) what it
derived: validated models by each resource's exact JSON, chart facts by the record's exact JSON, and the
cards of patient-view by the facts they were decided on. The pathway stays pure; only repeated work goes.
"""
from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import orjson

from .cards import CardLibrary, left_out_notes, sort_cards, template_variables
from .clinical.facts import ChartFacts, Facts, chart_facts, facts_at
from .clinical.pathway import Decision, Unchecked, decide_chart
from .clinical.record import Selector, Validator, build_record
from .lru import Lru
from .prefetch import Prefetched
from .valuesets import ValueSets, load_valuesets


@dataclass(frozen=True)
class Engine:
    valuesets: ValueSets
    selector: Selector
    library: CardLibrary
    validate: Validator
    charts: Lru = field(default_factory=lambda: Lru(0))     # ChartFacts by (patient, record fingerprint, unavailable)
    answers: Lru = field(default_factory=lambda: Lru(0))    # patient-view cards (JSON) by (facts, source url)

    @classmethod
    def load(cls, cards_dir: Path, model_cache_size: int = 0) -> "Engine":
        valuesets = load_valuesets(cards_dir / "valuesets")
        return cls(valuesets, Selector(valuesets), CardLibrary.load(cards_dir), Validator(model_cache_size),
                   Lru(model_cache_size), Lru(model_cache_size))

    def facts(self, prefetched: Prefetched, patient_id: str, now: dt.datetime) -> Facts:
        record = build_record(prefetched.resources, self.selector, patient_id, prefetched.unavailable, self.validate,
                              fingerprint=self.charts.size > 0)
        key = (patient_id, record.fingerprint, record.unavailable) if record.fingerprint is not None else None
        chart: ChartFacts | None = self.charts.get(key) if key else None
        if chart is None:
            chart = chart_facts(record, self.valuesets)
            if key:
                self.charts.put(key, chart)
        return facts_at(chart, now)

    def chart_cards(self, facts: Facts, source_url: str) -> list[dict]:
        """The cards for a chart; the same facts give the same cards, each time with new uuids."""
        key = (facts, source_url)
        answer = self.answers.get(key)
        if answer is None:
            cards = self.cards(*decide_chart(facts), facts, source_url)
            try:
                answer = orjson.dumps(cards) if self.answers.size > 0 else None
            except TypeError:           # a value orjson cannot write: the app's JSON provider will, unremembered
                answer = None
            if answer is None:
                return cards
            self.answers.put(key, answer)
        return with_new_uuids(orjson.loads(answer))     # orjson.loads: a private deep copy, in C

    def cards(self, decisions: list[Decision], unchecked: list[Unchecked], facts: Facts, source_url: str) -> list[dict]:
        variables = template_variables(facts)
        cards = [self.library.render(d, facts, source_url, left_out_notes(d, facts), variables) for d in decisions]
        if unchecked:
            cards.append(self.library.unchecked_card(unchecked, source_url))
        return sort_cards(cards)


def evaluate_patient_view(engine: Engine, prefetched: Prefetched, request: Mapping[str, Any],
                          now: dt.datetime, source_url: str) -> list[dict]:
    facts = engine.facts(prefetched, request["context"]["patientId"], now)
    return engine.chart_cards(facts, source_url)


def with_new_uuids(cards: list[dict]) -> list[dict]:
    """A card's uuid (and its suggestions') names one showing of it: feedback comes back by it."""
    for card in cards:
        card["uuid"] = str(uuid.uuid4())
        for suggestion in card.get("suggestions", ()):
            suggestion["uuid"] = str(uuid.uuid4())
    return cards
