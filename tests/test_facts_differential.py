"""chart_facts with the record indexed once per call (each entry's value sets and date read once) against the
derivation as it was before (tests/reference/facts_5d28dcc.py): the same facts, facts of the moment, decisions and
cards for every fixture in fhir_fixtures/ and for generated charts of many episodes, repeated codes, odd statuses
and dates at the ends of the calendar."""
from __future__ import annotations

import dataclasses
import datetime as dt

import orjson
from hypothesis import HealthCheck, given, settings, strategies as st

from service.api.engine import Engine
from service.clinical import facts as after
from service.clinical.pathway import decide_chart
from service.clinical.record import build_record
from service.config import PROJECT_ROOT
from service.fastjson import encode
from service.fhir.fixtures import load_fixtures
from tests.deployment_support import without_uuids
from tests.fhir_records import CLINICAL, NOW, PATIENT_ID, SELECTOR, VALUESETS, VERIFICATION, concept
from tests.reference import facts_5d28dcc as before

ENGINE = Engine.load(PROJECT_ROOT / "cards")
TODAY = NOW.date()
FIXTURES = load_fixtures(PROJECT_ROOT / "fhir_fixtures", TODAY)
MOMENTS = (NOW, NOW + dt.timedelta(days=3), NOW + dt.timedelta(days=400), NOW - dt.timedelta(days=20))


def plain(value):
    """A dataclass tree as plain data, each dataclass named by its class name (the two modules' classes differ)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return (type(value).__name__, {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)})
    if isinstance(value, (list, tuple)):
        return tuple(plain(v) for v in value)
    if isinstance(value, (set, frozenset)):
        return frozenset(plain(v) for v in value)
    return value


def answer(facts) -> tuple:
    decisions, unchecked = decide_chart(facts)
    cards = ENGINE.cards(decisions, unchecked, facts, "http://127.0.0.1/cds")
    return plain(decisions), plain(unchecked), without_uuids(orjson.loads(encode(cards)))


def assert_derived_as_before(resources: list[dict], unavailable=(), patient_id: str = PATIENT_ID,
                             oracle=before) -> after.ChartFacts:
    """Two records of the same JSON (a JsonElement keeps what was read of it), one derivation each: the oracle's
    (a module of tests/reference/) and the service's, whose ChartFacts is returned."""
    records = [build_record(resources, SELECTOR, patient_id, unavailable) for _ in range(2)]
    old, new = oracle.chart_facts(records[0], VALUESETS), after.chart_facts(records[1], VALUESETS)
    assert plain(new) == plain(old)
    for now in MOMENTS:
        assert plain(after.moment(new, now)) == plain(oracle.moment(old, now))
        old_facts, new_facts = oracle.facts_at(old, now), after.facts_at(new, now)
        assert plain(new_facts) == plain(old_facts)
        assert answer(new_facts) == answer(old_facts)
    return new


# Fixtures whose facts a genuine fix since the oracles changes (clin13): not compared with a frozen oracle.
CHANGED_SINCE_THE_ORACLES = {"avh-42": "a span of levels names those between (named_levels)"}


def assert_fixtures_derived_as_before(oracle=before) -> None:
    """Every fixture as sent, with Procedures and Observations unavailable, and sent in reverse order."""
    assert len(FIXTURES) >= 41
    for fixture in FIXTURES:
        if fixture.patient_id in CHANGED_SINCE_THE_ORACLES:
            continue
        sent = fixture.resources()
        for resources, unavailable in ((sent, ()), (sent, ("Procedure", "Observation")), (sent[::-1], ())):
            assert_derived_as_before(resources, unavailable, fixture.patient_id, oracle)


def test_every_fixture_derives_as_before():
    assert_fixtures_derived_as_before()


# --- generated charts ---------------------------------------------------------------------------------------

def codes_of(*names: str) -> list[tuple[str, str]]:
    return sorted(set().union(*(VALUESETS[n] for n in names)))


CONDITION_CODES = codes_of("vertebral-hemangioma", "hemangioma-site-unspecified", "spinal-cord-compression",
                           "neurologic-deficit", "pregnancy", "rapid-deterioration", "competing-cause", "injury")
PROCEDURE_CODES = codes_of("decompression-surgery", "posterior-stabilization", "vertebroplasty", "embolization",
                           "radiotherapy", "mri-entire-spine", "mri-thoracic-spine", "spine-ct-angiography")
WORKUP_CODES = codes_of("mri-entire-spine", "mri-thoracic-spine", "spine-ct-angiography")
ORDER_CODES = codes_of("radiotherapy", "decompression-surgery", "posterior-stabilization", "embolization") + WORKUP_CODES
SITES = codes_of("spine-structure") + [("http://snomed.info/sct", "10200004")]        # a liver
OBSERVATION_CODES = codes_of("ambulatory-status", "lower-extremity-motor-score", "joa-score", "rapid-deterioration",
                             "pregnancy-status")
DEXAMETHASONE = codes_of("dexamethasone")[:3]

days = st.integers(-400, 4000)
ends = st.sampled_from(["0001-01-01", "0001-01-01T00:00:00Z", "0001-01-01T00:30:00+01:00", "9999-12-31",
                        "9999-12-31T23:59:59Z", "9999-12-31T23:00:00-05:00", "9999", "0001-02", "2024-02-29"])


@st.composite
def date_time(draw) -> str:
    if draw(st.integers(0, 9)) == 0:
        return draw(ends)
    moment = NOW - dt.timedelta(days=draw(days), hours=draw(st.integers(0, 23)))
    form = draw(st.sampled_from(["%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%d", "%Y-%m", "%Y-%m-%dT%H:%M:%S+02:00"]))
    return moment.strftime(form)


@st.composite
def coded(draw, codes, displays=("", "Hemangioma of T7 vertebra", "spinal cord compression at T8", "liver")) -> dict:
    """A CodeableConcept of 1-3 codings drawn from `codes` (the same code may come twice), sometimes with text."""
    chosen = draw(st.lists(st.sampled_from(codes), min_size=1, max_size=3))
    coding = [{"system": s, "code": c, **({"display": d} if (d := draw(st.sampled_from(displays))) else {})}
              for s, c in chosen]
    text = draw(st.sampled_from(displays))
    return {"coding": coding, **({"text": text} if text else {})}


ids = st.sampled_from(["a", "b", "c", "d", "e", "f", "g", None])


def with_id(resource: dict, rid) -> dict:
    return {**resource, "id": rid} if rid is not None else resource


@st.composite
def a_condition(draw) -> dict:
    res = {"resourceType": "Condition", "code": draw(coded(CONDITION_CODES)),
           "subject": {"reference": f"Patient/{PATIENT_ID}"}}
    clinical = draw(st.sampled_from([None, "active", "recurrence", "relapse", "inactive", "remission", "resolved"]))
    if clinical:
        res["clinicalStatus"] = concept(CLINICAL, clinical)
    verification = draw(st.sampled_from([None, "confirmed", "provisional", "differential", "unconfirmed", "refuted",
                                         "entered-in-error"]))
    if verification:
        res["verificationStatus"] = concept(VERIFICATION, verification)
    onset = draw(st.sampled_from(["onsetDateTime", "onsetPeriod", "onsetAge", "onsetString", "recordedDate", None]))
    if onset == "onsetDateTime":
        res["onsetDateTime"] = draw(date_time())
    elif onset == "onsetPeriod":
        res["onsetPeriod"] = {"start": draw(date_time())}
    elif onset == "onsetAge":
        res["onsetAge"] = {"value": draw(st.sampled_from([0, 9, 40, 55.5, 120])), "code": "a",
                           "system": "http://unitsofmeasure.org"}
    elif onset == "onsetString":
        res["onsetString"] = draw(st.sampled_from(["2019-04-02", "last spring", "2026-11"]))
    if draw(st.booleans()):
        res["recordedDate"] = draw(date_time())
    if draw(st.integers(0, 3)) == 0:
        res["bodySite"] = [draw(coded(SITES, ("", "T7 vertebra", "Liver")))]
    if draw(st.integers(0, 5)) == 0:
        res["abatementDateTime"] = draw(date_time())
    return with_id(res, draw(ids))


@st.composite
def a_procedure(draw) -> dict:
    res = {"resourceType": "Procedure", "code": draw(coded(PROCEDURE_CODES)),
           "status": draw(st.sampled_from(["completed", "in-progress", "preparation", "not-done"])),
           "subject": {"reference": f"Patient/{PATIENT_ID}"}}
    when = draw(st.sampled_from(["performedDateTime", "performedPeriod", "performedAge", None]))
    if when == "performedDateTime":
        res["performedDateTime"] = draw(date_time())
    elif when == "performedPeriod":
        res["performedPeriod"] = {"start": draw(date_time())}
    elif when == "performedAge":
        res["performedAge"] = {"value": draw(st.sampled_from([30, 56])), "code": "a",
                               "system": "http://unitsofmeasure.org"}
    return with_id(res, draw(ids))


@st.composite
def an_order(draw) -> dict:
    res = {"resourceType": "ServiceRequest", "code": draw(coded(ORDER_CODES)),
           "status": draw(st.sampled_from(["active", "completed", "draft", "revoked", "on-hold"])),
           "intent": draw(st.sampled_from(["order", "plan", "original-order"])),
           "subject": {"reference": f"Patient/{PATIENT_ID}"}, "authoredOn": draw(date_time())}
    if draw(st.booleans()):
        res["occurrenceDateTime"] = draw(date_time())
    if draw(st.integers(0, 5)) == 0:
        res["doNotPerform"] = True
    return with_id(res, draw(ids))


@st.composite
def a_report(draw) -> dict:
    res = {"resourceType": "DiagnosticReport", "code": draw(coded(WORKUP_CODES)),
           "status": draw(st.sampled_from(["final", "preliminary", "registered", "cancelled"])),
           "subject": {"reference": f"Patient/{PATIENT_ID}"}}
    if draw(st.booleans()):
        res["effectiveDateTime"] = draw(date_time())
    else:
        res["issued"] = draw(st.sampled_from(["2026-10-01T10:00:00Z", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z"]))
    return with_id(res, draw(ids))


@st.composite
def an_observation(draw) -> dict:
    code = draw(coded(OBSERVATION_CODES))
    value = draw(st.sampled_from([
        {"valueCodeableConcept": concept("https://avh-cds.org/fhir/CodeSystem/avh-local", "ambulatory")},
        {"valueCodeableConcept": concept("https://avh-cds.org/fhir/CodeSystem/avh-local", "non-ambulatory")},
        {"valueCodeableConcept": concept("https://avh-cds.org/fhir/CodeSystem/avh-local",
                                         "ambulatory-with-assistance")},
        {"valueCodeableConcept": concept("http://loinc.org", "LA15173-0")},
        {"valueQuantity": {"value": 50}}, {"valueQuantity": {"value": 38}}, {"valueInteger": 9}, {"valueBoolean": True},
        {"valueBoolean": False}, {}]))
    res = {"resourceType": "Observation", "code": code, "subject": {"reference": f"Patient/{PATIENT_ID}"},
           "status": draw(st.sampled_from(["final", "amended", "entered-in-error", "cancelled", "preliminary"])),
           "effectiveDateTime": draw(date_time()), **value}
    return with_id(res, draw(ids))


@st.composite
def a_medication(draw) -> dict:
    """Its concept coded, or named in text alone; given inline, or as a contained Medication it references."""
    rtype = draw(st.sampled_from(["MedicationRequest", "MedicationAdministration"]))
    words = ("", "dexamethasone 4 MG Oral Tablet", "dexamethasone ophthalmic")
    medication = draw(st.one_of(coded(DEXAMETHASONE, words),
                                st.sampled_from(words[1:]).map(lambda text: {"text": text})))
    given = draw(st.sampled_from([
        {"medicationCodeableConcept": medication},
        {"medicationReference": {"reference": "#m"}, "contained": [{"resourceType": "Medication", "id": "m",
                                                                     "code": medication}]}]))
    res = {"resourceType": rtype, "subject": {"reference": f"Patient/{PATIENT_ID}"}, **given,
           "status": draw(st.sampled_from(["active", "completed", "stopped", "on-hold", "draft"]))}
    if rtype == "MedicationRequest":
        res.update(intent="order", authoredOn=draw(date_time()))
    else:
        res["effectiveDateTime"] = draw(date_time())
    return with_id(res, draw(ids))


resources = st.one_of(a_condition(), a_condition(), a_condition(), a_procedure(), an_order(), a_report(),
                      an_observation(), a_medication())


@st.composite
def charts(draw) -> list[dict]:
    """A patient with several compressions and hemangiomas (many episodes) and 0-25 other entries."""
    birth = draw(st.sampled_from(["1970-05-01", "2015-02-28", "0001-01-01", "9999-12-31", "1960", None]))
    chart = [{"resourceType": "Patient", "id": PATIENT_ID, **({"birthDate": birth} if birth else {})}]
    for _ in range(draw(st.integers(1, 4))):
        episode = draw(a_condition())
        chart.append({**episode, "code": draw(coded(codes_of("spinal-cord-compression")))})
        lesion = draw(a_condition())
        chart.append({**lesion, "code": draw(coded(codes_of("vertebral-hemangioma", "hemangioma-site-unspecified"),
                                                  ("", "Hemangioma of T7 vertebra", "hemangioma, spine",
                                                   "hemangioma L2")))})
    chart += draw(st.lists(resources, max_size=25))
    return draw(st.permutations(chart))


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(charts())
def test_generated_charts_derive_as_before(chart):
    assert_derived_as_before(chart)
