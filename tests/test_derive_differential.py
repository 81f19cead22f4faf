"""chart_facts reading each entry once (branch `derive`: a medication's concept, the walking values, the hemangioma
candidates, the observations' concepts; patient_flags' constant tables) against the derivation as it was at bca002b
(tests/reference/facts_bca002b.py): the same ChartFacts, moments, facts of the moment, flags, decisions and cards for
every fixture, the bench's charts (the typical one at several sizes and seeds, the size-limit mix, the same-code
series) and generated charts of many episodes (test_facts_differential's strategy)."""
from __future__ import annotations

import datetime as dt

import orjson
from hypothesis import HealthCheck, given, settings

from bench.charts import limit_chart, same_code_chart
from bench.patients import PATIENT_ID as BENCH_PATIENT, patient_view_request
from service.clinical import facts as after
from service.clinical.pathway import patient_flags
from tests.fhir_records import NOW, PATIENT_ID
from tests.reference import facts_bca002b as before
from tests.test_facts_differential import MOMENTS, assert_derived_as_before, assert_fixtures_derived_as_before, charts

TODAY = NOW.date()


def derived_as_before(resources: list[dict], unavailable=(), patient_id: str = PATIENT_ID) -> after.ChartFacts:
    """The same facts as before (assert_derived_as_before), and at each moment the same flags for the cards."""
    chart = assert_derived_as_before(resources, unavailable, patient_id, oracle=before)
    for now in MOMENTS:
        facts = after.facts_at(chart, now)
        assert patient_flags(facts) == before.patient_flags(facts)
    return chart


def sent_resources(request: dict) -> list[dict]:
    prefetch = request["prefetch"]
    sent = [e["resource"] for b in prefetch.values() if b.get("resourceType") == "Bundle" for e in b.get("entry", [])]
    return sent + [r for r in prefetch.values() if r.get("resourceType") == "Patient"]


def test_every_fixture_derives_as_before():
    assert_fixtures_derived_as_before(oracle=before)


def test_bench_charts_derive_as_before():
    """The typical chart (bench.pathway's), the size-limit mix of every relevant type, the same-code series."""
    derived = [derived_as_before(sent_resources(patient_view_request(n, seed, TODAY)), (), BENCH_PATIENT)
               for n, seed in ((10, 0), (100, 0), (100, 1), (1000, 2))]
    derived += [derived_as_before(sent_resources(orjson.loads(limit_chart(60 + 40 * seed, seed, TODAY))), (),
                                         BENCH_PATIENT) for seed in range(6)]
    derived += [derived_as_before(sent_resources(orjson.loads(same_code_chart(readings, today))), (), BENCH_PATIENT)
                for readings, today in ((200, TODAY), (3, TODAY - dt.timedelta(days=9)))]
    assert all(chart.facts.in_pathway for chart in derived)          # every one of them reaches the facts
    assert derived[1].facts.ambulatory_evidence is not None and derived[1].facts.dexamethasone is not None


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(charts())
def test_generated_charts_derive_as_before(chart):
    derived_as_before(chart)
