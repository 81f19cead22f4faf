"""Selector.wanted against the selection as it was before it was restructured for speed (issue 18): the same choice
for every generated resource, well-formed or not (tests/test_lazyjson.py's strategies)."""
from __future__ import annotations

import orjson
from hypothesis import HealthCheck, given, settings, strategies as st

from service.clinical.record import MEDICATION_TYPES, _named_or_referenced
from tests.test_lazyjson import SELECTOR, resource, text


def wanted_before(resource: dict) -> bool:
    """Selector.wanted at 51e18d5: the medication names tested before the codes."""
    rtype = resource.get("resourceType")
    entry = SELECTOR.by_type.get(rtype) if isinstance(rtype, str) else None
    if entry is None:
        return rtype == "Patient"
    if rtype in MEDICATION_TYPES and _named_or_referenced(resource, entry[0]):
        return True
    concept = resource.get(entry[0])
    if not isinstance(concept, dict):
        return False
    coding = concept.get("coding")
    if not isinstance(coding, list):
        return False
    for c in coding:
        if isinstance(c, dict):
            code = c.get("code")
            if isinstance(code, str) and code in SELECTOR.code_values:
                system = c.get("system")
                if isinstance(system, str) and (system, code) in entry[1]:
                    return True
    return False


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([0, 3, 10]).flatmap(resource))
def test_wanted_chooses_as_before_on_generated_resources(generated):
    decoded = orjson.loads(text(generated))
    assert SELECTOR.wanted(decoded) is wanted_before(decoded)


def test_wanted_chooses_as_before_on_medications_named_or_coded_or_both():
    dex = {"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "3264"}
    for rtype in sorted(MEDICATION_TYPES):
        path = SELECTOR.by_type[rtype][0]
        for concept in ({"coding": [dex]}, {"text": "Dexamethasone 4 mg"}, {"coding": [{"display": "DEXAMETHASONE"}]},
                        {"coding": [{"system": "x", "code": "1"}]}, {"coding": "3264"}, [dex], None):
            for more in ({}, {"medicationReference": {"reference": "Medication/m"}}, {"medicationReference": "m"}):
                resource = {"resourceType": rtype, path: concept, **more}
                assert SELECTOR.wanted(resource) is wanted_before(resource), resource
