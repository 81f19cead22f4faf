"""Responses encoded with orjson say the same as Flask's default provider."""
import datetime as dt
import decimal
import json
import uuid
from dataclasses import dataclass

from flask.json.provider import DefaultJSONProvider

from service.fastjson import OrjsonProvider


@dataclass
class Point:
    x: int
    label: str


VALUE = {"cards": [{"summary": "Décompression urgente — T7", "n": 3, "f": 1.5, "ok": True, "none": None}],
         "when": dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc), "day": dt.date(2026, 1, 2),
         "amount": decimal.Decimal("1.25"), "id": uuid.UUID(int=7), "point": Point(1, "a"), 5: "int key"}


def test_same_json_as_flasks_default_provider(app):
    ours, flasks = OrjsonProvider(app), DefaultJSONProvider(app)
    ours.sort_keys = flasks.sort_keys = False
    assert json.loads(ours.dumps(VALUE)) == json.loads(flasks.dumps(VALUE))


def test_sorted_keys_follow_the_setting(app):
    provider = OrjsonProvider(app)
    provider.sort_keys = True
    assert provider.dumps({"b": 1, "a": 2}) == '{"a":2,"b":1}'
    provider.sort_keys = False
    assert provider.dumps({"b": 1, "a": 2}) == '{"b":1,"a":2}'


def test_app_responses_use_it(client):
    response = client.get("/cds-services")
    assert response.mimetype == "application/json"
    assert response.data.startswith(b'{"services":[{')       # compact, in insertion order


def test_integers_over_64_bits_are_written_as_flask_would(app):
    ours, flasks = OrjsonProvider(app), DefaultJSONProvider(app)
    assert json.loads(ours.dumps({"n": 2 ** 70})) == json.loads(flasks.dumps({"n": 2 ** 70})) == {"n": 2 ** 70}


def test_what_no_encoder_can_write_is_still_a_type_error(app):
    import pytest
    with pytest.raises(TypeError):
        OrjsonProvider(app).dumps({"x": object()})


def test_json_written_beforehand_is_written_by_the_stdlib_encoder_too():
    """A card carries parts written at start-up (orjson.Fragment); an answer orjson cannot write (an integer over 64
    bits in a draft order) is written by the stdlib encoder, with those parts as their values."""
    import orjson
    from service.fastjson import encode
    part = {"reasons": [{"code": "x", "display": "é \"quoted\""}], "n": 1.5}
    written = encode({"part": orjson.Fragment(orjson.dumps(part)), "n": 2 ** 70})
    assert json.loads(written) == {"part": part, "n": 2 ** 70}
    assert written == encode({"part": part, "n": 2 ** 70})


def test_the_same_bytes_as_with_non_string_keys_allowed_throughout():
    """encode_orjson asks orjson for non-string keys only when a key is not a string: the bytes are those it wrote
    with OPT_NON_STR_KEYS always."""
    import orjson
    from service.fastjson import encode_orjson
    for value in (VALUE, {k: v for k, v in VALUE.items() if k != 5}, {"a": {1: [{"b": 2}], "c": None}}):
        for sort in (False, True):
            always = orjson.dumps(value, default=DefaultJSONProvider.default, option=orjson.OPT_NON_STR_KEYS
                                  | orjson.OPT_PASSTHROUGH_DATETIME | (orjson.OPT_SORT_KEYS if sort else 0))
            assert encode_orjson(value, sort) == always
