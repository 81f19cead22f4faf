"""Selection of relevant resources on decoded JSON, before any model validation."""
from service.clinical.record import build_record


def _condition(rid, system, code, subject="Patient/p1"):
    return {"resourceType": "Condition", "id": rid, "subject": {"reference": subject},
            "code": {"coding": [{"system": "http://example.org/other", "code": "x"}, {"system": system, "code": code}]}}


def test_relevant_when_any_coding_is_in_a_value_set_of_its_type(app):
    selector = app.extensions["avh"].engine.selector
    assert selector.is_relevant(_condition("c1", "http://snomed.info/sct", "71286001"))
    assert not selector.is_relevant(_condition("c2", "http://loinc.org", "71286001"))        # right code, wrong system
    assert not selector.is_relevant({**_condition("c3", "http://snomed.info/sct", "71286001"),
                                     "resourceType": "Encounter"})                            # type not read
    med = {"resourceType": "MedicationRequest", "medicationCodeableConcept": {
        "coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "3264"}]}}
    assert selector.is_relevant(med)


def test_malformed_codes_are_not_relevant_and_do_not_raise(app):
    selector = app.extensions["avh"].engine.selector
    for code in (None, "71286001", [], {"coding": "71286001"}, {"coding": [None, "x", 3]}, {"text": "compression"}):
        assert not selector.is_relevant({"resourceType": "Condition", "id": "c", "code": code})


def test_record_keeps_relevant_resources_of_this_patient_once(app):
    selector = app.extensions["avh"].engine.selector
    resources = [_condition("c1", "http://snomed.info/sct", "71286001"),
                 _condition("c1", "http://snomed.info/sct", "71286001"),                        # duplicate
                 _condition("c2", "http://snomed.info/sct", "71286001", subject="Patient/other"),
                 _condition("c3", "http://snomed.info/sct", "44054006"),                         # diabetes
                 "not a resource"]
    record = build_record(resources, selector, "p1")
    assert [c.id for c in record.of("Condition")] == ["c1"]


def test_codings_of_dicts_and_models_skip_incomplete_and_malformed_entries():
    from fhir.resources.R4B.codeableconcept import CodeableConcept

    from service.valuesets import codings
    concept = {"coding": [{"system": "http://snomed.info/sct", "code": "71286001"}, {"code": "x"},
                          {"system": "http://loinc.org"}, None, "junk"], "text": "t"}
    assert codings(concept) == [("http://snomed.info/sct", "71286001")]
    model = CodeableConcept.model_validate({**concept, "coding": concept["coding"][:3]})
    assert codings(model) == [("http://snomed.info/sct", "71286001")]
    assert codings(None) == [] and codings({}) == [] and codings({"coding": None}) == []


def test_an_invalid_relevant_resource_with_junk_codings_is_left_out_not_a_crash(app):
    selector = app.extensions["avh"].engine.selector
    bad = _condition("c9", "http://snomed.info/sct", "71286001")
    bad["code"]["coding"].append("junk")
    record = build_record([bad], selector, "p1")
    assert record.of("Condition") == () and record.left_out[0].concepts == ("spinal-cord-compression",)
