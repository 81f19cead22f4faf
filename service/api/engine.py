"""Wires the pure pathway to one hook call: resources -> record -> facts -> decisions -> cards.

patient-view fires at every opening of a chart, mostly on a chart that has not changed since the last
one, so a worker remembers (up to model_cache_size of each and half of cache_max_bytes each, least
recently used out first) what it derived: chart facts by a digest of the exact JSON of all the resources
read, and the cards of patient-view by chart and moment (clinical/facts.moment: the day, and which worsening
is still recent), the second time that chart and moment are met (most charts are opened once a day, and
cutting the answer for a chart that does not come back cost more than deriving it). The pathway stays pure;
only repeated work goes.
"""
from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import orjson

from service.api.answer import Answer, AnswerTemplate
from service.clinical.cards import CardDefinitionError, CardLibrary, JsonTexts, give_uuids, left_out_notes, template_variables
from service.clinical.facts import ChartFacts, Facts, chart_facts, facts_at, moment
from service.clinical.pathway import Decision, Unchecked, decide_chart
from service.clinical.record import Selector, Validator, build_record
from service.gcpause import collector_paused
from service.lru import Lru
from service.fhir.prefetch import Prefetched
from service.clinical.valuesets import ValueSets, load_valuesets


# What a remembered chart holds (its ChartFacts: ~3.5 KB whatever the chart's size, measured with tracemalloc, and
# its key: a 32-byte digest), and an answer beside its cards' JSON.
SEEN_CHART_BYTES = 4096
ANSWER_BYTES = 1024
# (moment, source URL) pairs a remembered chart notes as answered once; past it the notes start again, so a caller
# varying the URL (the Host header, without AVH_CDS_PUBLIC_URL) cannot grow a chart's memory.
ANSWERED_NOTES = 16


@dataclass(frozen=True, eq=False)
class SeenChart:
    """A chart met before, remembered by a digest of the exact JSON of what was read of it; hashed by identity, so
    that the answers given for it are found without hashing its facts. `answered`: the (moment, source URL) it
    was answered for once: the second time, its answer is remembered."""
    chart: ChartFacts
    answered: set = field(default_factory=set)


def chart_key(resources: list, patient_id: str, unavailable) -> tuple | None:
    """What a chart is remembered by: the patient, a digest of the resources' exact JSON (32 bytes held, not the
    chart's megabytes) and what could not be read; None when orjson cannot write a resource (an integer over 64
    bits): such a chart is derived every time."""
    try:
        resources_json = orjson.dumps(resources)
    except TypeError:
        return None
    return patient_id, hashlib.blake2b(resources_json, digest_size=32).digest(), frozenset(unavailable)


@dataclass(frozen=True)
class Engine:
    valuesets: ValueSets
    selector: Selector
    library: CardLibrary
    validate: Validator
    charts: Lru = field(default_factory=lambda: Lru(0))     # SeenChart by chart_key
    answers: Lru = field(default_factory=lambda: Lru(0))    # patient-view AnswerTemplate by (SeenChart, moment, url)

    @classmethod
    def load(cls, cards_dir: Path, model_cache_size: int = 0, max_json_depth: int = 64,
             cache_max_bytes: int = 0) -> "Engine":
        """cache_max_bytes: what the two caches (charts, answers) hold together, half each."""
        if not (cards_dir / "valuesets").is_dir():      # else an empty set of value sets fails later, naming a set
            raise CardDefinitionError(f"AVH_CDS_CARDS_DIR {cards_dir}: no card library there (no valuesets/ directory)")
        valuesets = load_valuesets(cards_dir / "valuesets")
        half = cache_max_bytes // 2
        return cls(valuesets, Selector(valuesets), CardLibrary.load(cards_dir), Validator(max_json_depth),
                   Lru(model_cache_size, half, name="charts"), Lru(model_cache_size, half, name="answers"))

    def chart(self, prefetched: Prefetched, patient_id: str) -> SeenChart:
        """The chart the resources read make up, derived once while remembered: the record (dedup, validation)
        and ChartFacts are pure functions of the resources, the patient and what could not be read."""
        key = chart_key(prefetched.resources, patient_id, prefetched.unavailable) if self.charts.size > 0 else None
        seen = self.charts.get(key) if key else None
        if seen is None:
            with collector_paused():   # what is read all lives until the call ends (service/gcpause.py)
                record = build_record(prefetched.resources, self.selector, patient_id, prefetched.unavailable,
                                      self.validate, selected=prefetched.selected_by == self.selector.wanted)
                seen = SeenChart(chart_facts(record, self.valuesets))
            if key:
                self.charts.put(key, seen, SEEN_CHART_BYTES)
        return seen

    def facts(self, prefetched: Prefetched, patient_id: str, now: dt.datetime) -> Facts:
        return facts_at(self.chart(prefetched, patient_id).chart, now)

    def chart_answer(self, prefetched: Prefetched, patient_id: str, now: dt.datetime, source_url: str) -> Answer:
        """patient-view's cards; a chart seen again at an equal moment (same day, same recent worsening) gets the
        same cards, each time with new uuids. The answer is remembered the second time (chart, moment) is met."""
        seen = self.chart(prefetched, patient_id)
        when = (moment(seen.chart, now), source_url)
        key = (seen, *when)
        template: AnswerTemplate | None = self.answers.get(key)
        if template is None:
            facts = facts_at(seen.chart, now, when[0])
            cards = self.cards(*decide_chart(facts), facts, source_url)
            again = when in seen.answered
            if len(seen.answered) >= ANSWERED_NOTES:
                seen.answered.clear()
            seen.answered.add(when)
            template = AnswerTemplate.of(cards) if again and self.answers.size > 0 else None
            if template is None:        # met once, nothing remembered, or a value orjson cannot write
                return Answer.of(cards)
            self.answers.put(key, template, sum(map(len, template.pieces)) + ANSWER_BYTES)
        return template.fill()

    def cards(self, decisions: list[Decision], unchecked: list[Unchecked], facts: Facts, source_url: str) -> list[dict]:
        """The cards of the decisions, in the order an answer shows them (rendered in that order, not sorted after)."""
        variables = JsonTexts(template_variables(facts))     # the cards share the variables' escaped texts
        library = self.library
        cards = [library.render(d, facts, source_url, left_out_notes(d, facts), variables)
                 for d in library.in_card_order(decisions)]
        age_unread = "Patient" in facts.unavailable and bool(decisions)
        if unchecked or age_unread:
            cards.append(library.unchecked_card(unchecked, source_url, age_unread))
        return give_uuids(cards)


def evaluate_patient_view(engine: Engine, prefetched: Prefetched, request: Mapping[str, Any],
                          now: dt.datetime, source_url: str) -> Answer:
    return engine.chart_answer(prefetched, request["context"]["patientId"], now, source_url)
