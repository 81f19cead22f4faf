"""What a worker remembers of a chart it has seen (service/api/engine.py): the same answers as deriving them
again, with the moment of each call still deciding what depends on it."""
import datetime as dt

import pytest

from service import create_app
from service.clinical import cards as cards_module
from service.clinical.facts import chart_facts, derive_facts, facts_at, moment
from service.clinical.record import build_record
from service.config import Settings
from service.fhir.prefetch import Prefetched
from service.uuids import issued_at_ms, new_uuids
from tests.fhir_records import (NOW, PATIENT_ID, SELECTOR, VALUESETS, ago, compression, day, decompression,
                                dexamethasone, hemangioma, patient, walking)


def _chart(*resources):
    return [hemangioma(onset=day(30)), compression(onset=day(10)), patient("1970-11-26"), *resources]


def _record(resources, **kw):
    return build_record(resources, SELECTOR, PATIENT_ID, **kw)


@pytest.mark.parametrize("later", [dt.timedelta(0), dt.timedelta(days=3), dt.timedelta(days=6, hours=23),
                                   dt.timedelta(days=7, hours=1), dt.timedelta(days=400)])
def test_chart_facts_derived_once_give_the_facts_of_any_later_moment(later):
    record = _record(_chart(walking("ambulatory", ago(days=1, hours=30)), walking("non-ambulatory", ago(days=1)),
                            dexamethasone(day(2))))
    chart = chart_facts(record, VALUESETS)
    assert facts_at(chart, NOW + later) == derive_facts(record, VALUESETS, NOW + later)


def test_a_worsening_stops_counting_a_week_after_its_later_reading_with_the_same_chart():
    chart = chart_facts(_record(_chart(walking("ambulatory", ago(days=2)), walking("non-ambulatory", ago(days=1)))),
                        VALUESETS)
    assert facts_at(chart, NOW).rapid_deterioration
    assert not facts_at(chart, NOW + dt.timedelta(days=6, hours=1)).rapid_deterioration


def test_durations_and_age_follow_the_clock_with_the_same_chart():
    chart = chart_facts(_record(_chart(dexamethasone(day(2)))), VALUESETS)
    now, later = facts_at(chart, NOW), facts_at(chart, NOW + dt.timedelta(days=3))
    assert (now.dexamethasone_days, later.dexamethasone_days) == (2, 5)
    assert (now.age, later.age) == (55, 56)                     # born 1970-11-26; NOW is 2026-11-24


@pytest.mark.parametrize("hours", [0, 5, 11, 13, 23, 30, 24 * 6 + 20, 24 * 7 + 2])
def test_equal_moments_give_equal_facts(hours):
    """The engine answers a chart again by its moment: whatever facts_at reads of the clock is in it."""
    later_today = NOW.replace(hour=12)
    record = _record(_chart(walking("ambulatory", ago(days=1, hours=30)), walking("non-ambulatory", ago(days=1)),
                            dexamethasone(day(2)), dexamethasone(later_today.isoformat()), dexamethasone(None)))
    chart = chart_facts(record, VALUESETS)
    first, second = NOW.replace(hour=0) + dt.timedelta(hours=hours), NOW.replace(hour=0) + dt.timedelta(hours=hours + 0.5)
    if moment(chart, first) == moment(chart, second):
        assert facts_at(chart, first) == facts_at(chart, second)
    else:
        assert facts_at(chart, first) != facts_at(chart, second)


@pytest.fixture
def engine(tmp_path):
    return create_app(Settings.from_env({"AVH_CDS_AUTH": "off"}, sqlite_path=tmp_path / "db.sqlite3")).extensions["avh"].engine


def _cards(engine, resources, now=NOW, unavailable=()):
    prefetched = Prefetched(resources=list(resources), unavailable=dict.fromkeys(unavailable, "not read"))
    return engine.chart_answer(prefetched, PATIENT_ID, now, "http://avh.test/pathway").cards


def _without_uuids(cards):
    return [{**c, "uuid": None, "suggestions": [{**s, "uuid": None} for s in c.get("suggestions", [])]} for c in cards]


def test_a_chart_seen_again_gets_the_same_cards_with_new_uuids(engine):
    resources = _chart(walking("ambulatory", ago(days=1)))
    first, second = _cards(engine, resources), _cards(engine, resources)
    assert len(engine.charts) == 1 and len(engine.answers) == 1
    assert _without_uuids(first) == _without_uuids(second) and first
    uuids = lambda cards: {c["uuid"] for c in cards} | {s["uuid"] for c in cards for s in c.get("suggestions", [])}  # noqa: E731
    assert uuids(first).isdisjoint(uuids(second)) and len(uuids(first)) > len(first)


def test_an_answer_reads_its_uuids_at_once_one_for_each_card_and_suggestion(engine, monkeypatch):
    """One new_uuids call an answer, not one a card: each call costs ~25 k instructions."""
    counts = []
    monkeypatch.setattr(cards_module, "new_uuids", lambda count: counts.append(count) or new_uuids(count))
    cards = _cards(engine, _chart(walking("ambulatory", ago(days=1))), unavailable={"MedicationRequest"})
    uuids = [c["uuid"] for c in cards] + [s["uuid"] for c in cards for s in c.get("suggestions", [])]
    assert "data-unavailable" in {c["source"]["topic"]["code"] for c in cards} and len(cards) > 2
    assert counts == [len(uuids)] and len(set(uuids)) == len(uuids) > len(cards)
    assert all(issued_at_ms(u) is not None for u in uuids)


def test_an_answer_is_remembered_the_second_time_its_chart_and_moment_are_met(engine):
    """Most charts are opened once: cutting their answer into a template would be work for nothing."""
    resources = _chart()
    once = _cards(engine, resources)
    assert len(engine.charts) == 1 and len(engine.answers) == 0
    twice, thrice = _cards(engine, resources), _cards(engine, resources)
    assert len(engine.answers) == 1
    assert _without_uuids(once) == _without_uuids(twice) == _without_uuids(thrice)


def test_a_remembered_chart_notes_a_bounded_number_of_first_answers(engine):
    """Without AVH_CDS_PUBLIC_URL the source URL follows the Host header: a caller varying it must not grow what a
    remembered chart holds."""
    from service.api.engine import ANSWERED_NOTES
    prefetched = Prefetched(resources=_chart())
    for i in range(3 * ANSWERED_NOTES):
        engine.chart_answer(prefetched, PATIENT_ID, NOW, f"http://host-{i}.test/pathway")
    (seen, _), = engine.charts._items.values()
    assert 0 < len(seen.answered) <= ANSWERED_NOTES and len(engine.answers) == 0


def test_a_chart_is_remembered_by_a_digest_not_by_its_json(engine):
    _cards(engine, _chart())
    (patient, digest, unavailable), = engine.charts._items
    assert patient == PATIENT_ID and len(digest) == 32 and unavailable == frozenset()


def test_the_cards_returned_are_the_callers_own(engine):
    resources = _chart()
    first = _cards(engine, resources)
    first[0]["summary"] = "changed"
    first[0]["source"]["topic"]["code"] = "changed"
    assert _cards(engine, resources)[0]["source"]["topic"]["code"] != "changed"


def test_a_remembered_chart_still_answers_for_the_moment_of_the_call(engine):
    resources = _chart(walking("ambulatory", ago(days=2)), walking("non-ambulatory", ago(days=1)))
    topics = lambda cards: {c["source"]["topic"]["code"] for c in cards}      # noqa: E731
    assert "embolization-deferred" in topics(_cards(engine, resources))
    week_later = _cards(engine, resources, NOW + dt.timedelta(days=7))
    assert len(engine.charts) == 1
    assert "embolization-deferred" not in topics(week_later) and "preop-embolization" in topics(week_later)


def test_a_changed_record_is_derived_again(engine):
    before = _chart()
    after = before + [decompression(day(1))]
    assert {c["source"]["topic"]["code"] for c in _cards(engine, before)} != \
        {c["source"]["topic"]["code"] for c in _cards(engine, after)}
    assert len(engine.charts) == 2


def test_unavailable_data_is_part_of_what_is_remembered(engine):
    resources = _chart()
    complete = _cards(engine, resources)
    partial = _cards(engine, [r for r in resources if r["resourceType"] != "Procedure"], unavailable={"Procedure"})
    assert _without_uuids(complete) != _without_uuids(partial) and len(engine.charts) == 2


def test_size_zero_remembers_nothing_and_answers_the_same(tmp_path, engine):
    cold = create_app(Settings.from_env({"AVH_CDS_AUTH": "off", "AVH_CDS_MODEL_CACHE_SIZE": "0"},
                                        sqlite_path=tmp_path / "cold.sqlite3")).extensions["avh"].engine
    resources = _chart(walking("ambulatory", ago(days=2)), walking("non-ambulatory", ago(days=1)))
    assert _without_uuids(_cards(cold, resources)) == _without_uuids(_cards(engine, resources))
    _cards(cold, resources)
    assert len(cold.charts) == len(cold.answers) == 0


def test_cards_orjson_cannot_write_are_answered_and_not_remembered(engine, monkeypatch):
    huge = 2 ** 70                                       # orjson writes no integer over 64 bits
    monkeypatch.setattr(type(engine), "cards", lambda self, *args: [{"uuid": "u", "summary": "s", "n": huge,
                                                                        "source": {"topic": {"code": "t"}}}])
    assert engine.chart_answer(Prefetched(resources=_chart()), PATIENT_ID, NOW, "http://x/p").cards[0]["n"] == huge
    assert len(engine.answers) == 0


def test_resources_orjson_cannot_write_are_derived_every_time(engine):
    chart = _chart()
    resources = [{**chart[0], "extension": [{"url": "http://x", "valueDecimal": 2 ** 70}]}, *chart[1:]]  # orjson cannot write it
    first, second = _cards(engine, resources), _cards(engine, resources)
    assert _without_uuids(first) == _without_uuids(second) and len(engine.charts) == 0


def test_the_cache_size_is_a_setting():
    assert Settings.from_env({}).model_cache_size == 1024
    assert Settings.from_env({"AVH_CDS_MODEL_CACHE_SIZE": "0"}).model_cache_size == 0
