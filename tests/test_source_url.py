"""Each card's Source links to the pathway page under the URL the call was sent to (or AVH_CDS_PUBLIC_URL): what
the app remembers of it per host (service/__init__.py, Avh.source_url) follows the Host header and stays bounded."""
import orjson
import pytest

from bench.patients import FHIR_SERVER, patient_view_request
from service import PATHWAY_URLS, create_app
from service.config import Settings

BODY = orjson.dumps(patient_view_request(20))


def _app(tmp_path, **more):
    return create_app(Settings.from_env({"AVH_CDS_AUTH": "off", "AVH_CDS_FHIR_SERVERS": FHIR_SERVER, **more},
                                        sqlite_path=tmp_path / "avh-cds.sqlite3"))


def _source_urls(client, host: str) -> set[str]:
    response = client.post("/cds-services/avh-patient-view", data=BODY, content_type="application/json",
                           headers={"Host": host})
    assert response.status_code == 200
    cards = response.get_json()["cards"]
    assert cards
    return {c["source"]["url"].split("#")[0] for c in cards}     # each card's own anchor after the '#' 


def test_the_source_follows_the_host_of_each_call(tmp_path):
    client = _app(tmp_path).test_client()
    assert _source_urls(client, "ehr-a.test") == {"http://ehr-a.test/pathway"}
    assert _source_urls(client, "ehr-b.test:8443") == {"http://ehr-b.test:8443/pathway"}
    assert _source_urls(client, "ehr-a.test") == {"http://ehr-a.test/pathway"}


def test_hosts_past_the_bound_are_answered_but_not_remembered(tmp_path):
    app = _app(tmp_path)
    client = app.test_client()
    for i in range(PATHWAY_URLS + 10):
        assert _source_urls(client, f"host-{i}.test") == {f"http://host-{i}.test/pathway"}
    assert len(app.extensions["avh"].pathway_urls) == PATHWAY_URLS


@pytest.mark.parametrize("public", ["https://cds.example.org", "https://cds.example.org/"])
def test_the_public_url_wins_over_the_host(tmp_path, public):
    client = _app(tmp_path, AVH_CDS_PUBLIC_URL=public).test_client()
    assert _source_urls(client, "ehr-a.test") == {"https://cds.example.org/pathway"}
