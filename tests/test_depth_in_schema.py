"""The depth limit checked by the schema validator, in the walk that checks the resource (clinical/record.py), against
the depth walked in Python first as before: the same verdict, the same reason, for every depth around the limit."""
from __future__ import annotations

import jsonschema_rs
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from service.clinical.elements import JsonElement
from service.clinical.record import Validator, _schema_accepts, by_models
from service.nesting import depth_schemas, json_depth
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
