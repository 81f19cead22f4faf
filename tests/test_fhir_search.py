import pytest

from service.fhir.search import MAX_COUNT, SearchError, answer_query, parse_query, parse_search
from tests.fhir_records import COMPRESSION, HEMANGIOMA, RXNORM, SNOMED, concept, condition, patient

HEM = condition(HEMANGIOMA, patient_id="p1", id="c1")
CMP = condition(COMPRESSION, patient_id="p1", id="c2")
OTHER = condition(HEMANGIOMA, patient_id="p2", id="c3")
UNCODED_SYSTEM = {**condition(HEMANGIOMA, patient_id="p1", id="c4"), "code": {"coding": [{"code": "448232005"}]}}
DEX = {"resourceType": "MedicationRequest", "id": "m1", "status": "active", "intent": "order",
       "subject": {"reference": "http://ehr.example/fhir/Patient/p1"},
       "medicationCodeableConcept": concept(RXNORM, "3264", "dexamethasone")}
ALL = [patient(patient_id="p1"), HEM, CMP, OTHER, UNCODED_SYSTEM, DEX]


def ids(query):
    return [r["id"] for r in parse_query(query).select(ALL)]


@pytest.mark.parametrize("query, expected", [
    ("Condition?patient=p1", ["c1", "c2", "c4"]),
    ("Condition?patient=Patient/p1", ["c1", "c2", "c4"]),
    ("Condition?patient=http://ehr.example/fhir/Patient/p2", ["c3"]),
    ("Condition?subject=Patient/p2", ["c3"]),
    ("Condition?subject=Group/p2", []),
    ("Condition?patient=p1,p2&code=http://snomed.info/sct|71286001", ["c2"]),
    ("Condition?patient=p1&code=http://snomed.info/sct|448232005,http://snomed.info/sct|71286001", ["c1", "c2"]),
    ("Condition?patient=p1&code=448232005", ["c1", "c4"]),                 # bare code: any system
    ("Condition?patient=p1&code=|448232005", ["c4"]),                      # |code: no system
    ("Condition?code=http://snomed.info/sct|", ["c1", "c2", "c3"]),        # system|: any code of it
    ("Condition?code=http://loinc.org|448232005", []),
    ("Condition?code=448232005&code=http://snomed.info/sct|", ["c1", "c3"]),   # repeated = AND
    ("Condition?_id=c2,c3", ["c2", "c3"]),
    ("MedicationRequest?patient=p1&code=http://www.nlm.nih.gov/research/umls/rxnorm|3264", ["m1"]),
    ("Observation?patient=p1", []),
    ("Condition?patient=p1&_format=json", ["c1", "c2", "c4"]),
])
def test_search_semantics(query, expected):
    assert ids(query) == expected


@pytest.mark.parametrize("query, complaint", [
    ("Condition?patient=p1&date=ge2020", "'date' is not supported"),
    ("Condition?code:text=hemangioma", "'code:text' is not supported"),
    ("Condition?patient=", "empty value"),
    ("Condition?patient=p1,", "empty value"),
    ("Condition?_count=ten", "_count must be a whole number"),
    ("Condition?_offset=-1", "must not be negative"),
])
def test_unsupported_or_bad_parameters_are_refused(query, complaint):
    with pytest.raises(SearchError, match=complaint):
        parse_query(query)


def test_paging_parameters():
    search = parse_search("Condition", [("patient", "p1"), ("_count", "2"), ("_offset", "1")])
    matched = search.select(ALL)
    assert [r["id"] for r in search.page(matched)] == ["c2", "c4"]
    assert search.params(_count=2, _offset=3) == [("patient", "p1"), ("_count", "2"), ("_offset", "3")]
    assert parse_search("Condition", [("_count", "999999")]).count == MAX_COUNT


def test_answer_query_reads_and_searches():
    assert answer_query("Patient/p1", ALL)["id"] == "p1"
    assert answer_query("Patient/nobody", ALL) is None
    bundle = answer_query(f"Condition?patient=p1&code={SNOMED}|71286001", ALL)
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset" and bundle["total"] == 1
    assert bundle["entry"][0]["resource"]["id"] == "c2"


def test_include_brings_the_referenced_medications_only():
    order = {"resourceType": "MedicationRequest", "id": "mr-1", "subject": {"reference": "Patient/p"},
             "medicationReference": {"reference": "Medication/dex"}}
    contained = {"resourceType": "MedicationRequest", "id": "mr-2", "subject": {"reference": "Patient/p"},
                 "medicationReference": {"reference": "#m"}}
    meds = [{"resourceType": "Medication", "id": "dex"}, {"resourceType": "Medication", "id": "other"}]
    bundle = answer_query("MedicationRequest?patient=p&_include=MedicationRequest:medication",
                          [order, contained, *meds])
    assert [(e["resource"]["id"], e["search"]["mode"]) for e in bundle["entry"]] == [
        ("mr-1", "match"), ("mr-2", "match"), ("dex", "include")]
    assert bundle["total"] == 2
    without = answer_query("MedicationRequest?patient=p", [order, *meds])
    assert [e["resource"]["id"] for e in without["entry"]] == ["mr-1"]
    with pytest.raises(SearchError, match="_include"):
        parse_query("Condition?patient=p&_include=MedicationRequest:medication")



def _lines_run_in_search(work) -> int:
    """How many lines of service/fhir/search.py `work()` runs: its cost, counted, not timed."""
    import sys
    import service.fhir.search as module
    count = 0

    def trace(frame, event, arg):
        nonlocal count
        if frame.f_code.co_filename != module.__file__:
            return None
        if event == "line":
            count += 1
        return trace

    sys.settrace(trace)
    try:
        work()
    finally:
        sys.settrace(None)
    return count


@pytest.mark.parametrize("parameter, wanted", [("code", f"{SNOMED}|448232005"), ("code", "448232005"),
                                               ("patient", "p1"), ("subject", "Patient/p1")])
def test_a_resource_costs_a_search_the_same_however_many_values_it_names(parameter, wanted):
    """Attack (hostile11): POST /fhir/Condition/_search with `code=x0,x1,...` (a form body up to the body limit):
    each resource was compared with every value, and 4 MB of values took ~30 s of one worker of the fixture
    endpoint. Each resource is now looked up in the search's values: the lines run for ten more resources are the
    same for 10,000 values as for one."""
    search = parse_search("Condition", [(parameter, ",".join([f"v{i}" for i in range(10_000)] + [wanted]))])
    few = parse_search("Condition", [(parameter, wanted)])
    assert search.select([HEM]) == few.select([HEM]) == [HEM]

    def per_ten_resources(s):
        return _lines_run_in_search(lambda: s.select([HEM] * 11)) - _lines_run_in_search(lambda: s.select([HEM]))

    assert per_ten_resources(search) == per_ten_resources(few)


def test_include_brings_the_medication_a_versioned_reference_names():
    """A reference may name a version of its Medication (clin13): the fixture endpoint includes that Medication."""
    order = {"resourceType": "MedicationRequest", "id": "mr-1", "subject": {"reference": "Patient/p"},
             "medicationReference": {"reference": "Medication/dex/_history/2"}}
    bundle = answer_query("MedicationRequest?patient=p&_include=MedicationRequest:medication",
                          [order, {"resourceType": "Medication", "id": "dex"}])
    assert [(e["resource"]["id"], e["search"]["mode"]) for e in bundle["entry"]] == [("mr-1", "match"),
                                                                                    ("dex", "include")]
