"""Validation by HL7's FHIR R4 JSON schema first (clinical/record.py), against fhir.resources alone.

The schema (service/clinical/schema/, scripts/fhir_schema_subset.py) is a fast first check: what it accepts is read
through a JsonElement, what it refuses is validated by fhir.resources, which decides. So the service answers as it
did with fhir.resources alone if (1) the schema accepts nothing fhir.resources refuses, and (2) a JsonElement gives
the pathway the values the model gives. (1) is checked on every fixture resource and on thousands of invalid
variants of them; (2) on the facts and cards of every fixture and of the variants both accept.
"""
from __future__ import annotations

import copy
import datetime as dt
from pathlib import Path

import pytest

from service.clinical import record as record_module
from service.clinical.elements import SCHEMA, Element, JsonElement, read_definitions, read_element
from service.clinical.facts import chart_facts, facts_at
from service.clinical.pathway import decide_chart
from service.clinical.record import Validator, _schema_accepts, build_record, by_models, extension_not_object
from service.fhir.fixtures import load_fixtures
from service.lazyjson import BeyondDouble
from tests.fhir_records import NOW, SELECTOR, VALUESETS

FIXTURES = load_fixtures(Path(__file__).resolve().parent.parent / "fhir_fixtures", NOW.date())
# What an EHR (or an attacker) may put where a value belongs: wrong types, empty or blank strings, days that do not
# exist, times without a zone, numbers out of range or not whole.
ODD_VALUES = ("", " ", "x y", "2026-02-30", "2025-02-29", "2026-04-31", "2026-06-31T10:00:00Z", "2026-13-01", "2026-11-23T10:00:00", "2026-11-23T24:00:00Z",
              "2026-11-23T10:00Z", "1900-02-29", "42", "true", 42.5, 0, -1, 2 ** 31, 2 ** 70, 1e300, True, None, {},
              [], [None], {"x": 1}, [{}])


def _relevant(resources):
    return [r for r in resources if r.get("resourceType") == "Patient" or SELECTOR.wanted(r)]


def _distinct_relevant():
    seen, out = set(), []
    for fixture in FIXTURES:
        for res in _relevant(fixture.resources()):
            shape = (res["resourceType"], tuple(sorted(res)))
            if shape not in seen:
                seen.add(shape)
                out.append(res)
    return out


def _paths(node, path=()):
    """Every element path in a resource (objects, arrays and values), except resourceType."""
    if isinstance(node, dict):
        for key, value in node.items():
            if path == () and key == "resourceType":
                continue
            yield path + (key,)
            yield from _paths(value, path + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield path + (i,)
            yield from _paths(value, path + (i,))


def _set(resource, path, value):
    out = copy.deepcopy(resource)
    node = out
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    return out


def _drop(resource, path):
    out = copy.deepcopy(resource)
    node = out
    for step in path[:-1]:
        node = node[step]
    del node[path[-1]]
    return out


def _variants(resource):
    for path in _paths(resource):
        yield _drop(resource, path)
        for value in ODD_VALUES:
            yield _set(resource, path, value)
    # a second form of a choice element beside the first, and an element no type defines
    for extra in ({"valueInteger": 3}, {"valueString": "x"}, {"onsetAge": {"value": 3, "unit": "a"}},
                  {"effectivePeriod": {"start": "2026-01-01"}}, {"performedString": "x"},
                  {"medicationReference": {"reference": "Medication/m"}}, {"deceasedBoolean": False},
                  {"notAnElement": 1}, {"fhir_comments": "x"}):
        yield {**resource, **extra}


def _models_only(monkeypatch):
    """Validators made after this accept nothing by the schema: every resource gets fhir.resources' verdict."""
    monkeypatch.setattr(record_module, "schemas", lambda max_depth=None: {})


def test_the_schema_accepts_every_fixture_resource_fhir_resources_accepts_and_refuses_the_others():
    """Otherwise the fast path would not be the one taken (fixture 37 holds an element Condition does not define)."""
    relevant = [r for f in FIXTURES for r in _relevant(f.resources())]
    assert [_schema_accepts(r) for r in relevant] == [by_models(r)[1] is None for r in relevant]
    assert not all(_schema_accepts(r) for r in relevant)


def test_the_validator_gives_validate_s_verdict_on_valid_refused_deep_and_non_json_resources():
    """Validator runs _validate's steps in its own body (branch small18, three Python calls fewer a resource): the same
    element of the same JSON, or the same model, and the same reason, whichever way a resource goes."""
    validator = Validator(max_depth=12)
    condition = next(r for r in _distinct_relevant() if r["resourceType"] == "Condition")
    nested: list = []
    for _ in range(14):
        nested = [nested]
    odd = [{**condition, "note": [{"text": "x", "extension": nested}]},     # deeper than 12: the depth's reason
           {**condition, 7: "a key that is not a string"},                # jsonschema-rs: ValueError
           {**condition, "resourceType": "Basic"},                        # no schema of that type
           {"resourceType": "Condition"}]
    resources = [*_distinct_relevant(), *odd]
    for resource in _distinct_relevant()[:4]:
        resources += list(_variants(resource))[::7]
    kinds = set()
    for resource in resources:
        (got, why), (expected, reason) = validator(resource), record_module._validate(resource, 12)
        assert why == reason, resource
        assert type(got) is type(expected), resource
        if type(got) is JsonElement:
            assert got.json is resource and got.get_resource_type() == resource["resourceType"]
            assert got.__dict__ == {} and got._get == resource.get
        else:
            assert got == expected, resource
        kinds.add((type(got).__name__, (why or "").split(" ")[0]))
    assert ("JsonElement", "") in kinds and ("NoneType", "nests") in kinds and ("NoneType", "invalid") in kinds
    assert len(kinds) >= 4 and len(resources) > 300


def test_build_record_asks_a_validator_s_schema_checks_in_its_loop_with_the_validator_s_verdicts():
    """build_record asks a Validator's schema check itself and makes the JsonElement of a resource it accepts (branch
    elem20: a Python call less a resource); every other resource goes to the Validator. The same record as through a
    validator that is no Validator (its calls alone): the same resources read from the same JSON, the same models,
    the same left out with the same reasons, on valid, refused, deep, non-JSON and beyond-a-double resources."""
    validator = Validator(max_depth=12)
    charts = [(fixture.resources(), fixture.patient_id) for fixture in FIXTURES]
    charts += [(list(_variants(resource)), _subject(resource)) for resource in _distinct_relevant()
               if resource["resourceType"] != "Patient"][:8]
    kinds = set()
    for chart, patient_id in charts:
        odd = _odd_conditions(patient_id)
        fast = build_record(chart + odd, SELECTOR, patient_id, validate=validator)
        slow = build_record(chart + odd, SELECTOR, patient_id, validate=lambda resource: validator(resource))
        assert fast.left_out == slow.left_out and _read_as(fast.patient) == _read_as(slow.patient)
        assert fast.resources.keys() == slow.resources.keys()
        for rtype, read in fast.resources.items():
            assert [_read_as(r) for r in read] == [_read_as(r) for r in slow.resources[rtype]], rtype
            kinds.update(_read_as(r)[0] for r in read)
        assert {lo.id for lo in fast.left_out} >= {"deep", "not-json", "refused", "beyond"}, patient_id
    assert kinds >= {"element"} and len(kinds) >= 2 and len(charts) > 20


def _odd_conditions(patient_id: str) -> list[dict]:
    """A Condition of the patient nesting deeper than 12, one with a key that is not a string (not JSON), one the
    schema refuses (a day that does not exist), one holding a number beyond a double (as the decode marks it)."""
    condition = next(r for r in _distinct_relevant() if r["resourceType"] == "Condition")
    condition = {**condition, "subject": {"reference": f"Patient/{patient_id}"}}
    nested: list = []
    for _ in range(14):
        nested = [nested]
    beyond = BeyondDouble({**condition, "id": "beyond"})
    beyond.where = ("id",)
    return [{**condition, "id": "deep", "note": [{"text": "x", "extension": nested}]},
            {**condition, "id": "not-json", 7: "a key that is not a string"},
            {**condition, "id": "refused", "onsetDateTime": "2026-02-30"}, beyond]


def _subject(resource) -> str:
    return (resource.get("subject") or resource["patient"])["reference"].split("/")[-1]


def _read_as(read):
    """What the record holds for a resource: its JSON itself (a JsonElement's, compared by identity), or a model."""
    if read is None:
        return None
    if type(read) is JsonElement:
        assert read.__dict__ == {} and read._get == read.json.get
        return "element", id(read.json)
    return type(read).__name__, read.model_dump(mode="json")


def test_what_the_schema_accepts_fhir_resources_accepts_on_thousands_of_invalid_variants():
    checked = accepted = 0
    for resource in _distinct_relevant():
        for variant in _variants(resource):
            checked += 1
            if _schema_accepts(variant):
                accepted += 1
                model, reason = by_models(variant)
                assert reason is None, (variant, reason)
    assert checked > 5000 and 0 < accepted < checked


@pytest.mark.parametrize("fixture", FIXTURES, ids=lambda f: f.name)
def test_every_fixture_gives_the_same_record_facts_and_decisions_through_the_schema_as_through_models(
        fixture, monkeypatch):
    resources = fixture.resources()
    fast = build_record(resources, SELECTOR, fixture.patient_id, validate=Validator())
    _models_only(monkeypatch)
    slow = build_record(resources, SELECTOR, fixture.patient_id, validate=Validator())
    assert fast.left_out == slow.left_out
    assert {k: [r.id for r in v] for k, v in fast.resources.items()} == \
        {k: [r.id for r in v] for k, v in slow.resources.items()}
    assert all(type(r) is JsonElement for v in fast.resources.values() for r in v)
    for now in (NOW, NOW + dt.timedelta(days=3), NOW + dt.timedelta(days=40)):
        a, b = facts_at(chart_facts(fast, VALUESETS), now), facts_at(chart_facts(slow, VALUESETS), now)
        assert a == b
        assert decide_chart(a) == decide_chart(b)


def test_variants_both_accept_give_the_same_facts(monkeypatch):
    """A JsonElement reads what the model reads, for every value the schema lets through (dates, decimals...)."""
    compared = 0
    for fixture in FIXTURES[:12]:
        resources = fixture.resources()
        for i, resource in enumerate(resources):
            if resource.get("resourceType") == "Patient" or not SELECTOR.wanted(resource):
                continue
            for variant in _variants(resource):
                if not _schema_accepts(variant):
                    continue
                chart = resources[:i] + [variant] + resources[i + 1:]
                fast = build_record(chart, SELECTOR, fixture.patient_id, validate=Validator())
                with monkeypatch.context() as m:
                    _models_only(m)
                    slow = build_record(chart, SELECTOR, fixture.patient_id, validate=Validator())
                assert fast.left_out == slow.left_out
                assert facts_at(chart_facts(fast, VALUESETS), NOW) == facts_at(chart_facts(slow, VALUESETS), NOW)
                compared += 1
    assert compared > 500


def test_a_resource_the_schema_refuses_is_judged_by_fhir_resources_and_named():
    condition = next(r for f in FIXTURES for r in f.resources() if r["resourceType"] == "Condition")
    bad = {**condition, "onsetDateTime": "2026-02-30"}
    assert not _schema_accepts(bad)
    model, reason = Validator()(bad)
    assert model is None and "onsetDateTime" in reason
    # a form the R4 schema refuses but fhir.resources (R4B) accepts: an id of 65 characters; read as before
    long_id = {**condition, "id": "x" * 65}
    assert not _schema_accepts(long_id)
    model, reason = Validator()(long_id)
    assert reason is None and model.id == "x" * 65 and type(model) is not JsonElement


@pytest.mark.parametrize("year", [1900, 1999, 2000, 2023, 2024, 2026, 2100, 2400])
def test_dates_are_days_of_the_calendar_as_python_has_them(year):
    """The schema's date patterns (scripts/fhir_schema_subset.py) against datetime.date, day by day."""
    condition = next(r for f in FIXTURES for r in f.resources() if r["resourceType"] == "Condition")
    for month in range(1, 13):
        for day in range(1, 32):
            try:
                dt.date(year, month, day)
                real = True
            except ValueError:
                real = False
            text = f"{year:04d}-{month:02d}-{day:02d}"
            for value in (text, text + "T10:00:00Z"):
                assert _schema_accepts({**condition, "onsetDateTime": value}) is real, value
            assert _schema_accepts({**condition, "recordedDate": text + "T10:00:00+01:00"}) is real, text


def test_keys_that_are_not_strings_are_refused_not_raised():
    assert not _schema_accepts({"resourceType": "Condition", 1: 2})


def test_a_number_orjson_cannot_write_is_still_validated():
    condition = next(r for f in FIXTURES for r in f.resources() if r["resourceType"] == "Condition")
    model, reason = Validator()({**condition, "extension": [{"url": "http://x", "valueDecimal": 2 ** 70}]})
    assert reason is None and model.id == condition["id"]


@pytest.mark.parametrize("extension", ["9999", "[1]", "null"])
def test_a_primitive_extension_sent_as_a_json_string_is_left_out_not_raised(extension):
    """fhir.resources parses a `_name` given as a string as JSON, then reads the result as an object: a string whose
    JSON is a number, an array or null raised AttributeError out of by_models (a 500 for the whole call)."""
    condition = next(r for f in FIXTURES for r in f.resources() if r["resourceType"] == "Condition")
    model, reason = Validator()({**condition, "_recordedDate": extension})
    assert (model, reason) == (None, "invalid FHIR at _recordedDate: a primitive's extension must be an object")
    patient = {"resourceType": "Patient", "id": "p", "birthDate": "2000-01-01", "_birthDate": extension}
    record = build_record([patient], SELECTOR, "p")
    assert record.patient is None and [lo.ref for lo in record.left_out] == ["Patient/p"]


def test_where_a_primitive_extension_is_no_object_is_named_however_deep():
    assert extension_not_object({"name": [{"family": "A", "_family": {"id": "x"}}, {"_given": [None, "1"]}]}) \
        == "name.1._given"
    assert extension_not_object({"code": {"coding": [{"_code": "9"}]}}) == "code.coding.0._code"
    assert extension_not_object({"_birthDate": {"extension": []}, "_given": [None, {"id": "y"}]}) is None
    condition = copy.deepcopy(next(r for f in FIXTURES for r in f.resources() if r["resourceType"] == "Condition"))
    condition["code"]["coding"][0]["_code"] = "9999"
    assert Validator()(condition) == (None, "invalid FHIR at code.coding.0._code: a primitive's extension must be an object")


def test_an_empty_primitive_extension_is_refused_as_fhir_resources_refuses_it():
    """`"_birthDate": {}` (no id, no extension) is refused by fhir.resources (a primitive's extension needs one); the
    schema accepted it, so the verdict hung on the rest of the resource: accepted alone, left out beside an invalid
    element the pathway does not read (refused by the schema, judged by by_models). Found by review7's
    old/new differential (as_read made the second case accepted too)."""
    patient = {"resourceType": "Patient", "id": "p", "birthDate": "2000-01-01"}
    for unread in ({}, {"gender": {"x": 1}}, {"name": [-0.0]}):
        resource = {**patient, "_birthDate": {}, **unread}
        assert not _schema_accepts(resource, 64), unread
        assert Validator()(resource) == (None, "invalid FHIR at _birthDate: model_validation_format"), unread
    for extension in ({"id": "b"}, {"extension": []}, {"extension": [{"url": "http://x", "valueString": "y"}]}):
        assert _schema_accepts({**patient, "_birthDate": extension}, 64)
        assert by_models({**patient, "_birthDate": extension})[1] is None
    definitions = read_definitions()
    tried = 0
    for resource in (r for f in FIXTURES for r in f.resources() if r["resourceType"] in record_module.READ_ELEMENTS):
        rtype = resource["resourceType"]
        for name in record_module._KEPT[rtype] & definitions[rtype]["properties"].keys():
            if name.startswith("_"):
                empty = {**resource, name: {}}
                assert not _schema_accepts(empty, 64) and by_models(empty)[1], name
                tried += 1
    assert tried > 100


def test_the_vendored_schema_is_what_the_script_writes_from_hl7s_file():
    """service/clinical/schema/ is scripts/fhir_schema_subset.py's output from the HL7 file Medplum ships (installed
    by tests/fhir_engine/setup.sh), not an edited copy."""
    import json
    import runpy

    from tests.fhir_engine_support import install
    install()
    script = runpy.run_path(str(Path(__file__).resolve().parent.parent / "scripts" / "fhir_schema_subset.py"))
    written = script["subset"](json.loads(script["SOURCE"].read_text()))
    assert json.loads(SCHEMA.read_text()) == json.loads(json.dumps(written))


# Run in a fresh interpreter: which files it opens while importing the clinical modules, then while building a
# Validator (as the app factory does).
_OPENS = """
import sys
opened = []
sys.addaudithook(lambda event, args: opened.append(str(args[0])) if event == "open" else None)
import service.clinical.record, service.clinical.elements, service.clinical.facts
at_import = opened.count(sys.argv[1])
service.clinical.record.Validator()
service.clinical.record.Validator()
print(at_import, opened.count(sys.argv[1]) - at_import)
"""


def test_the_schema_file_is_read_once_when_the_validator_is_built_not_at_import():
    import subprocess
    import sys
    done = subprocess.run([sys.executable, "-c", _OPENS, str(SCHEMA)], capture_output=True, text=True, check=True,
                          cwd=Path(__file__).resolve().parent.parent)
    assert done.stdout.split() == ["0", "1"]


def test_json_element_reads_every_element_the_schema_defines_as_an_attribute():
    Validator()
    names = {name for definition in read_definitions().values() for name in definition.get("properties", ())
             if name.isidentifier() and not name.startswith("_")}
    assert len(names) > 300
    for name in names:
        assert getattr(read_element({}), name) is None, name
        if type(vars(JsonElement)[name]) is Element:
            assert getattr(read_element({name: [{"value": 1}]}), name)[0].value == 1, name
        else:                           # a primitive wherever it is defined: the JSON's value, read each time
            assert type(vars(JsonElement)[name]) is property, name
            assert getattr(read_element({name: "x"}), name) == "x", name
    assert all(type(vars(JsonElement)[name]) is property for name in PRIMITIVE_NAMES)
    assert all(type(vars(JsonElement)[name]) is Element for name in ("code", "text", "coding", "valueQuantity", "div"))


# Some of the names read as primitives (each a string, number or boolean in every definition that has it).
PRIMITIVE_NAMES = {"id", "status", "intent", "doNotPerform", "birthDate", "deceasedBoolean", "deceasedDateTime",
                   "onsetDateTime", "effectiveDateTime", "performedDateTime", "authoredOn", "valueInteger", "display",
                   "system", "start", "end", "value", "reference"}


def test_a_name_no_schema_defines_is_not_an_element():
    """JsonElement has no __getattr__ (it slowed every attribute read): the pathway reads only the schema's names,
    which the fixtures' facts and cards above read through without an AttributeError."""
    Validator()
    element = read_element({"resourceType": "Condition", "notAnElement": 1, "code": {"text": "x"}})
    with pytest.raises(AttributeError):
        element.notAnElement
    assert element.code.text == "x" and element.get_resource_type() == "Condition"


def test_an_element_the_pathway_does_not_read_is_held_to_no_more_than_fhir_resources_holds_it():
    """The schema walks what the pathway reads: an invalid `meta` or `category` is accepted (fhir.resources checks
    only that they are elements of the type), an invalid `code`, an unknown element or an invalid contained
    resource (validated whole by fhir.resources) is refused, with fhir.resources' reason."""
    condition = {"resourceType": "Condition", "id": "c", "subject": {"reference": "Patient/p"},
                 "code": {"coding": [{"system": "http://snomed.info/sct", "code": "93870000"}]}}
    for unread in ({"meta": {"lastUpdated": "not an instant"}}, {"category": "not a list"}, {"note": [{"x": 1}]}):
        assert _schema_accepts({**condition, **unread}, 64) and by_models({**condition, **unread})[1] is None, unread
    for read in ({"code": {"coding": "not a list"}}, {"onsetDateTime": "2026-02-30"}, {"notAnElement": 1}):
        assert not _schema_accepts({**condition, **read}, 64) and by_models({**condition, **read})[1], read
    request = {"resourceType": "MedicationRequest", "id": "m", "status": "active", "intent": "order",
               "subject": {"reference": "Patient/p"}, "medicationReference": {"reference": "#d"}}
    medication = {"resourceType": "Medication", "id": "d", "code": {"text": "dexamethasone"}}
    assert _schema_accepts({**request, "contained": [medication]}, 64)
    invalid = {**request, "contained": [{**medication, "meta": {"lastUpdated": "not an instant"}}]}
    assert not _schema_accepts(invalid, 64) and by_models(invalid)[1]
