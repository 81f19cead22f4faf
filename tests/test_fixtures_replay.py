"""Every fixture replayed as a patient-view call through the HTTP layer: exact cards, valid responses."""
import datetime as dt
import json
import re
from urllib.parse import urlsplit

import jsonschema
import pytest
import responses
from fhir.resources.R4B import get_fhir_model_class

from service import create_app
from service.config import PROJECT_ROOT, Settings
from service.fhir.search import answer_query
from service.fhir.fixtures import EXPECTED_CARD_SYSTEM, SILENT, load_fixtures
from service.fhir.replay import InProcess, fill_prefetch, prefetch_templates, replay
from tests.fhir_records import stay_on

RESPONSE_SCHEMA = json.loads((PROJECT_ROOT / "service" / "api" / "schemas" / "response.json").read_text())
RANK = {"critical": 0, "warning": 1, "info": 2}
# The service judges "now" in UTC, so fixtures are shifted to the UTC date.
TODAY = dt.datetime.now(dt.timezone.utc).date()
_clock = stay_on(TODAY)                # the service's clock on that day, whenever the tests run
FIXTURES = load_fixtures(PROJECT_ROOT / "fhir_fixtures", TODAY)
TOPICS = {"surgical-decompression", "corticosteroids", "spine-mri", "preop-cta", "preop-embolization",
          "embolization-deferred", "adjuvant-radiotherapy", "posterior-fixation", "steroid-duration",
          "differential-diagnosis", "data-unavailable"}   # data-unavailable: an unreadable hemangioma (fixture 37)


# Tests not about authentication run without it, as tests/conftest.py does.
NO_AUTH = {"AVH_CDS_AUTH": "off"}


@pytest.fixture(scope="module")
def service_app():
    return create_app(Settings.from_env(NO_AUTH))


@pytest.fixture(scope="module")
def outcomes(service_app):
    return {o.fixture.name: o for o in replay(FIXTURES, InProcess(service_app))}


def test_fixtures_cover_every_topic_and_silence():
    expected = set().union(*(f.expected_topics for f in FIXTURES))
    assert expected == TOPICS
    assert sum(1 for f in FIXTURES if not f.expected_topics) >= 6


def test_every_fixture_states_its_expectation():
    for f in FIXTURES:
        tags = {t["code"] for t in f.bundle["meta"].get("tag", []) if t["system"] == EXPECTED_CARD_SYSTEM}
        assert tags, f.name
        assert tags <= TOPICS | {SILENT}, f.name
        assert (SILENT in tags) == (not f.expected_topics), f.name


def test_resource_ids_are_unique_across_fixtures():
    seen = {}
    for f in FIXTURES:
        assert f.bundle["type"] == "collection"
        for r in f.resources():
            key = (r["resourceType"], r["id"])
            assert key not in seen, f"{key} in {f.name} and {seen.get(key)}"
            seen[key] = f.name


def _codings(value):
    if isinstance(value, dict):
        if "system" in value and "code" in value:
            yield value["system"], value["code"]
        for v in value.values():
            yield from _codings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _codings(v)


def test_fixtures_are_valid_r4_bundles_using_only_defined_local_codes():
    local = json.loads((PROJECT_ROOT / "cards" / "codesystem-avh-local.json").read_text())
    defined = {c["code"] for c in local["concept"]}
    for f in FIXTURES:
        unreadable = "data-unavailable" in f.expected_topics      # holds one invalid resource on purpose
        entries = [e for e in f.bundle["entry"] if not (unreadable and "severityLevel" in e["resource"])]
        get_fhir_model_class("Bundle").model_validate({**f.bundle, "entry": entries})
        used = {code for system, code in _codings(f.resources()) if system == local["url"]}
        assert used <= defined, (f.name, used - defined)


@pytest.mark.parametrize("name", [f.name for f in FIXTURES])
def test_fixture_gets_exactly_its_expected_cards(outcomes, name):
    outcome = outcomes[name]
    assert outcome.topics == outcome.fixture.expected_topics
    assert len(outcome.cards) == len(outcome.topics)        # each topic once


@pytest.mark.parametrize("name", [f.name for f in FIXTURES])
def test_response_is_a_valid_cds_hooks_response(outcomes, name):
    response = outcomes[name].response
    jsonschema.validate(response, RESPONSE_SCHEMA)
    cards = response["cards"]
    assert [RANK[c["indicator"]] for c in cards] == sorted(RANK[c["indicator"]] for c in cards)
    for c in cards:
        assert len(c["summary"]) < 140
        assert c["source"]["topic"]["system"] == "https://avh-cds.org/fhir/CodeSystem/card-topic"
        assert all(link["url"].startswith("https://") for link in c.get("links", []))


@pytest.mark.parametrize("name", [f.name for f in FIXTURES if f.expected_topics])
def test_suggestions_are_valid_fhir_for_this_patient(outcomes, name):
    outcome = outcomes[name]
    patient = f"Patient/{outcome.fixture.patient_id}"
    own_refs = {f"{r['resourceType']}/{r['id']}" for r in outcome.fixture.resources()}
    uuids = [c["uuid"] for c in outcome.cards]
    for c in outcome.cards:
        for s in c.get("suggestions", []):
            uuids.append(s["uuid"])
            for action in s["actions"]:
                resource = action["resource"]
                assert resource["resourceType"] in {"ServiceRequest", "MedicationRequest"}
                get_fhir_model_class(resource["resourceType"]).model_validate(resource)
                assert resource["subject"] == {"reference": patient}
                for reason in resource.get("reasonReference", []):
                    assert reason["reference"] in own_refs
    assert len(uuids) == len(set(uuids))


def test_unrelated_resources_never_change_the_cards(service_app):
    """The same patient with all its vitals, labs and unrelated problems sent along gets the same cards."""
    client = service_app.test_client()
    for f in FIXTURES:
        context = {"patientId": f.patient_id, "userId": "Practitioner/x"}
        everything = {"resourceType": "Bundle", "type": "searchset",
                      "entry": [{"resource": r} for r in f.resources() if r["resourceType"] != "Patient"]}
        prefetch = {key: everything for key in ("conditions", "observations", "procedures", "medicationRequests",
                                                 "serviceRequests", "diagnosticReports",
                                                 "medicationAdministrations")}
        prefetch["patient"] = next(r for r in f.resources() if r["resourceType"] == "Patient")
        body = {"hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea", "hook": "patient-view",
                "context": context, "prefetch": prefetch}
        cards = client.post("/cds-services/avh-patient-view", json=body).get_json()["cards"]
        assert {c["source"]["topic"]["code"] for c in cards} == f.expected_topics, f.name


@responses.activate
def test_without_prefetch_the_service_fetches_the_same_data(service_app):
    """No prefetch at all: the service runs its templates against fhirServer and reaches the same cards.

    The FHIR server is mocked in-process (responses) over all fixtures; nothing listens on its port."""
    base = "http://127.0.0.1:18139/fhir"
    fhir_json = {"Content-Type": "application/fhir+json"}
    everything = [r for f in FIXTURES for r in f.resources()]

    def answer(request):
        url = urlsplit(request.url)
        found = answer_query(url.path.removeprefix("/fhir/") + ("?" + url.query if url.query else ""), everything)
        if found is None:
            return 404, fhir_json, json.dumps({"resourceType": "OperationOutcome",
                                               "issue": [{"severity": "error", "code": "not-found"}]})
        return 200, fhir_json, json.dumps(found)

    responses.add_callback(responses.GET, re.compile(re.escape(base) + "/.*"), callback=answer)
    outcomes = replay(FIXTURES, InProcess(service_app), fhir_server=base)
    for o in outcomes:
        assert "prefetch" not in o.request
        assert o.topics == o.fixture.expected_topics, o.fixture.name


def test_prefetch_holds_only_what_the_templates_ask_for(service_app):
    transport = InProcess(service_app)
    templates = prefetch_templates(transport)
    f = next(f for f in FIXTURES if f.name.startswith("01"))
    prefetch = fill_prefetch(templates, f.resources(), {"patientId": f.patient_id})
    assert prefetch["patient"]["id"] == f.patient_id
    conditions = [e["resource"]["id"] for e in prefetch["conditions"]["entry"]]
    assert conditions == ["avh-01-hemangioma", "avh-01-compression", "avh-01-paraparesis"]   # no diabetes
    assert prefetch["conditions"]["total"] == 3
    # medications are read whatever their code (by reference, by name): metformin comes along, and is not kept
    assert [e["resource"]["id"] for e in prefetch["medicationRequests"]["entry"]] == ["avh-01-dm-metformin"]
