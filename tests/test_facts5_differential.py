"""chart_facts with a dexamethasone course read in one pass, a concept's codings and value sets read without
comprehensions and a Condition's levels kept through a set (branch `facts5`) against the derivation as it was at
af4f64a (tests/reference/facts_af4f64a.py): the same ChartFacts, moments, facts of the moment, decisions and cards for
every fixture, the bench's charts and generated charts (test_facts_differential's, and ones of dosed courses, levels
in words, several codings and hostile shapes); and the rewritten readers, each on its own, the same values."""
from __future__ import annotations

import datetime as dt

import orjson
from hypothesis import HealthCheck, given, settings, strategies as st

from bench.charts import limit_chart, same_code_chart
from bench.patients import PATIENT_ID as BENCH_PATIENT, patient_view_request
from service.clinical import facts as after
from service.clinical.elements import read_element
from service.clinical.valuesets import codings, sets_holding
from tests.fhir_records import NOW, PATIENT_ID, VALUESETS
from tests.reference import facts_af4f64a as before
from tests.test_derive_differential import sent_resources
from tests.test_facts_differential import (DEXAMETHASONE, SITES, a_condition, assert_derived_as_before,
                                           assert_fixtures_derived_as_before, charts, codes_of, ends)

TODAY = NOW.date()
RELEVANT = codes_of("spinal-cord-compression", "vertebral-hemangioma", "hemangioma-site-unspecified",
                    "ambulatory-status", "lower-extremity-motor-score", "dexamethasone", "radiotherapy",
                    "competing-cause", "neurologic-deficit")
SUBJECT = {"reference": f"Patient/{PATIENT_ID}"}


def test_every_fixture_derives_as_before():
    assert_fixtures_derived_as_before(oracle=before)


def test_bench_charts_derive_as_before():
    """The typical chart (bench.pathway's, whose course is one dosed order), the size-limit mix, the same-code series."""
    derived = [assert_derived_as_before(sent_resources(patient_view_request(n, seed, TODAY)), (), BENCH_PATIENT,
                                        oracle=before) for n, seed in ((10, 0), (100, 0), (100, 1), (1000, 2))]
    derived += [assert_derived_as_before(sent_resources(orjson.loads(limit_chart(60 + 40 * seed, seed, TODAY))), (),
                                         BENCH_PATIENT, oracle=before) for seed in range(6)]
    derived += [assert_derived_as_before(sent_resources(orjson.loads(same_code_chart(readings, today))), (),
                                         BENCH_PATIENT, oracle=before)
                for readings, today in ((200, TODAY), (3, TODAY - dt.timedelta(days=9)))]
    assert all(chart.facts.in_pathway for chart in derived)
    assert derived[1].facts.dexamethasone is not None and derived[1].facts.levels


# --- generated: dosed courses, levels in words, several codings, hostile shapes --------------------------------

def a_date():
    days = st.integers(-400, 400) | st.integers(-20, 0).map(lambda d: (NOW + dt.timedelta(days=d)).strftime("%Y-%m-%dT%H:%M:%SZ"))
    return st.one_of(ends, days, st.sampled_from(["2026-11", "2026", "2026-11-20T08:00:00+14:00"]))


@st.composite
def odd(draw, value):
    """A value, now and then a hostile stand-in for it: a list where a string belongs, an object, a number, nothing."""
    return draw(st.sampled_from([[value], {"v": value}, 7, ""])) if draw(st.integers(0, 9)) == 0 else value


@st.composite
def a_concept(draw, codes) -> dict:
    """0-3 codings (some without system or code, some of no value set), sometimes text naming a level or a route."""
    coding = []
    for _ in range(draw(st.integers(0, 3))):
        system, code = draw(st.sampled_from(codes + [("http://snomed.info/sct", "12345"), ("urn:x", "T7")]))
        item = {"system": system, "code": code}
        item = {k: v for k, v in item.items() if draw(st.integers(0, 9))}          # now and then one is missing
        if draw(st.booleans()):
            item["display"] = draw(st.sampled_from(["Dexamethasone 4 MG Oral Tablet", "T7 vertebra", "t12", "L1-L2",
                                                    "C8", "S1 and T1", "dexamethasone / lidocaine", "T٧"]))
        coding.append(item)
    concept = {"coding": coding} if coding or draw(st.booleans()) else {}
    if draw(st.booleans()):
        concept["text"] = draw(st.sampled_from(["compression at T7", "hemangioma T5 and T10", "T13", "xT7", "T7x",
                                                "dexamethasone eye drops", "dexamethasone", "L5\nS1"]))
    return concept


@st.composite
def a_dosage(draw) -> dict:
    dosage = {}
    if draw(st.integers(0, 9)):
        repeat = {}
        if draw(st.booleans()):
            repeat["boundsPeriod"] = {"start": draw(odd(draw(a_date())))} if draw(st.integers(0, 4)) else {}
        if draw(st.integers(0, 9)):
            repeat.update(frequency=draw(st.sampled_from([1, 2, 4])), period=draw(st.sampled_from([1, 0.5, 2])),
                          periodUnit=draw(st.sampled_from(["d", "h", "wk", "x"])))
        if draw(st.booleans()):
            repeat["count"] = draw(st.sampled_from([1, 3]))
        dosage["timing"] = {"repeat": repeat}
    if draw(st.integers(0, 9)):
        dose = {"value": draw(st.sampled_from([4, 16, 96, 0.5, 24000]))}
        if draw(st.booleans()):
            dose["code"] = draw(st.sampled_from(["mg", "g", "ug", "mcg", "mL"]))
        else:
            dose["unit"] = draw(st.sampled_from(["mg", " MG ", "milligram"]))
        dosage["doseAndRate"] = [{"doseQuantity": dose}]
    if draw(st.integers(0, 2)):
        dosage["route"] = {"coding": [{"system": "http://snomed.info/sct", "code": "26643006"}],
                           "text": draw(st.sampled_from(["oral", "ophthalmic", "intravenous", "topical"]))}
    return dosage


@st.composite
def a_course_entry(draw) -> dict:
    """A dexamethasone order or administration with dosage lines, routes and doses (or hostile stand-ins)."""
    rtype = draw(st.sampled_from(["MedicationRequest", "MedicationRequest", "MedicationAdministration"]))
    medication = draw(a_concept(DEXAMETHASONE)) if draw(st.integers(0, 3)) == 0 else {
        "coding": [dict(zip(("system", "code"), draw(st.sampled_from(DEXAMETHASONE))))],
        **({"text": text} if (text := draw(st.sampled_from(["", "dexamethasone 4 MG", "dexamethasone eye drops"])))
           else {})}
    res = {"resourceType": rtype, "subject": SUBJECT, "medicationCodeableConcept": medication,
           "status": draw(odd(draw(st.sampled_from(["active", "completed", "stopped", "on-hold", "in-progress"]))))}
    if rtype == "MedicationRequest":
        res.update(intent=draw(st.sampled_from(["order", "order", "order", "plan"])))
        if draw(st.booleans()):
            res["authoredOn"] = draw(a_date())
        res["dosageInstruction"] = draw(st.lists(a_dosage(), min_size=draw(st.integers(0, 4)) and 1, max_size=2))
    else:
        res["effectiveDateTime"] = draw(a_date())
        if draw(st.integers(0, 3)):
            res["dosage"] = {k: v for k, v in draw(a_dosage()).items() if k == "route"}
            if draw(st.booleans()):
                res["dosage"]["dose"] = {"value": draw(st.sampled_from([8, 20])), "code": "mg"}
    if draw(st.booleans()):
        res["id"] = draw(st.sampled_from(["m1", "m2", "m3"]))
    return res


@st.composite
def a_named_condition(draw) -> dict:
    """A Condition whose code and bodySite name levels in words and carry several codings."""
    res = draw(a_condition())
    res["code"] = draw(a_concept(RELEVANT))
    if draw(st.booleans()):
        res["bodySite"] = [draw(a_concept(SITES)) for _ in range(draw(st.integers(1, 2)))]
    return res


@st.composite
def an_observation(draw) -> dict:
    res = {"resourceType": "Observation", "subject": SUBJECT, "code": draw(a_concept(RELEVANT)),
           "status": draw(st.sampled_from(["final", "cancelled"])), "effectiveDateTime": draw(a_date())}
    if draw(st.booleans()):
        res["valueInteger"] = draw(st.sampled_from([20, 45, 50]))
    return res


IN_SCOPE = [{"resourceType": "Patient", "id": PATIENT_ID, "birthDate": "1970-05-01"},
            {"resourceType": "Condition", "id": "scc", "subject": SUBJECT, "onsetDateTime": "2026-11-20",
             "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "G95.20"}]}},
            {"resourceType": "Condition", "id": "hem", "subject": SUBJECT, "onsetDateTime": "2026-11-01",
             "code": {"coding": [{"system": "http://snomed.info/sct", "code": "448232005"}]}}]


@st.composite
def dosed_charts(draw) -> list[dict]:
    """Many-episode charts (test_facts_differential's), or a patient in scope, with courses, named Conditions and
    readings added."""
    chart = draw(charts()) if draw(st.booleans()) else list(IN_SCOPE)
    chart += draw(st.lists(a_course_entry(), min_size=1, max_size=4))
    chart += draw(st.lists(st.one_of(a_named_condition(), an_observation()), max_size=6))
    return draw(st.permutations(chart))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(charts())
def test_generated_charts_derive_as_before(chart):
    assert_derived_as_before(chart, oracle=before)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(dosed_charts())
def test_dosed_and_named_charts_derive_as_before(chart):
    assert_derived_as_before(chart, oracle=before)


@settings(max_examples=500, deadline=None)
@given(a_concept(RELEVANT + SITES))
def test_codings_and_value_sets_read_as_before(concept):
    """Each on a fresh JsonElement (both keep what they worked out on it): the same pairs, the same value sets."""
    assert codings(read_element(concept)) == before.codings(read_element(concept))
    assert sets_holding(read_element(concept), VALUESETS) == before.sets_holding(read_element(concept), VALUESETS)


@settings(max_examples=500, deadline=None)
@given(a_named_condition())
def test_levels_read_as_before(condition):
    new, old = after.levels_of(read_element(condition), VALUESETS), before.levels_of(read_element(condition), VALUESETS)
    assert new == old and type(new) is type(old)
