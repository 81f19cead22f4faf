"""A FHIR element read from its JSON, once the JSON schema has accepted it (clinical/record.py).

The pathway (facts.py) reads resources by attribute, as it read fhir.resources' models: `c.code.coding`,
`o.valueQuantity.value`, `m.get_resource_type()`. A JsonElement gives the same values from the decoded JSON,
without building a model: an absent element is None, an object another JsonElement, an array a tuple. Primitives
stay as JSON has them: a date or dateTime is its string (facts.instant reads it as it read the model's datetime or
date; the schema has checked its form and record.py that its day exists), a decimal a float or an int (facts reads
numbers through float()), a boolean a bool. tests/test_fhir_schema.py checks that both give the same facts and cards.
"""
from __future__ import annotations


class JsonElement:
    """Each element is looked up once: its value is then an attribute of the instance (facts.py reads `c.code`
    many times a call)."""
    __slots__ = ("_json", "__dict__")

    def __init__(self, json: dict):
        self._json = json

    def __getattr__(self, name: str):
        value = self._json.get(name)
        if type(value) is dict:
            value = JsonElement(value)
        elif type(value) is list:
            value = tuple(JsonElement(v) if type(v) is dict else v for v in value)
        self.__dict__[name] = value
        return value

    def get_resource_type(self) -> str:
        return self._json["resourceType"]

    @property
    def json(self) -> dict:
        """The element's JSON, as decoded (read, never changed)."""
        return self._json
