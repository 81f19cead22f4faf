"""The depth limit checked by the schema validator, in the walk that checks the resource (clinical/record.py), against
the depth walked in Python first as before: the same verdict, the same reason, for every depth around the limit."""
from __future__ import annotations

import jsonschema_rs
import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from service.clinical.elements import JsonElement
from service.clinical.record import (LEVELS, READ_ELEMENTS, UNLEVELED, Validator, _definitions, _schema_accepts, as_read,
                                     by_models)
from service.nesting import depth_schemas, json_depth, leveled
from tests.test_fhir_schema import ODD_VALUES, _distinct_relevant, _paths, _set

LIMITS = (1, 2, 5, 6, 12, 64)
# JSON as the decoders give it: no NaN or infinity (refused), integers within 64 bits (orjson makes floats of the others).
json_values = st.recursive(st.none() | st.booleans() | st.integers(-2 ** 63, 2 ** 64 - 1)
                           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=3),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
                           max_leaves=40)


def validate_before(resource, max_depth: int):
    """record._validate before the depth moved into the schema: the depth walked in Python, then the schema alone."""
    depth = json_depth(resource)
    if depth > max_depth:
        return None, f"nests {depth} levels deep; at most {max_depth} are read (AVH_CDS_MAX_JSON_DEPTH)"
    if _schema_accepts(resource):
        return resource, None
    return by_models(resource)


def verdict(found):
    """What the record keeps of a result: the JSON read (a JsonElement's), a model (as its JSON), or the reason."""
    read, reason = found
    if type(read) is JsonElement:
        return "element", read.json, reason
    if isinstance(read, dict):
        return "element", read, reason
    return type(read).__name__, read.model_dump(mode="json") if read is not None else None, reason


def nested_value(depth: int, shape: int):
    """A JSON value nesting `depth` levels: objects, arrays or both, alternating as `shape` says."""
    value = "x"
    for level in range(depth):
        value = [value] if (shape >> (level % 3)) & 1 else {"k": value}
    return value


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_values, st.sampled_from(LIMITS))
def test_the_depth_schema_accepts_what_json_depth_keeps_within_the_limit(value, limit):
    check = jsonschema_rs.Draft6Validator({"$ref": f"#/definitions/depth-{limit}", "definitions": depth_schemas(limit, at="definitions")})
    assert check.is_valid(value) is (json_depth(value) <= limit)


@pytest.mark.parametrize("limit", LIMITS)
def test_the_depth_schema_at_and_around_the_limit(limit):
    check = jsonschema_rs.Draft6Validator({"$ref": f"#/definitions/depth-{limit}", "definitions": depth_schemas(limit, at="definitions")})
    for depth in range(0, limit + 4):
        for shape in range(8):
            value = nested_value(depth, shape)
            assert check.is_valid(value) is (depth <= limit), (depth, shape)


def _variants(resource):
    """The resource as sent, with an element nesting around each limit where an extension may be (valid FHIR) and
    where none may (invalid), and with odd values (invalid, or valid and shallow)."""
    yield resource
    for depth in (1, 3, 4, 5, 10, 11, 12, 13, 62, 63, 64, 70):
        extension = {"url": "http://x", "valueString": "a"}
        for _ in range(depth):
            extension = {"url": "http://x", "extension": [extension]}
        yield {**resource, "extension": [extension]}
        yield {**resource, "notAnElement": nested_value(depth, depth)}
    for path in list(_paths(resource))[:8]:
        for value in ODD_VALUES[::5] + (nested_value(12, 5), nested_value(70, 2)):
            yield _set(resource, path, value)


@pytest.mark.parametrize("limit", (5, 6, 12, 64))
def test_the_validator_gives_the_verdict_and_reason_it_gave_with_the_depth_walked_first(limit):
    validate = Validator(max_depth=limit)
    compared, deep, by_schema = 0, 0, 0
    for resource in _distinct_relevant():
        for variant in _variants(resource):
            now, before = verdict(validate(variant)), verdict(validate_before(variant, limit))
            assert now == before, variant
            compared += 1
            deep += before[2] is not None and "levels deep" in before[2]
            by_schema += before[0] == "element"
    assert compared > 500 and 0 < deep < compared and 0 < by_schema < compared


# Definitions of the shapes nesting.leveled meets in FHIR's schema: closed objects naming themselves (as Reference and
# Identifier do), arrays of one schema, an open element ({}), scalars by type, enum and const, a `$ref` with a sibling
# (ignored in draft 6), a `oneOf` of definitions (ResourceList), an object open to any key, keywords at the object's own
# level (required, dependencies, anyOf), and one definition left unleveled.
SHAPES = {
    "Node": {"type": "object", "additionalProperties": False, "anyOf": [{"required": ["a"]}, {"required": ["s"]}, {}],
             "dependencies": {"e": {"not": {"required": ["s"]}}},
             "properties": {"a": {"$ref": "#/definitions/Node"}, "b": {"type": "array", "items": {"$ref": "#/definitions/Either"}},
                            "c": {}, "s": {"$ref": "#/definitions/text"}, "e": {"enum": ["x", 1]},
                            "k": {"const": "y"}, "o": {"$ref": "#/definitions/Open"}, "u": {"$ref": "#/definitions/Kept"},
                            "r": {"$ref": "#/definitions/Node", "type": "string"}, "t": {"type": "array"}}},
    "Either": {"oneOf": [{"$ref": "#/definitions/Node"}, {"type": ["integer", "null"]}]},
    "Open": {"type": "object", "properties": {"a": {"$ref": "#/definitions/Node"}}},
    "Kept": {"type": "object", "additionalProperties": False, "properties": {"a": {"$ref": "#/definitions/Node"}}},
    "text": {"type": "string", "pattern": "^x"},
}
node_values = st.recursive(st.none() | st.integers(0, 2) | st.sampled_from(["x", "y", "z"])
                           | st.builds(nested_value, st.integers(1, 7), st.integers(0, 7)),
                           lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.sampled_from("abcseokurtz"), inner, max_size=4), max_leaves=30)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(node_values, st.sampled_from((0, 1, 2, 3, 6)), st.integers(0, 7))
@example({"o": {"z": nested_value(7, 1)}}, 3, 3)                 # an object open to any key
@example({"t": [nested_value(5, 2)]}, 3, 3)                      # an array of anything
@example({"b": [{"a": {"c": nested_value(2, 0)}}]}, 4, 2)        # below the levels
@example({"u": {"a": {"c": nested_value(3, 0)}}}, 4, 6)          # an unleveled definition
@example({"a": {"a": {"a": {}}}}, 3, 3)                          # a container at the last level allowed
@example({"a": {"a": {"a": {}}}}, 2, 2)
def test_a_leveled_schema_accepts_what_the_depth_schema_beside_the_definition_accepts(value, limit, levels):
    before = jsonschema_rs.Draft6Validator({"allOf": [{"$ref": f"#/definitions/depth-{limit}"}, {"$ref": "#/definitions/Node"}],
                                            "definitions": {**SHAPES, **depth_schemas(limit, at="definitions")}})
    now = jsonschema_rs.Draft6Validator(leveled(SHAPES, "Node", limit, levels, frozenset({"Kept"})))
    assert now.is_valid(value) is before.is_valid(value)


def test_a_leveled_schema_copies_the_definitions_of_its_levels_alone():
    schema = leveled(SHAPES, "Node", 6, 2, frozenset({"Kept"}))
    assert schema["$ref"] == "#/definitions/Node@1"
    copied = {name for name in schema["definitions"] if "@" in name}
    assert copied == {"Node@1", "Node@2", "Open@2"}      # an item of b (Either) is at level 3; Kept is not copied
    assert "depth-6" not in schema["definitions"] and "depth-4" in schema["definitions"]   # walked from level 3 only


def _deep_in_read_elements(resource):
    """The resource with values nesting around the limits where the pathway reads (a coding's extension, an element
    of a datatype) and where it does not (an unread element, accepted whatever it holds)."""
    for depth in (0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 11, 12, 63, 64):
        extension = {"url": "http://x", "valueString": "a"}
        for _ in range(depth):
            extension = {"url": "http://x", "extension": [extension]}
        for path in [p for p in _paths(resource) if p[-1] in ("coding", "reference", "system")][:3]:
            at = path if path[-1] == "coding" else path[:-1] + ("extension",)
            yield _set(resource, at + ((0, "extension") if path[-1] == "coding" else ()), [extension])
        yield {**resource, "meta": nested_value(depth, depth)}
        yield {**resource, "text": {"status": "generated", "div": nested_value(depth, 3)}}


@pytest.mark.parametrize("limit", (1, 2, 3, 5, 8, 9, 12, 64))
def test_each_types_validator_gives_the_verdict_of_the_depth_schema_beside_the_types(limit):
    """record.schemas' leveled validators against the schema they stand for (`allOf` with the depth schema)."""
    definitions = {**_definitions(), **{f"read-{t}": as_read(t) for t in READ_ELEMENTS}}
    limited = {**definitions, **depth_schemas(limit, at="definitions")}
    compared, refused = 0, 0
    for levels in sorted({2, limit - 1, LEVELS}):
        checks = {rtype: (jsonschema_rs.Draft6Validator({"allOf": [{"$ref": f"#/definitions/depth-{limit}"},
                                                                   {"$ref": f"#/definitions/read-{rtype}"}],
                                                         "definitions": limited}),
                          jsonschema_rs.Draft6Validator(leveled(definitions, f"read-{rtype}", limit, levels, UNLEVELED)))
                  for rtype in READ_ELEMENTS}
        for resource in _distinct_relevant():
            before, now = checks[resource["resourceType"]]
            for variant in (*_variants(resource), *_deep_in_read_elements(resource)):
                assert now.is_valid(variant) is before.is_valid(variant), (levels, variant)
                compared += 1
                refused += not before.is_valid(variant)
    assert compared > 1000 and 0 < refused < compared
