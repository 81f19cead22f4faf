"""Rendering the cards (branch render7) against b1b5b7a's (tests/reference/cards_b1b5b7a.py): the same answer bytes,
uuids aside, for the four hooks over the fixtures, the bench's charts and generated charts, at several moments."""
import datetime as dt
import re

import orjson
import pytest
from hypothesis import HealthCheck, given, settings

from bench.patients import patient_view_request
from service.api.answer import Answer
from service.clinical.orders import decide_discharge, decide_orders, read_drafts
from service.clinical.pathway import decide_chart
from service.config import PROJECT_ROOT
from service.clinical.valuesets import CPT
from service.fhir.prefetch import Prefetched
from tests import test_facts_differential as generated
from tests.fhir_records import NOW, bounds_duration, collection, draft_dexamethasone, draft_order
from tests.fixture_cards import ENGINE, all_fixtures
from tests.reference import cards_b1b5b7a as before

BEFORE = before.CardLibrary.load(PROJECT_ROOT / "cards")
UUID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
MOMENTS = [NOW + dt.timedelta(days=d) for d in (0, 3, 40, 400)]
URL = "http://cds.test/pathway"


def _written(cards: list[dict]) -> tuple:
    answer = Answer.of(cards)
    return (UUID.sub(b"U", answer.json), answer.topics,
            [(topic, label) for _, _, topic, label in answer.suggested], UUID.sub(b"U", orjson.dumps(answer.issued)))


def _drafts(pid: str, cards: list[dict]) -> list[dict]:
    """Every create action of the patient-view cards as a draft order, and drafts that draw update and delete
    suggestions (surgery without fixation, embolization, a long dexamethasone course)."""
    drafts = [{**a["resource"], "id": f"d{i}"} for i, a in enumerate(
        a for c in orjson.loads(orjson.dumps(cards)) for s in c.get("suggestions", []) for a in s["actions"]
        if a["type"] == "create")]
    return drafts + [draft_order(CPT, "63046", "Laminectomy, thoracic", patient_id=pid, id="surg-1"),
                     draft_order(CPT, "37243", "Vascular embolization for tumor", patient_id=pid, id="emb-1"),
                     draft_dexamethasone(patient_id=pid, id="dex-1", dosage=[bounds_duration(30, "d")])]


def assert_rendered_as_before(resources: list[dict], pid: str, unavailable=()) -> int:
    """Each hook's cards at each moment, rendered both ways; the number of cards compared."""
    compared = 0
    prefetched = Prefetched(resources=list(resources), unavailable=dict.fromkeys(unavailable, "not read"))
    for now in MOMENTS:
        facts = ENGINE.facts(prefetched, pid, now)
        chart = decide_chart(facts)
        drafts = read_drafts(collection(_drafts(pid, ENGINE.cards(*chart, facts, URL))), pid, ENGINE.valuesets)
        selected = frozenset(d.ref for d in drafts[::2])
        for decided in (chart, decide_discharge(facts), decide_orders(drafts, facts, None),
                        decide_orders(drafts, facts, selected)):
            new, old = ENGINE.cards(*decided, facts, URL), before.engine_cards(BEFORE, *decided, facts, URL)
            assert _written(new) == _written(old)
            compared += len(new)
    return compared


def test_every_fixture_renders_as_before():
    compared = 0
    for fx in all_fixtures():
        resources = fx.resources()
        for unavailable in ((), ("Procedure",), ("Observation",), ("MedicationRequest",), ("Patient",)):
            kept = [r for r in resources if r["resourceType"] not in unavailable]
            compared += assert_rendered_as_before(kept, fx.patient_id, unavailable)
    assert compared > 1000


@pytest.mark.parametrize("n, seed", [(10, 0), (100, 0), (100, 1), (1000, 2)])
def test_bench_charts_render_as_before(n, seed):
    request = patient_view_request(n, seed=seed)
    prefetch = request["prefetch"]
    resources = [e["resource"] for b in prefetch.values() if b.get("resourceType") == "Bundle" for e in b["entry"]]
    resources += [r for r in prefetch.values() if r.get("resourceType") == "Patient"]
    assert assert_rendered_as_before(resources, request["context"]["patientId"]) > 4


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(generated.charts())
def test_generated_charts_render_as_before(chart):
    assert_rendered_as_before(chart, generated.PATIENT_ID)
