"""Select the resources the pathway can use, then validate only those: HL7's FHIR R4 JSON schema first, in Rust
(jsonschema-rs), fhir.resources (R4B) for a resource the schema refuses.

The EHR may send thousands of resources; the decision depends on a handful. Selection works on the
decoded dicts (resourceType + code against frozensets), so the cost of validation is paid for relevant
resources only. A relevant resource the schema accepts is read through a JsonElement (the pathway reads it as it
read a model); one it refuses is validated by fhir.resources as before (the elements the pathway reads), which
either accepts it (its model is read) or names why it is invalid: it is then left out and remembered, so a card
it could have changed can say so. The schema (service/clinical/schema/, written by scripts/fhir_schema_subset.py)
is tightened to accept nothing fhir.resources refuses, so the verdict and what is read are those of fhir.resources
alone, at ~1.5 µs a resource instead of ~100 µs (tests/test_fhir_schema.py).
"""
from __future__ import annotations

import datetime as dt
import functools
import logging
import re
from dataclasses import dataclass, field
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jsonschema_rs
from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from service.clinical.frozen import set_at_once
from service.clinical.elements import define_elements, read_definitions, read_element
from service.clinical.markdown import NOT_AN_ELEMENT, element_path, shown_id
from service.lazyjson import BeyondDouble
from service.nesting import json_depth, leveled
from service.clinical.valuesets import ValueSets, codings

log = logging.getLogger(__name__)

# Which value sets make a resource of each type relevant, and where its code lives.
WORKUP = ("mri-entire-spine", "mri-thoracic-spine", "spine-ct-angiography")
RELEVANT = {
    "Condition": ("code", ("vertebral-hemangioma", "hemangioma-site-unspecified", "spinal-cord-compression",
                           "neurologic-deficit", "pregnancy", "rapid-deterioration", "competing-cause", "injury")),
    "Observation": ("code", ("ambulatory-status", "lower-extremity-motor-score", "joa-score", "rapid-deterioration",
                             "pregnancy-status")),
    "Procedure": ("code", ("decompression-surgery", "posterior-stabilization", "vertebroplasty", "embolization",
                           "radiotherapy") + WORKUP),
    "DiagnosticReport": ("code", WORKUP),
    "ServiceRequest": ("code", ("radiotherapy", "decompression-surgery", "posterior-stabilization", "embolization")
                       + WORKUP),
    "MedicationRequest": ("medicationCodeableConcept", ("dexamethasone",)),
    "MedicationAdministration": ("medicationCodeableConcept", ("dexamethasone",)),
    "Medication": ("code", ("dexamethasone",)),
}
# Medications are also read by reference (to a Medication) or by name: their code alone does not decide.
MEDICATION_TYPES = frozenset({"MedicationRequest", "MedicationAdministration", "Medication"})
MEDICATION_WORD = "dexamethasone"
# Conditions whose code decides whether a patient is in scope: one that cannot be read is never silence.
SCOPE_CONCEPTS = frozenset({"vertebral-hemangioma", "hemangioma-site-unspecified", "spinal-cord-compression"})


@dataclass(frozen=True)
class LeftOut:
    """A relevant resource that failed FHIR validation and was not used."""
    resource_type: str
    id: str
    concepts: tuple[str, ...]   # value sets its code matched: what it could have changed
    reason: str

    @property
    def ref(self) -> str:
        return f"{self.resource_type}/{self.id}"

    @property
    def could_change_scope(self) -> bool:
        return self.resource_type == "Condition" and not SCOPE_CONCEPTS.isdisjoint(self.concepts)


@set_at_once
@dataclass(frozen=True)
class PatientRecord:
    patient_id: str
    patient: object | None = None
    resources: Mapping[str, tuple] = field(default_factory=dict)   # resourceType -> JsonElements (or models)
    left_out: tuple[LeftOut, ...] = ()
    unavailable: frozenset[str] = frozenset()                        # resource types that could not be read
    deceased_as_sent: bool = False      # the Patient was left out as invalid, but its JSON says deceased

    def of(self, resource_type: str) -> tuple:
        return self.resources.get(resource_type, ())


class Selector:
    """Precomputed lookups for one set of value sets."""

    def __init__(self, valuesets: ValueSets):
        self.valuesets = valuesets
        self.by_type = {rtype: (path, valuesets.union(names), names) for rtype, (path, names) in RELEVANT.items()}
        # Every code of every value set, without its system: most codings sent are of no value set, and a
        # string lookup turns them away before a (system, code) pair is built.
        self.code_values = frozenset(code for _, codes, _ in self.by_type.values() for _, code in codes)
        self.codes_at = {rtype: (path, codes) for rtype, (path, codes, _) in self.by_type.items()}   # one lookup

    def concepts_of(self, resource: Mapping) -> tuple[str, ...]:
        """The value sets the code of a resource left out matches: decoded JSON, so a code that is no object (a
        medication kept for its reference may hold anything there) matches none."""
        path, _, names = self.by_type[resource["resourceType"]]
        concept = resource.get(path)
        found = codings(concept) if isinstance(concept, dict) else ()
        return tuple(n for n in names if any(c in self.valuesets[n] for c in found))

    def wanted(self, resource: dict) -> bool:
        """Whether a record is built from this resource: a Patient, or a resource whose code is in a value set
        its type is read for.

        Runs once per resource the EHR sent, so it is the service's per-resource cost: `resource` is
        decoded JSON, tested with isinstance(dict/list) (a typing.Mapping check costs ten times more).
        """
        rtype = resource.get("resourceType")
        read = self.codes_at.get(rtype) if isinstance(rtype, str) else None
        if read is None:
            return rtype == "Patient"
        path, codes = read
        concept = resource.get(path)
        coding = concept.get("coding") if isinstance(concept, dict) else None
        if isinstance(coding, list):
            code_values = self.code_values
            for c in coding:
                if isinstance(c, dict):
                    code = c.get("code")
                    if isinstance(code, str) and code in code_values:
                        system = c.get("system")
                        if isinstance(system, str) and (system, code) in codes:
                            return True
        return rtype in MEDICATION_TYPES and _named_or_referenced(resource, path)

    # The keys of a resource `wanted` reads: of a resource sent undecoded, prefetch decodes only these (and its
    # own) unless it is kept (service/lazyjson.py).
    wanted.reads = frozenset({"resourceType", "medicationReference"} | {path for path, _ in RELEVANT.values()})
    # Those of them `wanted` reads as CodeableConcepts, by resource type, and whether their text and displays are read
    # (a medication named): of a small body, prefetch decodes the resources sent as Structs of these, of a medication
    # medicationReference, and their own keys, and chooses with wanted_struct (service/lazyjson.py).
    wanted.concepts = frozenset((rtype, path, rtype in MEDICATION_TYPES) for rtype, (path, _) in RELEVANT.items())

    def wanted_struct(self, resource) -> bool:
        """`wanted` of a resource decoded by lazyjson._typed_reader(wanted.concepts): the same choice (a Struct of its
        type, `resourceType` a string, of a type read its concept a Struct or None as `concept`, its coding a list of
        Structs or None, their system and code hashable; of a medication its medicationReference, an object as a
        Struct of its reference). Per resource sent, so lean: no type checks the decoded types make needless."""
        rtype = resource.resourceType
        read = self.codes_at.get(rtype)
        if read is None:
            return rtype == "Patient"
        concept = resource.concept
        if concept is None:
            coding = None
        else:
            coding = concept.coding
            if coding is not None:
                code_values, codes = self.code_values, read[1]
                for c in coding:
                    if c.code in code_values and (c.system, c.code) in codes:
                        return True
        if rtype not in MEDICATION_TYPES:
            return False
        if isinstance(getattr(resource.medicationReference, "reference", None), str):    # references_medication
            return True
        # The names read as they are (a Struct's, no dict made for _named_or_referenced: ~15 k instructions each).
        return concept is not None and _names_medication(concept.text, [c.display for c in coding or ()])


def _named_or_referenced(resource: dict, path: str) -> bool:
    """A medication given by reference, or whose text or a coding's display names dexamethasone."""
    if references_medication(resource):
        return True
    concept = resource.get(path)
    if not isinstance(concept, dict):
        return False
    coding = concept.get("coding")
    return _names_medication(concept.get("text"), [c.get("display") for c in (coding if isinstance(coding, list)
                                                                                else ()) if isinstance(c, dict)])


def _names_medication(text: Any, displays: list) -> bool:
    """Whether a concept's text or one of its codings' displays (any JSON value) names dexamethasone."""
    for name in [text, *displays]:
        if isinstance(name, str) and MEDICATION_WORD in name.lower():
            return True
    return False


def references_medication(resource: dict) -> bool:
    ref = resource.get("medicationReference")
    return isinstance(ref, dict) and isinstance(ref.get("reference"), str)


def named_resource(reference: str) -> str:
    """The Type/id a reference or URL ends in, a version left off ('.../MedicationRequest/abc/_history/2' ->
    'MedicationRequest/abc'); of a text with no '/', the text."""
    parts = reference.rstrip("/").split("/")
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    return "/".join(parts[-2:])


def subject_id(resource: Mapping) -> str | None:
    """The id of the Patient a resource is about (subject or patient reference), else None."""
    ref = resource.get("subject") or resource.get("patient")
    if not isinstance(ref, Mapping) or not isinstance(ref.get("reference"), str):
        return None
    parts = ref["reference"].rstrip("/").split("/")
    if len(parts) >= 2 and parts[-2] == "Patient":
        return parts[-1]
    if len(parts) >= 4 and parts[-2] == "_history" and parts[-4] == "Patient":    # a version: Patient/<id>/_history/<v>
        return parts[-3]
    return None


# The elements the pathway reads of each resource type (service/clinical/facts.py): only these are handed to
# the model layer, whose validation is the service's largest cost per resource (a chart of 20,000 relevant
# resources must answer within seconds). Every other element is still checked to be one the type defines.
_DATES = {"Condition": ("onsetDateTime", "onsetAge", "onsetPeriod", "onsetRange", "onsetString", "recordedDate",
                        "abatementDateTime", "abatementAge", "abatementPeriod", "abatementRange", "abatementString"),
          "Observation": ("effectiveDateTime", "effectiveInstant", "effectivePeriod", "effectiveTiming", "issued"),
          "Procedure": ("performedDateTime", "performedPeriod", "performedString", "performedAge", "performedRange"),
          "DiagnosticReport": ("effectiveDateTime", "effectivePeriod", "issued"),
          "ServiceRequest": ("occurrenceDateTime", "occurrencePeriod", "occurrenceTiming", "authoredOn"),
          "MedicationRequest": ("authoredOn",),
          "MedicationAdministration": ("effectiveDateTime", "effectivePeriod")}
_MEDICATION = ("medicationCodeableConcept", "medicationReference", "contained")
READ_ELEMENTS = {
    "Patient": ("birthDate", "deceasedBoolean", "deceasedDateTime"),
    "Condition": ("clinicalStatus", "verificationStatus", "code", "bodySite", "subject") + _DATES["Condition"],
    "Observation": ("status", "code", "subject", "valueQuantity", "valueInteger", "valueCodeableConcept",
                    "valueBoolean", "component") + _DATES["Observation"],
    "Procedure": ("status", "code", "subject") + _DATES["Procedure"],
    "DiagnosticReport": ("status", "code", "subject") + _DATES["DiagnosticReport"],
    "ServiceRequest": ("status", "intent", "doNotPerform", "code", "subject") + _DATES["ServiceRequest"],
    "MedicationRequest": ("status", "intent", "doNotPerform", "subject", "dosageInstruction") + _MEDICATION
                         + _DATES["MedicationRequest"],
    "MedicationAdministration": ("status", "subject", "dosage") + _MEDICATION + _DATES["MedicationAdministration"],
    "Medication": ("code",),
}
_KEPT = {rtype: frozenset(("resourceType", "id") + names + tuple("_" + n for n in names))
         for rtype, names in READ_ELEMENTS.items()}


@functools.cache
def _defined(resource_type: str) -> frozenset[str]:
    """Every element a resource type defines, as JSON names (with the `_name` of primitive extensions)."""
    names = {field.alias or name for name, field in get_fhir_model_class(resource_type).model_fields.items()}
    return frozenset(names | {"_" + n for n in names} | {"resourceType", "fhir_comments"})


def _read_part(resource: Mapping) -> tuple[dict | None, str | None]:
    """The elements the pathway reads, or why the resource is invalid (an element its type does not define)."""
    rtype = resource["resourceType"]
    kept = _KEPT.get(rtype)
    if kept is None:
        return dict(resource), None
    unknown = sorted(k for k in resource if k not in kept and k not in _defined(rtype))
    if unknown:
        return None, f"invalid FHIR at {element_path([unknown[0]])}: extra_forbidden"
    return {k: v for k, v in resource.items() if k in kept}, None


@functools.cache
def _definitions() -> dict:
    """The schema's definitions, read once; their element names made attributes of JsonElement from the same
    reading of its file."""
    definitions = read_definitions()
    define_elements(definitions)
    return definitions


@functools.cache
def schemas(max_depth: int | None = None) -> dict[str, jsonschema_rs.Validator]:
    """One compiled validator per resource type read (~0.15 s at start-up, once per process and depth limit), of the
    type's definition as the record reads it (`as_read`).

    With `max_depth`, a validator also refuses a resource nesting deeper than that, in the same walk: the depth is
    written into the definitions of the resource's first LEVELS levels (nesting.leveled, which proves it the
    verdict of `allOf` with the depth schema), so the elements read there are not walked a second time; what is
    open or deeper is walked by the depth schema first, so a deep resource is never walked further than
    max_depth + 1 levels. The depth was walked in Python once, then by the depth schema beside the type's (~80 k
    instructions of the ~280 k a typical chart's 10 checks cost: branch record19)."""
    definitions = {**_definitions(), **{f"read-{rtype}": as_read(rtype) for rtype in READ_ELEMENTS}}
    if max_depth is None:
        return {rtype: jsonschema_rs.Draft6Validator({"$ref": f"#/definitions/read-{rtype}",
                                                      "definitions": definitions})
                for rtype in READ_ELEMENTS}
    return {rtype: jsonschema_rs.Draft6Validator(leveled(definitions, f"read-{rtype}", max_depth, LEVELS, UNLEVELED))
            for rtype in READ_ELEMENTS}


# The levels of a resource whose definitions are copied per level (nesting.leveled): the typical chart's resources
# nest 4 to 6. Not Extension, which may hold any datatype and every datatype may hold (copied per level, the whole
# graph of FHIR's datatypes would be, 9 validators x ~100 MB), nor contained resources: both are rare in the
# typical chart, and are walked by the depth schema as before. With them, the validators' memory is as it was
# (~60 MB, their unused definitions no longer compiled).
LEVELS = 8
UNLEVELED = frozenset({"Extension", "ResourceList"})


def as_read(resource_type: str) -> dict:
    """The type's definition with the elements the pathway does not read (not in _KEPT) accepted whatever they hold:
    they must still be elements of the type (`additionalProperties: false`), as by_models, whose verdict the schema
    stands for, asks of them, and it validates no more of them. Its `required` and `dependencies` stay (a choice of
    which two are given is refused here and decided by by_models). Contained resources and every datatype keep their
    whole definitions (fhir.resources validates what the pathway reads whole). Of the typical chart's resources,
    `meta`, `category`, a Patient's `name` are not walked (`bench.pathway`: -38 k instructions a call); an EHR's carry
    far more (narratives, identifiers, notes, extensions)."""
    definition = _definitions()[resource_type]
    kept = _KEPT[resource_type]
    return {**definition, "properties": {name: spec if name in kept else {}
                                         for name, spec in definition["properties"].items()}}


def _schema_accepts(resource: Mapping, max_depth: int | None = None) -> bool:
    """HL7's JSON schema accepts the resource; with `max_depth`, and it nests no deeper (one walk, in Rust)."""
    schema = schemas(max_depth).get(resource.get("resourceType"))
    try:
        return schema is not None and schema.is_valid(resource)
    except ValueError:                   # not JSON (a key that is not a string): fhir.resources says why
        return False


def _validate(resource: Mapping, max_depth: int) -> tuple[object | None, str | None]:
    """(what the pathway reads, None) for a valid resource, (None, why) for an invalid one.

    A resource HL7's JSON schema accepts is read as a JsonElement. One it refuses is validated as before: the
    elements the pathway reads as FHIR R4 (fhir.resources R4B), the others must be elements of the type; its model
    is read when that accepts it. A resource nesting deeper than `max_depth` is neither (the model layer
    recurses): the request's depth limit applies to each resource read (security/limits.request_depth). The
    schema check refuses a deeper resource too; only then is its depth walked, for the reason. Validator runs
    these steps with the schema's check in its own body (the same verdicts, three Python calls fewer a resource)."""
    if _schema_accepts(resource, max_depth):
        return read_element(resource), None
    return _refused(resource, max_depth)


def _refused(resource: Mapping, max_depth: int) -> tuple[object | None, str | None]:
    """_validate's verdict on a resource the schema refused: too deep, else fhir.resources' (by_models)."""
    depth = json_depth(resource)
    if depth > max_depth:
        return None, f"nests {depth} levels deep; at most {max_depth} are read (AVH_CDS_MAX_JSON_DEPTH)"
    return by_models(resource)


def by_models(resource: Mapping) -> tuple[object | None, str | None]:
    """fhir.resources' verdict: the elements the pathway reads validated as FHIR R4 (R4B models), the others
    checked to be elements of the type; (model, None) or (None, why)."""
    part = None
    try:
        part, reason = _read_part(resource)
        if part is None:
            return None, reason
        return get_fhir_model_class(resource["resourceType"]).model_validate(part), None
    except AttributeError:            # fhir.resources reads a `_name` string as JSON, then its result as an object
        where = extension_not_object(part)
        return None, f"invalid FHIR at {where}: a primitive's extension must be an object" if where else "invalid FHIR"
    except (ValidationError, ValueError, TypeError, KeyError) as exc:
        return None, _reason(exc)


def extension_not_object(value, path: str = "") -> str | None:
    """Where the first primitive's extension (`_name`, or an item of its array) that is no JSON object lies, as a
    dotted path (`name.0._family`, each name as element_path shows it), else None. The resource's depth is bounded
    before (Validator)."""
    if isinstance(value, dict):
        for name, item in value.items():
            at = f"{path}.{element_path([name])}" if path else element_path([name])
            if isinstance(name, str) and name.startswith("_") and not _extension_shaped(item):
                return at
            found = extension_not_object(item, at)
            if found:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = extension_not_object(item, f"{path}.{index}")
            if found:
                return found
    return None


def _extension_shaped(value) -> bool:
    """A primitive's extension as FHIR's JSON gives it: an object, or for an array of primitives an array of objects
    and nulls."""
    if isinstance(value, list):
        return all(item is None or isinstance(item, dict) for item in value)
    return isinstance(value, dict)


class Validator:
    """FHIR validation of relevant resources (_validate's verdicts), with the request's depth limit.

    Nothing is remembered between calls: the schema checks a resource in ~1.5 µs, less than remembering it by its
    JSON would cost (a cache by exact JSON thrashed on charts larger than itself, issue 18). The compiled schemas'
    checks are taken once, here: a call asks its type's check itself, not through _validate -> _schema_accepts ->
    schemas() (branch small18)."""

    def __init__(self, max_depth: int = 64):
        self.max_depth = max_depth
        # compiled at start-up, not at the first call
        self._accepts = {rtype: schema.is_valid for rtype, schema in schemas(max_depth).items()}

    def __call__(self, resource: Mapping) -> tuple[object | None, str | None]:
        if type(resource) is BeyondDouble:      # marked by the decode (service/lazyjson.py): no schema reads it
            return None, f"invalid FHIR at {element_path(resource.where)}: a number beyond a double"
        accepts = self._accepts.get(resource.get("resourceType"))
        if accepts is not None:
            try:
                if accepts(resource):
                    return read_element(resource), None
            except ValueError:                  # not JSON (a key that is not a string): fhir.resources says why
                pass
        return _refused(resource, self.max_depth)


def build_record(resources: Iterable[dict], selector: Selector, patient_id: str,
                 unavailable: Iterable[str] = (), validate: Validator | None = None,
                 selected: bool = False) -> PatientRecord:
    """Keep this patient's relevant resources, each (type, id) once, validated: of two versions sent, the later
    (`later_version`), else the first sent. A version not relevant (recoded out of the value sets) or about another
    patient is one not read: when it is the later, the earlier goes too.

    `selected`: every resource is one `selector.wanted` keeps (prefetch selected them as it read them), so it is not
    asked again."""
    seen: dict[tuple[str, str], tuple] = {}   # (type, id) -> (resource sent, its list: a type kept or None, index)
    kept: dict[str, list] = {}
    left_out: list[LeftOut | None] = []
    replaced = False
    patient = patient_sent = patient_left_out = None
    deceased = False
    check = Validator() if validate is None else validate
    schema_checks = check._accepts if type(check) is Validator else {}      # its checks, asked in the loop
    # The usual subject reference, compared whole before it is parsed (an empty id, or one with a '/', is parsed).
    own = "Patient/" + patient_id if patient_id and "/" not in patient_id else None
    for res in resources:
        if not isinstance(res, dict):
            continue
        rtype = res.get("resourceType")
        rid = res.get("id")
        if not isinstance(rtype, str):
            continue                    # not a FHIR resource at all (found by tests/test_security_fuzz.py)
        if rtype == "Patient":
            # The first sent, unless a later version follows, valid or not: an older version must not undo a newer
            # one that says deceased (review13).
            if rid == patient_id and (patient_sent is None or later_version(res, patient_sent)):
                if patient_left_out is not None:
                    left_out[patient_left_out] = None       # the earlier version's reason goes with it
                    patient_left_out = None
                patient_sent = res
                patient, reason = check(res)
                deceased = reason is not None and says_deceased(res)
                if reason is not None:
                    log.warning("left out invalid Patient: %.300s", logged_reason(reason, res))    # no id
                    patient_left_out = len(left_out)
                    left_out.append(LeftOut("Patient", shown_id(rid), ("patient",), reason))
            continue
        wanted = selected or selector.wanted(res)
        if not wanted and rid is None:
            continue
        key = (rtype, str(rid))
        earlier = seen.get(key) if rid is not None else None
        if earlier is not None and not later_version(res, earlier[0]):
            continue
        if earlier is not None and earlier[2] >= 0:       # a later version: the earlier one goes (even when the
            replaced = True                               # later is another patient's: review13, or not relevant)
            _, bucket, index = earlier
            (left_out if bucket is None else kept[bucket])[index] = None
        if not wanted:                                    # in no list, but an earlier version sent after it stays out
            seen[key] = (res, None, -1)
            continue
        # Of the patient: the usual subject reference compared whole, else subject_id (a Python call less a resource)
        ref = res.get("subject") or res.get("patient")
        if (rtype != "Medication" and (own is None or type(ref) is not dict or ref.get("reference") != own)
                and subject_id(res) != patient_id):
            if rid is not None:
                seen[key] = (res, None, -1)                 # in no list
            log.warning("ignored a %.40s: its subject is not the patient of the call", rtype)   # no patient id
            continue
        accepts = schema_checks.get(rtype)
        try:        # Validator's way with a resource the schema accepts, in the loop: a Python call less a resource
            accepted = accepts is not None and type(res) is not BeyondDouble and accepts(res)
        except ValueError:                  # not JSON (a key that is not a string): the Validator says why
            accepted = False
        if accepted:
            model, reason = read_element(res), None
        else:
            model, reason = check(res)
        if reason is None:
            found = kept.setdefault(rtype, [])
            if rid is not None:
                seen[key] = (res, rtype, len(found))
            found.append(model)
        else:
            item = LeftOut(rtype, shown_id(rid), selector.concepts_of(res), reason)
            # its id and the names of elements FHIR does not define are the sender's: by type and reason alone
            log.warning("left out invalid %.40s: %.300s", rtype, logged_reason(reason, res))
            if rid is not None:
                seen[key] = (res, None, len(left_out))
            left_out.append(item)
    if replaced:
        kept = {rtype: [m for m in models if m is not None] for rtype, models in kept.items()}
    return PatientRecord(patient_id=patient_id, patient=patient,
                         resources={k: tuple(v) for k, v in kept.items() if v},
                         left_out=tuple(filter(None, left_out)), unavailable=frozenset(unavailable),
                         deceased_as_sent=deceased)


def says_deceased(patient, read: Callable[[Any, str], Any] = dict.get) -> bool:
    """A Patient says deceased (pathway.md section 1: deceasedBoolean true, or any deceasedDateTime): the rule, stated
    once for both shapes a Patient is met in. Of its JSON (`read` dict.get), read even when the Patient is invalid: a
    deceased patient gets no card, whatever else in its record cannot be read; of the Patient read (`read` getattr:
    a JsonElement or a model, facts.is_deceased). A flag that is not a JSON boolean ("true", 1: only in JSON, as the
    Patient read has a bool) is true as fhir.resources reads it, which makes a Patient valid in all else deceased."""
    flag = read(patient, "deceasedBoolean")
    return flag is True or read(patient, "deceasedDateTime") is not None or (
        flag is not None and type(flag) is not bool and _read_as_true(flag))


def _read_as_true(flag) -> bool:
    """Whether fhir.resources reads this deceasedBoolean as true ("true", "yes", 1; not "false", 0, nor one it
    refuses)."""
    model, _ = by_models({"resourceType": "Patient", "deceasedBoolean": flag})
    return model is not None and model.deceasedBoolean is True


def later_version(sent: dict, earlier: dict) -> bool:
    """Whether `sent` is a later version of the resource `earlier` is (the same type and id sent twice): a greater
    `meta.versionId` when both are whole numbers, else a later `meta.lastUpdated` when both are instants. Else the
    first sent stays (a history Bundle lists the newest first)."""
    new, old = _meta(sent), _meta(earlier)
    new_version, old_version = new.get("versionId"), old.get("versionId")
    if _whole(new_version) and _whole(old_version):
        return int(new_version) > int(old_version)
    new_time, old_time = _updated(new.get("lastUpdated")), _updated(old.get("lastUpdated"))
    return new_time is not None and old_time is not None and new_time > old_time


def _meta(resource: dict) -> dict:
    meta = resource.get("meta")
    return meta if isinstance(meta, dict) else {}


def _whole(value) -> bool:
    return isinstance(value, str) and re.fullmatch(r"[0-9]{1,18}", value) is not None


def _updated(value) -> dt.datetime | None:
    """meta.lastUpdated (a FHIR instant, with its time zone) as an aware datetime, else None."""
    if not isinstance(value, str):
        return None
    try:
        moment = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)


def logged_reason(reason: str, resource: Mapping) -> str:
    """A reason as the log says it: the path it names keeps a name only when FHIR gives an element that name, and an
    index only where `resource` holds a list. An element the type does not define is the sender's (a record number
    as a key, `MRN778899` or `778899`): named on the card, never in the log (docs/security.md)."""
    found = _AT_PATH.match(reason)
    if found is None:
        return reason
    shown, at = [], resource
    for part in found["path"].split("."):
        if isinstance(at, list) and part.isdigit() and int(part) < len(at):
            shown.append(part if int(part) < LOGGED_INDEXES else AN_INDEX)
            at = at[int(part)]
        elif part in _element_names():
            shown.append(part)
            at = at.get(part) if isinstance(at, Mapping) else None
        else:
            shown.append(NOT_AN_ELEMENT)
            at = None
    return f"{found['head']}{'.'.join(shown)}{found['tail']}"


# An index is the sender's choice too (an invalid item put at 778899 of a list that long, in a 16 MiB body): logged
# when under LOGGED_INDEXES (two digits, no record number), else AN_INDEX; the card names it.
LOGGED_INDEXES = 100
AN_INDEX = "(an index over 99)"
_AT_PATH = re.compile(r"(?P<head>invalid FHIR at )(?P<path>[^:]*)(?P<tail>: .*)", re.DOTALL)


@functools.cache
def _element_names() -> frozenset[str]:
    """Every name FHIR gives an element of the types read (the schema's), with `_name` and `resourceType`."""
    names = {name for definition in _definitions().values() for name in definition.get("properties", ())}
    return frozenset(names | {"_" + n for n in names} | {"resourceType"})


def _reason(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = element_path(first.get("loc", ()))
        return f"invalid FHIR at {where or 'resource'}: {first.get('type', 'error')}"
    return "invalid FHIR"
