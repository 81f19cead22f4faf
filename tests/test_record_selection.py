"""Selection of relevant resources on decoded JSON, before any model validation."""
from service.clinical.record import Validator, build_record


def _condition(rid, system, code, subject="Patient/p1"):
    return {"resourceType": "Condition", "id": rid, "subject": {"reference": subject},
            "code": {"coding": [{"system": "http://example.org/other", "code": "x"}, {"system": system, "code": code}]}}


def test_relevant_when_any_coding_is_in_a_value_set_of_its_type(app):
    selector = app.extensions["avh"].engine.selector
    assert selector.wanted(_condition("c1", "http://snomed.info/sct", "71286001"))
    assert not selector.wanted(_condition("c2", "http://loinc.org", "71286001"))        # right code, wrong system
    assert not selector.wanted({**_condition("c3", "http://snomed.info/sct", "71286001"),
                                     "resourceType": "Encounter"})                            # type not read
    med = {"resourceType": "MedicationRequest", "medicationCodeableConcept": {
        "coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "3264"}]}}
    assert selector.wanted(med)
    assert selector.wanted({"resourceType": "Patient", "id": "p"})
    assert not selector.wanted({"resourceType": {"Patient": 1}}) and not selector.wanted({"resourceType": None})


def test_malformed_codes_are_not_relevant_and_do_not_raise(app):
    selector = app.extensions["avh"].engine.selector
    for code in (None, "71286001", [], {"coding": "71286001"}, {"coding": [None, "x", 3]}, {"text": "compression"}):
        assert not selector.wanted({"resourceType": "Condition", "id": "c", "code": code})


def test_record_keeps_relevant_resources_of_this_patient_once(app):
    selector = app.extensions["avh"].engine.selector
    resources = [_condition("c1", "http://snomed.info/sct", "71286001"),
                 _condition("c1", "http://snomed.info/sct", "71286001"),                        # duplicate
                 _condition("c2", "http://snomed.info/sct", "71286001", subject="Patient/other"),
                 _condition("c3", "http://snomed.info/sct", "44054006"),                         # diabetes
                 "not a resource"]
    record = build_record(resources, selector, "p1")
    assert [c.id for c in record.of("Condition")] == ["c1"]


def test_the_depth_limit_holds_for_every_resource_whatever_its_place_in_a_long_chart(app):
    engine = app.extensions["avh"].engine
    deep = {"a": {"a": {"a": {"a": {}}}}}
    resources = [_condition(f"c{i}", "http://snomed.info/sct", "71286001") for i in range(200)]
    for i in (0, 63, 64, 130, 199):                      # first and last of a walk, and further on
        resources[i] = {**resources[i], "extension": [{"url": "http://x", "extension": [deep]}]}
    record = build_record(resources, engine.selector, "p1", validate=Validator(max_depth=6))
    assert sorted(lo.id for lo in record.left_out) == ["c0", "c130", "c199", "c63", "c64"]
    assert all("nests 9 levels deep; at most 6 are read" in lo.reason for lo in record.left_out)
    assert len(record.of("Condition")) == 195


def test_the_record_selects_unless_told_the_resources_are_selected(app):
    selector = app.extensions["avh"].engine.selector
    resources = [_condition("c1", "http://snomed.info/sct", "71286001"), _condition("c3", "http://snomed.info/sct", "44054006")]
    assert [c.id for c in build_record(resources, selector, "p1").of("Condition")] == ["c1"]
    assert [c.id for c in build_record(resources, selector, "p1", selected=True).of("Condition")] == ["c1", "c3"]


def test_the_usual_subject_reference_and_the_parsed_one_agree(app):
    selector = app.extensions["avh"].engine.selector
    for patient, subject, kept in (("p1", "Patient/p1", True), ("p1", "Patient/p1/", True), ("p1", "Patient/p2", False),
                                   ("", "Patient/", False), ("a/b", "Patient/a/b", False), ("p1", "patient/p1", False)):
        resource = _condition("c1", "http://snomed.info/sct", "71286001", subject=subject)
        assert bool(build_record([resource], selector, patient).of("Condition")) is kept, (patient, subject)


def test_codings_of_dicts_and_models_skip_incomplete_and_malformed_entries():
    from fhir.resources.R4B.codeableconcept import CodeableConcept

    from service.clinical.valuesets import codings
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


def test_codings_that_are_not_strings_match_nothing_and_break_nothing(tmp_path):
    """A relevant resource with a list or object where a system or code belongs: left out as invalid FHIR,
    never a 500 (found while tuning the selection)."""
    from service import create_app
    from service.config import Settings
    from tests.security_support import hook_request
    client = create_app(Settings.from_env({"AVH_CDS_AUTH": "off"}, sqlite_path=tmp_path / "db.sqlite3")).test_client()
    for odd in ({"system": ["http://snomed.info/sct"], "code": "71286001"}, {"system": "http://snomed.info/sct",
                                                                               "code": {"c": "71286001"}}):
        body = hook_request()
        body["prefetch"]["conditions"]["entry"][1]["resource"]["code"]["coding"].append(odd)
        response = client.post("/cds-services/avh-patient-view", json=body)
        # the compression is left out: never silence, the data-unavailable card names it
        assert response.status_code == 200
        assert [c["source"]["topic"]["code"] for c in response.json["cards"]] == ["data-unavailable"]
        assert "Condition/" in response.json["cards"][0]["summary"]


def test_a_medication_kept_by_its_reference_whose_concept_is_no_object_is_left_out_not_a_crash(app):
    """A MedicationRequest or MedicationAdministration is kept for its medicationReference whatever its
    medicationCodeableConcept holds; left out, its concepts were read as a model's (`.coding` of a string, a number,
    a list): an AttributeError, a 500 for the whole call (found by review7's differential fuzz, present at a32246c)."""
    selector = app.extensions["avh"].engine.selector
    request = {"resourceType": "MedicationRequest", "id": "m1", "status": "active", "intent": "order",
               "subject": {"reference": "Patient/p1"}, "medicationReference": {"reference": "Medication/d"}}
    given = {"resourceType": "MedicationAdministration", "id": "a1", "status": "completed",
             "subject": {"reference": "Patient/p1"}, "medicationReference": {"reference": "Medication/d"},
             "effectiveDateTime": "2026-11-20"}
    for odd in ("dexamethasone", 5, 2 ** 70, 1.5, True, [1], [{"coding": []}]):
        record = build_record([{**request, "medicationCodeableConcept": odd},
                               {**given, "medicationCodeableConcept": odd}], selector, "p1")
        assert [(lo.ref, lo.concepts) for lo in record.left_out] == [("MedicationRequest/m1", ()),
                                                                     ("MedicationAdministration/a1", ())], odd
