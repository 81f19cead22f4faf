import datetime as dt
import json

import pytest

from service import create_app
from service.config import Settings
from tests.fhir_records import NO_AUTH, CPT, SNOMED, fixture_bundle, pre_operative_chart, write_fixtures


@pytest.fixture
def fhir(tmp_path):
    app = create_app(Settings.from_env(NO_AUTH, fixture_fhir=True, fixtures_dir=write_fixtures(tmp_path)))
    return app.test_client()


def test_not_mounted_unless_enabled(client):
    assert client.get("/fhir/metadata").status_code == 404


def test_metadata_is_a_capability_statement(fhir):
    response = fhir.get("/fhir/metadata")
    assert response.status_code == 200
    assert response.mimetype == "application/fhir+json"
    body = response.json
    assert body["resourceType"] == "CapabilityStatement" and body["fhirVersion"] == "4.0.1"
    resources = {r["type"]: r for r in body["rest"][0]["resource"]}
    assert {"Patient", "Condition", "Observation", "Procedure", "MedicationRequest", "ServiceRequest",
            "DiagnosticReport"} <= set(resources)
    assert {p["name"] for p in resources["Condition"]["searchParam"]} >= {"patient", "subject", "code", "_count"}


def test_the_base_url_names_the_server_and_links_its_metadata(fhir):
    """The base URL a person opens (the front page and the sandbox link name it): it was a 404."""
    for url in ("/fhir", "/fhir/"):
        response = fhir.get(url, follow_redirects=True)
        assert response.status_code == 200 and response.mimetype == "application/fhir+json", url
        [issue] = response.json["issue"]
        assert response.json["resourceType"] == "OperationOutcome" and issue["severity"] == "information"
        assert "FHIR R4" in issue["diagnostics"] and "http://localhost/fhir/metadata" in issue["diagnostics"]
        assert response.headers["Link"] == '<http://localhost/fhir/metadata>; rel="service-desc"'
    assert fhir.get("/fhir/").headers["Location"] == "/fhir"
    assert fhir.head("/fhir").status_code == 200


def test_read_and_not_found(fhir):
    response = fhir.get("/fhir/Patient/pt-pre")
    assert response.status_code == 200 and response.mimetype == "application/fhir+json"
    assert response.json["id"] == "pt-pre"
    missing = fhir.get("/fhir/Patient/nobody")
    assert missing.status_code == 404 and missing.mimetype == "application/fhir+json"
    assert missing.json["resourceType"] == "OperationOutcome"
    assert missing.json["issue"][0]["code"] == "not-found"
    assert fhir.get("/fhir/NotAType/1").status_code == 404


def test_search_pages_with_next_links_to_the_end(fhir):
    url = f"/fhir/Condition?patient=pt-pre&code={SNOMED}|448232005,{SNOMED}|71286001&_count=1"
    seen, pages = [], 0
    while url:
        page = fhir.get(url)
        assert page.status_code == 200 and page.mimetype == "application/fhir+json"
        body = page.json
        assert body["type"] == "searchset" and body["total"] == 2
        for entry in body["entry"]:
            assert entry["fullUrl"] == f"http://localhost/fhir/Condition/{entry['resource']['id']}"
            seen.append(entry["resource"]["id"])
        pages += 1
        url = next((l["url"] for l in body["link"] if l["relation"] == "next"), None)
    assert pages == 2 and sorted(seen) == ["pt-pre-cmp", "pt-pre-hem"]


def test_search_filters_by_patient_and_code(fhir):
    body = fhir.get(f"/fhir/Procedure?subject=Patient/pt-op&code={SNOMED}|387731002").json
    assert [e["resource"]["id"] for e in body["entry"]] == ["pt-op-dec"]
    assert fhir.get(f"/fhir/Procedure?patient=pt-pre&code={SNOMED}|387731002").json["total"] == 0
    assert fhir.get(f"/fhir/Procedure?patient=pt-pre&code={CPT}|72146").json["total"] == 1


def test_post_search_takes_form_parameters(fhir):
    response = fhir.post("/fhir/Condition/_search", data={"patient": "pt-op", "code": f"{SNOMED}|448232005"})
    assert response.status_code == 200
    assert [e["resource"]["id"] for e in response.json["entry"]] == ["pt-op-hem"]



@pytest.mark.parametrize("data, content_type, status", [
    (b'{"patient": "pt-op"}', "application/json", 415),
    (b"patient=pt-op", "text/plain", 415),
    (b"patient=pt-op", None, 415),
    (b"patient=\xff", "application/x-www-form-urlencoded", 400),
    (b"\xff=\xff&patient=pt-op", "application/x-www-form-urlencoded", 400),
])
def test_a_search_posted_in_a_body_it_cannot_read_is_refused(fhir, data, content_type, status):
    """Attack: a search posted as JSON, as text, or form-encoded but not UTF-8: werkzeug read no form from it and
    the search answered every Condition of every patient, as if unfiltered. Now a 415 or 400 OperationOutcome."""
    response = fhir.post("/fhir/Condition/_search", data=data, content_type=content_type)
    assert response.status_code == status and response.json["resourceType"] == "OperationOutcome"
    assert response.json["issue"][0]["code"] == ("not-supported" if status == 415 else "invalid")
    assert fhir.post("/fhir/Condition/_search", content_type=content_type).json["resourceType"] == "Bundle"


@pytest.mark.parametrize("method, url, status", [
    ("get", "/fhir/Condition?onset-date=ge2020-01-01", 400),
    ("get", "/fhir/Nonsense?patient=x", 404),
    ("delete", "/fhir/Patient/pt-pre", 405),
    ("put", "/fhir/Patient/pt-pre", 405),
    ("get", "/fhir/Patient/pt-pre/_history", 404),
    ("get", "/fhir?_type=Patient", 400),                 # a system-level search
    ("post", "/fhir", 405),                              # a batch or transaction
])
def test_unsupported_requests_get_an_operation_outcome(fhir, method, url, status):
    response = getattr(fhir, method)(url)
    assert response.status_code == status
    assert response.json["resourceType"] == "OperationOutcome" and response.json["issue"][0]["diagnostics"]


def test_fixture_dates_are_shifted_to_today(tmp_path):
    written = fixture_bundle(pre_operative_chart("pt-old"), set())
    anchor = dt.date.today() - dt.timedelta(days=400)
    written["meta"]["lastUpdated"] = anchor.isoformat() + "T00:00:00Z"
    for entry in written["entry"]:
        if entry["resource"]["resourceType"] == "Procedure":
            entry["resource"]["performedDateTime"] = (anchor - dt.timedelta(days=3)).isoformat()
    (tmp_path / "old.json").write_text(json.dumps(written))
    client = create_app(Settings.from_env(NO_AUTH, fixture_fhir=True, fixtures_dir=tmp_path)).test_client()
    body = client.get("/fhir/Procedure?patient=pt-old").json
    assert body["entry"][0]["resource"]["performedDateTime"] == (dt.date.today() - dt.timedelta(days=3)).isoformat()


def test_the_store_follows_the_date(tmp_path):
    from service.fhir.fixture_server import FixtureServer
    days = iter([dt.date(2030, 1, 1)] * 3 + [dt.date(2030, 1, 2)])   # load, store(), store(), store()
    server = FixtureServer(write_fixtures(tmp_path), today=lambda: next(days))
    first = server.store()
    assert server.store() is first                       # same day: loaded once
    later = server.store()
    assert later is not first and later.today == dt.date(2030, 1, 2)
    mri = ("Procedure", "pt-pre-mri")          # written 3 days before its anchor
    assert first.by_ref[mri]["performedDateTime"] == "2029-12-29"
    assert later.by_ref[mri]["performedDateTime"] == "2029-12-30"
