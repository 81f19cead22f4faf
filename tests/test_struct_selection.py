"""The choice and the patient check of resources read as Structs (lazyjson._typed_reader, Selector.wanted_struct,
prefetch._read_structs) against those of the dicts orjson gives and against the Struct reading before it was made
leaner (issue 18: Reference Structs for subject/patient/medicationReference, hashable coding system and code), on
generated resources, well-formed or hostile (tests/test_lazyjson.py's strategies)."""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Union

import msgspec
import orjson
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from service.clinical.record import MEDICATION_TYPES, _named_or_referenced
from service.fhir import prefetch
from service.lazyjson import _NOT_OBJECT, _typed_reader
from tests.test_lazyjson import OTHER, PATIENT, SELECTOR, Obj, resource, text

CONCEPTS = SELECTOR.wanted.concepts
PATHS = frozenset(path for _, path, _ in CONCEPTS)      # the concepts' paths, whatever the resource's type


class _OldCoding(msgspec.Struct, gc=False):
    system: Any = None
    code: Any = None
    display: Any = None


class _OldConcept(msgspec.Struct, gc=False):
    coding: Union[list[_OldCoding], None] = None
    text: Any = None


OLD_RESOURCE = msgspec.defstruct(
    "OldResource", [(name, Any, None) for name in ("resourceType", "id", "subject", "patient", "issue",
                                                    "medicationReference")]
    + [(name, Union[_OldConcept, None], None) for name in sorted(PATHS)], gc=False)


def old_wanted_struct(resource) -> bool:
    """Selector.wanted_struct at abfb9b8 (over the Structs it read then: every key but the concepts as orjson's)."""
    rtype = resource.resourceType
    read = SELECTOR.codes_at.get(rtype) if isinstance(rtype, str) else None
    if read is None:
        return rtype == "Patient"
    path, codes = read
    concept = getattr(resource, path)
    coding = concept.coding if concept is not None else None
    if coding is not None:
        for c in coding:
            code = c.code
            if isinstance(code, str) and code in SELECTOR.code_values:
                system = c.system
                if isinstance(system, str) and (system, code) in codes:
                    return True
    if rtype not in MEDICATION_TYPES:
        return False
    named = None if concept is None else {"text": concept.text, "coding": [{"display": c.display}
                                                                          for c in coding or ()]}
    return _named_or_referenced({"medicationReference": resource.medicationReference, path: named}, path)


def new_struct(raw: bytes):
    """The resource as the typed reader decodes it in a Bundle's entry; None when msgspec refuses it."""
    body = b'{"prefetch":{"k":{"entry":[{"resource":%s}]}}}' % raw
    try:
        return _typed_reader(CONCEPTS).decode(body)["prefetch"]["k"].entry[0].resource
    except msgspec.ValidationError:
        return None


def old_struct(raw: bytes):
    try:
        return msgspec.json.decode(raw, type=Union[OLD_RESOURCE, _NOT_OBJECT])
    except msgspec.ValidationError:
        return None


def other_patient_by_dict(resource: dict, patient_id: str | None) -> str | None:
    """What _read_entries finds unusable in a Bundle of this one resource (OTHER_PATIENT, OUTCOME or None)."""
    return prefetch._read_entries([{"resource": resource}], None, patient_id, None, []).unusable


def other_patient_by_struct(struct, whole: dict, patient_id: str | None) -> str | None:
    """What _read_structs finds unusable in a Bundle of this one resource decoded as a Struct (`whole`: the
    resource as the DOM gives it)."""
    entry = SimpleNamespace(resource=struct, search=None)
    return prefetch._read_structs([entry], lambda positions: [whole for _ in positions], patient_id,
                                  SELECTOR, []).unusable


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([0, 3, 10]).flatmap(resource), st.sampled_from([PATIENT, OTHER, "a/b", "", None]))
def test_structs_choose_and_check_the_patient_as_dicts_and_as_before(generated, patient_id):
    raw = text(generated)
    try:
        decoded = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return
    if not isinstance(decoded, dict):
        return
    new, old = new_struct(raw), old_struct(raw)
    if old is not None and new is not None:
        assert SELECTOR.wanted_struct(new) is old_wanted_struct(old) is SELECTOR.wanted(decoded)
    if new is not None:
        assert SELECTOR.wanted_struct(new) is SELECTOR.wanted(decoded)
        # No patient named (None, ""): nothing to check, never OTHER_PATIENT.
        assert other_patient_by_struct(new, decoded, patient_id) == other_patient_by_dict(decoded, patient_id)
        # prefetch's walk, which makes wanted_struct's usual verdicts itself (select20), keeps what wanted keeps.
        passed_over = []
        walked = prefetch._read_structs([SimpleNamespace(resource=new, search=None)],
                                        lambda positions: [decoded for _ in positions], None, SELECTOR, passed_over)
        kept = SELECTOR.wanted(decoded)
        if new.resourceType != "OperationOutcome":
            assert (walked.resources == [decoded]) is kept and passed_over == ([] if kept else [new.id])


@pytest.mark.parametrize("raw, refused", [
    (b'{"resourceType":"Condition","code":{"coding":[{"system":"x","code":["1"]}]}}', True),
    (b'{"resourceType":"Condition","code":{"coding":[{"system":{"a":1},"code":"1"}]}}', True),
    (b'{"resourceType":"Condition","code":{"coding":[{"system":"x","code":1.5}]}}', False),
    (b'{"resourceType":"Condition","subject":["Patient/p1"]}', False),
    (b'{"resourceType":"Condition","subject":"Patient/p1"}', False),
    (b'{"resourceType":"Condition","subject":null,"patient":{"reference":"Patient/p2"}}', False),
    (b'{"resourceType":"Condition","subject":{},"patient":{"reference":"Patient/p2"}}', False),
    (b'{"resourceType":"Condition","subject":{"display":"x"},"patient":{"reference":"Patient/p2"}}', False),
    (b'{"resourceType":"Condition","subject":{"reference":"Patient/p2"},"subject":{"reference":"Patient/p1"}}', False),
    (b'{"resourceType":"Condition","subject":{"reference":"Patient/p1\\u0000"}}', False),
    (b'{"resourceType":"MedicationRequest","medicationReference":{"reference":"Medication/m"}}', False),
    (b'{"resourceType":"MedicationRequest","medicationReference":{}}', False),
    (b'{"resourceType":"MedicationRequest","medicationReference":"Medication/m"}', False),
    # A Struct of the resource's own type (msgspec's tagged union on resourceType): a resourceType that is not one of
    # FHIR's types, not a string, absent, or given twice with two values is refused, so the entries are read as dicts.
    (b'{"resourceType":["Condition"],"code":{"coding":[{"system":"x","code":"1"}]}}', True),
    (b'{"resourceType":"Conditions","code":{"coding":[{"system":"x","code":"1"}]}}', True),
    (b'{"code":{"coding":[{"system":"x","code":"1"}]}}', True),
    (b'{"resourceType":"Observation","id":"o1","resourceType":"Condition"}', True),
    (b'{"resourceType":"Condition","id":"c1","resourceType":"Condition"}', False),
    # Of each type only its own concept is read: another type's concept, however shaped, is skipped.
    (b'{"resourceType":"Condition","medicationCodeableConcept":5,"code":{"coding":[{"system":"x","code":"1"}]}}',
     False),
    (b'{"resourceType":"Encounter","code":5,"medicationReference":"x"}', False),
    (b'{"resourceType":"Condition","code":5}', True),
    (b'{"resourceType":"Observation","code":{"coding":[{"system":"x","code":"1","display":{"a":[1]}}],"text":[2]}}',
     False),
    # Not read from the Struct (a Patient's id, an OperationOutcome's issue): such a resource is read whole.
    (b'{"resourceType":"Patient","id":"p1"}', False),
    (b'{"resourceType":"Patient","id":"p1","id":"p2"}', False),
    # An id is in the Struct, a scalar (prefetch remembers the ids of the resources it passes over): one that is an
    # array or an object is refused, so the entries are read as dicts.
    (b'{"resourceType":"Patient","id":["p1"]}', True),
    (b'{"resourceType":"OperationOutcome","issue":[{"severity":"error"}]}', False),
    (b'{"resourceType":"OperationOutcome","issue":[{"severity":"warning"}],"issue":[]}', False),
    (b'{"resourceType":"OperationOutcome","issue":{"severity":"fatal"}}', False),
])
def test_hostile_shapes_are_read_as_dicts_or_refused(raw, refused):
    decoded, new = orjson.loads(raw), new_struct(raw)
    assert (new is None) == refused
    if new is not None:
        assert SELECTOR.wanted_struct(new) is SELECTOR.wanted(decoded)
        for patient_id in (PATIENT, OTHER, "a/b", None):
            assert other_patient_by_struct(new, decoded, patient_id) == other_patient_by_dict(decoded, patient_id)


def test_an_empty_subject_is_told_apart_by_the_resource_read_whole():
    """{} and {"display": ..} read as the same Reference Struct; `subject or patient` passes over only the first."""
    for subject, unusable in ((b"{}", prefetch.OTHER_PATIENT), (b'{"display":"x"}', None)):
        raw = b'{"resourceType":"Condition","subject":%s,"patient":{"reference":"Patient/p2"}}' % subject
        assert other_patient_by_struct(new_struct(raw), orjson.loads(raw), PATIENT) == unusable
