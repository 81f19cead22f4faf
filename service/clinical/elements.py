"""A FHIR element read from its JSON, once the JSON schema has accepted it (clinical/record.py).

The pathway (facts.py) reads resources by attribute, as it read fhir.resources' models: `c.code.coding`,
`o.valueQuantity.value`, `m.get_resource_type()`. A JsonElement gives the same values from the decoded JSON,
without building a model: an absent element is None, an object another JsonElement, an array a tuple. Primitives
stay as JSON has them: a date or dateTime is its string (facts.instant reads it as it read the model's datetime or
date; the schema has checked its form and record.py that its day exists), a decimal a float or an int (facts reads
numbers through float()), a boolean a bool. tests/test_fhir_schema.py checks that both give the same facts and cards.
"""
from __future__ import annotations

from operator import methodcaller
from pathlib import Path

import orjson

SCHEMA = Path(__file__).resolve().parent / "schema" / "fhir-r4-subset.json"


class JsonElement:
    """An object or array element is looked up once: its value is then an attribute of the instance (facts.py reads
    `c.code` many times a call); a primitive one is read from the JSON each time, in C (`_get`: the JSON's own `get`,
    which its property calls). The elements are the schema's names (define_elements): a name no schema defines is an
    AttributeError, as on any object, and the class has no `__getattr__`, whose hook would slow every attribute
    read, even of a value already in the instance's __dict__."""
    __slots__ = ("_json", "_get", "__dict__")

    def get_resource_type(self) -> str:
        return self._json["resourceType"]

    @property
    def json(self) -> dict:
        """The element's JSON, as decoded (read, never changed)."""
        return self._json


def read_element(json: dict) -> JsonElement:
    """The JsonElement of an object of decoded JSON."""
    element = JsonElement()             # no __init__: one Python call less for each element read
    element._json = json
    element._get = json.get
    return element


class Element:
    """An element name the schema defines, as an attribute of JsonElement: read at the first access, then found in
    the instance's __dict__ (a non-data descriptor). An absent element is None, an object a JsonElement, an array
    a tuple."""
    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name

    def __get__(self, element: JsonElement | None, owner=None):
        if element is None:
            return self
        value = element._json.get(self.name)
        if type(value) is dict:
            read = value
            value = JsonElement()         # read_element's lines, without its call: a chart reads ~35 objects
            value._json = read
            value._get = read.get
        elif type(value) is list:
            value = _read_items(value)
        element.__dict__[self.name] = value
        return value


def _read_items(array: list) -> tuple:
    """An array element's items, each object a JsonElement: read_element's lines in a loop, not a call an item in a
    comprehension (~15 objects a chart are items of arrays)."""
    items = []
    for item in array:
        if type(item) is dict:
            read = item
            item = JsonElement()
            item._json = read
            item._get = read.get
        items.append(item)
    return tuple(items)


def read_definitions() -> dict:
    """The schema's definitions (resource types and datatypes), read from its file: compiled by record.schemas, which
    also hands them to define_elements. Called at start-up (the app factory's Validator), never at import."""
    return orjson.loads(SCHEMA.read_bytes())["definitions"]


def define_elements(definitions: dict) -> None:
    """Make every element name the definitions give (`_name` extensions aside) an attribute of JsonElement: record.py
    makes JsonElements only of resources the schema accepts, after schemas() has called this.

    A name that is a primitive (or absent) wherever it is defined reads the JSON's value each time through a property
    made of C parts (`property`, `methodcaller`, the JSON's `get`: ~0.6 k instructions a read, where an Element's
    first read, a Python call, costs ~2.5 k; a chart reads ~30 such values, `id`, `status` and the dates, mostly once).
    A name that is an object or an array anywhere is an Element: its object is made a JsonElement once."""
    kinds: dict[str, bool] = {}         # name -> whether it may hold an object or an array in some definition
    for definition in definitions.values():
        for name, spec in definition.get("properties", {}).items() if isinstance(definition, dict) else ():
            if name.isidentifier() and not name.startswith("_"):
                kinds[name] = kinds.get(name, False) or not _primitive(spec, definitions)
    for name, nested in kinds.items():
        if not hasattr(JsonElement, name):
            setattr(JsonElement, name, Element(name) if nested else property(methodcaller("_get", name)))


PRIMITIVE_TYPES = frozenset({"string", "number", "integer", "boolean"})


def _primitive(spec: dict, definitions: dict) -> bool:
    """Whether the schema lets an element hold only a string, a number or a boolean: its own type says so, or an
    enum or const (of strings), or a `$ref` to a definition whose type says so (not `xhtml`, which has none)."""
    if "enum" in spec or "const" in spec:
        return True
    if "$ref" in spec:
        spec = definitions.get(spec["$ref"].rsplit("/", 1)[-1], {})
    return spec.get("type") in PRIMITIVE_TYPES
