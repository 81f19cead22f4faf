"""Wires the pure pathway to one hook call: resources -> record -> facts -> decisions -> cards."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from .cards import CardLibrary, left_out_notes, sort_cards, template_variables
from .clinical.facts import Facts, derive_facts
from .clinical.pathway import Decision, Unchecked, decide_chart
from .clinical.record import Selector, Validator, build_record
from .prefetch import Prefetched
from .valuesets import ValueSets, load_valuesets


@dataclass(frozen=True)
class Engine:
    valuesets: ValueSets
    selector: Selector
    library: CardLibrary
    validate: Validator

    @classmethod
    def load(cls, cards_dir: Path, model_cache_size: int = 0) -> "Engine":
        valuesets = load_valuesets(cards_dir / "valuesets")
        return cls(valuesets, Selector(valuesets), CardLibrary.load(cards_dir), Validator(model_cache_size))

    def facts(self, prefetched: Prefetched, patient_id: str, now: dt.datetime) -> Facts:
        record = build_record(prefetched.resources, self.selector, patient_id, prefetched.unavailable, self.validate)
        return derive_facts(record, self.valuesets, now)

    def chart_cards(self, facts: Facts, source_url: str) -> list[dict]:
        return self.cards(*decide_chart(facts), facts, source_url)

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
