"""Per-key failure through the whole service: 412 for scope data, otherwise an answer that never
fires a card whose reason is the absence of data that could not be read."""
import uuid

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from service.clinical.record import build_record
from tests.records import (PRE_OP_CARDS, condition, full_prefetch, operated, pre_operative, procedure, searchset,
                           topics, HEMANGIOMA)

FAILED = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "timeout"}]}


@pytest.fixture
def templates(app):
    return app.extensions["avh"].registry.get("avh-patient-view").prefetch


def call(client, patient_id, prefetch):
    body = {"hook": "patient-view", "hookInstance": str(uuid.uuid4()),
            "context": {"patientId": patient_id, "userId": "Practitioner/u1"}, "prefetch": prefetch}
    return client.post("/cds-services/avh-patient-view", json=body)


def test_full_prefetch_gives_the_expected_cards(client, templates):
    response = call(client, "pt-pre", full_prefetch(pre_operative("pt-pre"), templates, "pt-pre"))
    assert response.status_code == 200 and topics(response.json["cards"]) == PRE_OP_CARDS


@pytest.mark.parametrize("failed_key, rtype, withheld", [
    ("diagnosticReports", "DiagnosticReport", {"spine-mri", "preop-cta"}),
    ("medicationRequests", "MedicationRequest", {"corticosteroids"}),
    ("observations", "Observation", {"preop-embolization"}),
    ("procedures", "Procedure", PRE_OP_CARDS),    # pre- or post-operative cannot be told
])
def test_a_failed_secondary_key_withholds_absence_cards_and_says_so(client, templates, failed_key, rtype, withheld):
    prefetch = full_prefetch(pre_operative("pt-pre"), templates, "pt-pre")
    prefetch[failed_key] = FAILED
    response = call(client, "pt-pre", prefetch)
    assert response.status_code == 200
    cards = response.json["cards"]
    assert topics(cards) == (PRE_OP_CARDS - withheld) | {"data-unavailable"}
    [info] = [c for c in cards if c["source"]["topic"]["code"] == "data-unavailable"]
    assert info["indicator"] == "info" and rtype in info["summary"] and rtype in info["detail"]


def test_a_failed_key_that_no_card_relies_on_changes_nothing(client, templates):
    prefetch = full_prefetch(pre_operative("pt-pre"), templates, "pt-pre")
    prefetch["serviceRequests"] = FAILED           # only post-operative radiotherapy reads it
    assert topics(call(client, "pt-pre", prefetch).json["cards"]) == PRE_OP_CARDS
    prefetch = full_prefetch(operated("pt-op"), templates, "pt-op")
    assert topics(call(client, "pt-op", prefetch).json["cards"]) == {"adjuvant-radiotherapy"}
    prefetch["serviceRequests"] = FAILED
    assert topics(call(client, "pt-op", prefetch).json["cards"]) == {"data-unavailable"}


def test_failed_conditions_are_412_with_an_operation_outcome(client, templates):
    prefetch = full_prefetch(pre_operative("pt-pre"), templates, "pt-pre")
    prefetch["conditions"] = FAILED
    response = call(client, "pt-pre", prefetch)
    assert response.status_code == 412
    assert response.json["resourceType"] == "OperationOutcome"
    [issue] = response.json["issue"]
    assert issue["severity"] == "error" and "'conditions'" in issue["diagnostics"]
    assert "OperationOutcome" in issue["diagnostics"]


def test_a_failed_patient_gives_the_cards_of_an_unknown_age_and_says_so(client, templates):
    """The Patient only gives the age: without it the answer is partial, not 412 (the spec's 412 is for data the
    service cannot work without), and the data-unavailable card says the age is unknown."""
    prefetch = full_prefetch(pre_operative("pt-pre"), templates, "pt-pre")
    complete = call(client, "pt-pre", prefetch).json["cards"]
    prefetch["patient"] = FAILED
    response = call(client, "pt-pre", prefetch)
    assert response.status_code == 200
    cards = response.json["cards"]
    assert topics(cards) == PRE_OP_CARDS | {"data-unavailable"}
    info = info_card(cards)
    assert info["summary"] == "Record partly unread (Patient): the patient's age is unknown"
    assert "age is unknown" in info["detail"] and "did not decide" not in info["detail"]
    assert [c["summary"] for c in cards if c is not info] == [c["summary"] for c in complete]


def test_a_failed_patient_and_a_failed_key_are_named_on_one_card(client, templates):
    prefetch = full_prefetch(pre_operative("pt-pre"), templates, "pt-pre")
    prefetch["patient"] = FAILED
    prefetch["diagnosticReports"] = FAILED
    cards = call(client, "pt-pre", prefetch).json["cards"]
    assert topics(cards) == PRE_OP_CARDS - {"spine-mri", "preop-cta"} | {"data-unavailable"}
    info = info_card(cards)
    assert "(DiagnosticReport, Patient)" in info["summary"] and len(info["summary"]) < 140
    assert "did not decide on" in info["detail"] and "age is unknown" in info["detail"]


def test_a_failed_patient_out_of_the_pathway_stays_silent(client, templates):
    prefetch = full_prefetch(pre_operative("pt-pre"), templates, "pt-pre")
    prefetch["patient"] = FAILED
    prefetch["conditions"] = None                       # no condition: not in the pathway, nothing to say
    response = call(client, "pt-pre", prefetch)
    assert response.status_code == 200 and response.json["cards"] == []


def test_nothing_sent_and_no_fhir_server_is_412_naming_the_conditions(client):
    response = call(client, "pt-pre", {})
    assert response.status_code == 412
    [issue] = response.json["issue"]
    assert issue["code"] == "not-found" and issue["diagnostics"].startswith("prefetch key 'conditions'")


def test_null_keys_are_no_data_not_failures(client, templates):
    prefetch = full_prefetch(pre_operative("pt-pre"), templates, "pt-pre")
    prefetch["diagnosticReports"] = None
    prefetch["medicationRequests"] = None
    assert topics(call(client, "pt-pre", prefetch).json["cards"]) == PRE_OP_CARDS


def test_record_drops_resources_of_another_patient(app):
    selector = app.extensions["avh"].engine.selector
    mine, theirs = condition("c1", "p1", HEMANGIOMA), condition("c9", "p2", HEMANGIOMA)
    record = build_record([mine, theirs], selector, "p1")
    assert [c.id for c in record.of("Condition")] == ["c1"]


def test_the_same_resource_through_two_keys_counts_once(app, client, templates):
    selector = app.extensions["avh"].engine.selector
    twice = procedure("x1", "p1", ("http://snomed.info/sct", "387731002"))
    record = build_record([twice, dict(twice), condition("c1", "p1", HEMANGIOMA)], selector, "p1")
    assert len(record.of("Procedure")) == 1
    # end to end: every resource sent twice (as if through two keys) gives the same cards, each reason once
    prefetch = full_prefetch(pre_operative("pt-pre"), templates, "pt-pre")
    doubled = {k: searchset([e["resource"] for e in v["entry"]] * 2) if v.get("resourceType") == "Bundle" else v
               for k, v in prefetch.items()}
    once, two = call(client, "pt-pre", prefetch).json["cards"], call(client, "pt-pre", doubled).json["cards"]
    assert [c["detail"] for c in once] == [c["detail"] for c in two]


FHIRISH_KEYS = ["resourceType", "id", "entry", "resource", "link", "relation", "url", "subject", "reference",
                "code", "coding", "system", "issue", "severity", "search", "mode", "status", "patient"]
FHIRISH_STRINGS = ["Bundle", "Condition", "Patient", "OperationOutcome", "Procedure", "next", "error", "include",
                   "pt-pre", "Patient/pt-pre", "Patient/other", "http://snomed.info/sct", "448232005", "http://x/"]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.sampled_from(FHIRISH_STRINGS) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(FHIRISH_KEYS), inner, max_size=5),
    max_leaves=25)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(garbage=st.dictionaries(st.sampled_from(FHIRISH_KEYS), json_values, max_size=6), key=st.sampled_from(
    ["patient", "conditions", "observations", "procedures", "medicationRequests", "serviceRequests",
     "diagnosticReports"]))
def test_any_json_object_as_a_prefetch_value_gives_200_or_412(client, templates, garbage, key):
    prefetch = full_prefetch(pre_operative("pt-pre"), templates, "pt-pre")
    prefetch[key] = garbage
    response = call(client, "pt-pre", prefetch)
    assert response.status_code in (200, 412), response.json


def info_card(cards):
    [info] = [c for c in cards if c["source"]["topic"]["code"] == "data-unavailable"]
    return info


def test_a_card_that_fires_on_unreadable_data_is_reported_unchecked(client, templates, app):
    titles = {t: d.data["title"] for t, d in app.extensions["avh"].engine.library.definitions.items()}
    prefetch = full_prefetch(operated("pt-op"), templates, "pt-op")
    prefetch["medicationRequests"] = FAILED      # a dexamethasone course past its taper could be there
    cards = call(client, "pt-op", prefetch).json["cards"]
    assert topics(cards) == {"adjuvant-radiotherapy", "data-unavailable"}
    assert titles["steroid-duration"] in info_card(cards)["detail"]
    prefetch = full_prefetch(pre_operative("pt-pre"), templates, "pt-pre")
    prefetch["observations"] = FAILED           # rapid deterioration could be recorded there
    detail = info_card(call(client, "pt-pre", prefetch).json["cards"])["detail"]
    assert titles["embolization-deferred"] in detail and titles["preop-embolization"] in detail
