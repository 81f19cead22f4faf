"""A URL typed with a trailing slash (/pathway/, /governance/, /cds-services/, /fhir/metadata/): GET and HEAD are
redirected (308) to the route without it, the query kept; a POST is not (a CDS call's URL is exact: its JWT's aud
names it), it stays a JSON 404 that names the URL. The pages, followed in a real browser: tests/test_pages_browser.py."""
import pytest

from service import create_app
from service.config import Settings


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The app as `avh-cds serve` runs it: auth off, the fixture FHIR endpoint on."""
    return create_app(Settings.from_env({"AVH_CDS_AUTH": "off", "AVH_CDS_LOG_LEVEL": "ERROR"}, fixture_fhir=True,
                                        sqlite_path=tmp_path_factory.mktemp("slash") / "avh-cds.sqlite3"))


def get_routes(app) -> list[str]:
    """Every GET route without a parameter: the pages and JSON answers a person or a probe opens by URL."""
    return sorted(r.rule for r in app.url_map.iter_rules()
                  if "GET" in r.methods and not r.arguments and not r.rule.endswith("/"))


def test_every_get_route_typed_with_a_slash_is_redirected_to_it(served):
    client = served.test_client()
    routes = get_routes(served)
    assert {"/pathway", "/governance", "/cds-services", "/healthz", "/openapi.json", "/fhir/metadata"} <= set(routes)
    for path in routes:
        for method in ("GET", "HEAD"):
            answer = client.open(path + "/", method=method)
            assert answer.status_code == 308 and answer.headers["Location"] == path, (method, path)
        for typed in (path + "/", path + "//"):
            followed = client.get(typed, follow_redirects=True)
            assert followed.request.path == path and followed.status_code == client.get(path).status_code, typed


def test_the_redirect_keeps_the_query():
    app = create_app(Settings.from_env({"AVH_CDS_AUTH": "off", "AVH_CDS_LOG_LEVEL": "ERROR"}))
    client = app.test_client()
    answer = client.get("/governance/?format=json&from=2026-01-01")
    assert answer.status_code == 308 and answer.headers["Location"] == "/governance?format=json&from=2026-01-01"
    assert client.get("/governance/", query_string={"format": "json"}, follow_redirects=True).is_json
    # a raw control character or byte (a header cannot carry it) is escaped, not a 500
    for raw, kept in (("a=\nb", "a=%0Ab"), ("a=\xe9", "a=%E9"), ("a=%0D%0A", "a=%0D%0A")):
        answer = client.get("/pathway/", environ_overrides={"QUERY_STRING": raw})
        assert answer.status_code == 308 and answer.headers["Location"] == "/pathway?" + kept


def test_the_fixture_fhir_endpoint_redirects_the_same(served):
    client = served.test_client()
    for typed, canonical in (("/fhir/metadata/", "/fhir/metadata"), ("/fhir/Patient/avh-01/", "/fhir/Patient/avh-01"),
                             ("/fhir/Condition/?patient=avh-01", "/fhir/Condition?patient=avh-01")):
        answer = client.get(typed)
        assert answer.status_code == 308 and answer.headers["Location"] == canonical, typed
        assert client.get(typed, follow_redirects=True).status_code == 200
    # an id's bytes as sent: a '?', '#' or newline in it stays in the path (escaped), never a 500
    for typed in ("/fhir/Patient/a%3Fb/", "/fhir/Patient/a%23b/", "/fhir/Patient/a%0Ab/", "/fhir/Patient/%E6%BC%A2/"):
        answer = client.get(typed)
        assert answer.status_code == 308 and answer.headers["Location"] == typed[:-1], typed
        assert client.get(typed, follow_redirects=True).json["issue"][0]["code"] == "not-found"
    nothing = client.get("/fhir/NotAType/a/b/")       # a slash after nothing: still the FHIR 404
    assert nothing.status_code == 404 and nothing.json["resourceType"] == "OperationOutcome"


def test_a_cds_call_with_a_slash_is_a_404_naming_its_url(served):
    client = served.test_client()
    for path in ("/cds-services/avh-patient-view/", "/cds-services/avh-patient-view/feedback/"):
        answer = client.post(path, json={})
        assert answer.status_code == 404 and answer.json["error"] == "not_found", path
        assert "no trailing slash (" + path.rstrip("/") + ")" in answer.json["message"]


def test_a_cds_call_with_doubled_slashes_is_a_404_naming_its_url(served):
    """What the CDS Hooks sandbox posts when its discovery URL was typed with a trailing slash (it joins that URL and
    the service id with a '/'): werkzeug redirected it (308), so a client following it sent the patient's data again,
    to a URL its JWT's aud does not name. A 404 naming the URL, as a trailing slash."""
    client = served.test_client()
    for path, merged in (("/cds-services//avh-patient-view", "/cds-services/avh-patient-view"),
                         ("/cds-services///avh-order-sign", "/cds-services/avh-order-sign"),
                         ("/cds-services//avh-patient-view/feedback", "/cds-services/avh-patient-view/feedback")):
        answer = client.post(path, json={})
        assert answer.status_code == 404 and answer.json["error"] == "not_found", path
        assert "Location" not in answer.headers
        assert answer.json["message"].endswith("no doubled slash (" + merged + ")"), answer.json
    # as a trailing slash, any POST (the fixture endpoint's search too: the sandbox then searches by GET); a GET is
    # still redirected: the sandbox given a FHIR base typed with a slash reads /fhir//metadata and follows
    answer = client.post("/fhir//Condition/_search", data={"patient": "avh-01"})
    assert answer.status_code == 404 and "Location" not in answer.headers
    answer = client.get("/fhir//metadata")
    assert answer.status_code == 308 and answer.headers["Location"].endswith("/fhir/metadata")
    assert client.get("/fhir//Patient/avh-01", follow_redirects=True).json["id"] == "avh-01"


def test_a_url_no_route_answers_stays_a_json_404(served):
    client = served.test_client()
    for method, path in (("GET", "/nowhere/"), ("GET", "/nowhere"), ("POST", "/cds-services/"), ("GET", "/pathway/x/")):
        answer = client.open(path, method=method)
        assert answer.status_code == 404 and answer.json["error"] == "not_found", (method, path)
        assert "Location" not in answer.headers
