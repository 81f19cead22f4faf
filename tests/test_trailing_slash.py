"""A URL typed with a trailing slash (/pathway/, /governance/, /cds-services/, /fhir/metadata/): GET and HEAD are
redirected (308) to the route without it, the query kept; a POST is not (a CDS call's URL is exact: its JWT's aud
names it), it stays a JSON 404 that names the URL. The pages, followed in a real browser: tests/test_pages_browser.py."""
import re
import subprocess
import sys

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


def test_every_redirect_is_json_naming_its_target(served):
    """The 308 was werkzeug's small HTML page; every other answer of this service is JSON (the fixture FHIR
    server's, FHIR JSON). The Location stays what it was: the page a browser lands on (tests/test_pages_browser.py)."""
    client = served.test_client()
    for path in get_routes(served):
        answer = client.get(path + "/?a=1")
        assert answer.status_code == 308 and answer.headers["Location"] == path + "?a=1", path
        if path.startswith("/fhir"):
            assert answer.content_type == "application/fhir+json; charset=utf-8", path
            assert answer.json["issue"][0]["diagnostics"] == f"this URL has no trailing slash: {path}?a=1"
        else:
            assert answer.content_type == "application/json", path
            assert answer.json == {"error": "permanent_redirect", "location": path + "?a=1",
                                   "message": f"this URL has no trailing slash: {path}?a=1"}


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


def test_a_fhir_search_posted_with_a_slash_is_a_404_naming_its_url(served):
    """POST /fhir/Patient/_search/ got the catch-all's "read-only" 405, as if searching were refused: now the 404
    that names the URL without the slash, as a CDS call's, in FHIR's form (an OperationOutcome)."""
    client = served.test_client()
    for path in ("/fhir/Patient/_search/", "/fhir/Condition/_search//"):
        answer = client.post(path, data={"patient": "avh-01"})
        assert answer.status_code == 404 and answer.json["resourceType"] == "OperationOutcome", path
        issue = answer.json["issue"][0]
        assert issue["code"] == "not-found"
        assert issue["diagnostics"] == f"no route POST {path}: the URL has no trailing slash ({path.rstrip('/')})"
    assert client.post("/fhir/Patient/_search", data={"_id": "avh-01"}).json["total"] == 1
    for method in ("PUT", "PATCH", "DELETE"):    # a write is refused, slash or not: the read-only 405
        for path in ("/fhir/Patient/avh-01/", "/fhir/Patient/_search/"):
            answer = client.open(path, method=method)
            assert answer.status_code == 405 and answer.headers["Allow"] == "GET, HEAD, OPTIONS", (method, path)
            assert answer.json["issue"][0]["code"] == "not-supported"


def test_a_cds_call_with_a_slash_is_a_404_naming_its_url(served):
    client = served.test_client()
    for path in ("/cds-services/avh-patient-view/", "/cds-services/avh-patient-view/feedback/"):
        answer = client.post(path, json={})
        assert answer.status_code == 404 and answer.json["error"] == "not_found", path
        assert "no trailing slash (" + path.rstrip("/") + ")" in answer.json["message"]


@pytest.mark.parametrize("method, path", [("GET", "/cds-services/avh-patient-view/"),
                                          ("GET", "/cds-services/avh-patient-view/feedback/"),
                                          ("HEAD", "/cds-services/avh-patient-view//"),
                                          ("POST", "/pathway/"), ("POST", "/cds-services/"), ("DELETE", "/governance/")])
def test_a_method_the_url_without_the_slash_refuses_gets_its_405_naming_the_methods(served, method, path):
    """A person typing a CDS service's URL (a POST route) into a browser, with a slash, got a bare 404; now the 405
    the URL without the slash gives, naming its methods in the body and in Allow."""
    client = served.test_client()
    bare = path.rstrip("/")
    answer, there = client.open(path, method=method), client.open(bare, method=method)
    assert answer.status_code == there.status_code == 405, (answer.status_code, there.status_code)
    assert answer.headers["Allow"] == there.headers["Allow"] and "Location" not in answer.headers
    allowed = sorted(served.url_map.bind("localhost").match(bare, method="OPTIONS", return_rule=True)[0].methods)
    assert answer.headers["Allow"] == ", ".join(allowed)
    if method != "HEAD":
        assert answer.json == there.json and answer.json["allowed"] == allowed
        assert answer.json["message"] == f"{method} is not allowed on {bare}; it answers {', '.join(allowed)}"


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
        assert answer.json["message"].endswith("the URL is " + merged), answer.json
    # as a trailing slash, any POST (the fixture endpoint's search too: the sandbox then searches by GET); a GET is
    # still redirected: the sandbox given a FHIR base typed with a slash reads /fhir//metadata and follows
    answer = client.post("/fhir//Condition/_search", data={"patient": "avh-01"})
    assert answer.status_code == 404 and "Location" not in answer.headers
    answer = client.get("/fhir//metadata")
    assert answer.status_code == 308 and answer.headers["Location"].endswith("/fhir/metadata")
    assert client.get("/fhir//Patient/avh-01", follow_redirects=True).json["id"] == "avh-01"


def test_a_url_no_route_answers_stays_a_json_404(served):
    client = served.test_client()
    for method, path in (("GET", "/nowhere/"), ("GET", "/nowhere"), ("POST", "/nowhere/"), ("GET", "/pathway/x/")):
        answer = client.open(path, method=method)
        assert answer.status_code == 404 and answer.json["error"] == "not_found", (method, path)
        assert "Location" not in answer.headers


def test_the_redirect_reads_no_private_flask_context():
    """Flask's `request_ctx` is private (flask.globals) and goes on an upgrade: with it gone, a URL with a trailing
    slash is still redirected, on the app's routes and on the fixture FHIR endpoint's."""
    script = """
import flask.globals, tempfile, pathlib
del flask.globals.request_ctx
from service import create_app
from service.config import Settings
app = create_app(Settings.from_env({"AVH_CDS_AUTH": "off", "AVH_CDS_LOG_LEVEL": "ERROR"}, fixture_fhir=True,
                                   sqlite_path=pathlib.Path(tempfile.mkdtemp()) / "avh-cds.sqlite3"))
client = app.test_client()
for typed in ("/pathway/", "/fhir/metadata/"):
    answer = client.get(typed)
    print(typed, answer.status_code, answer.headers.get("Location"))
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split("\n")[:2] == ["/pathway/ 308 /pathway", "/fhir/metadata/ 308 /fhir/metadata"]


@pytest.mark.parametrize("path, query, target", [("/fhir//metadata", "", "/fhir/metadata"),
                                                 ("/fhir//Patient//avh-01", "", "/fhir/Patient/avh-01"),
                                                 ("/pathway//", "", "/pathway"),
                                                 ("/fhir//Condition", "patient=avh-01&x=%0A&y=a+b", "/fhir/Condition"),
                                                 ("", "", "/")])
def test_a_doubled_slash_redirect_never_names_the_hosts_header(served, path, query, target):
    """Attack: werkzeug's own redirect of a path with doubled slashes (or an empty one) built its Location from the
    Host header, `http://evil.example/fhir/metadata`, an HTML page: a redirect to a host the sender chose, which a
    shared cache could serve to others. Now the path and query alone, the body JSON naming them."""
    client = served.test_client()
    for method in ("GET", "HEAD"):
        answer = client.open(method=method, headers={"Host": "evil.example"},
                             environ_overrides={"PATH_INFO": path, "QUERY_STRING": query})
        location = answer.headers["Location"]
        assert answer.status_code == 308 and location == target + ("?" + query if query else ""), (method, path)
        assert "evil.example" not in answer.get_data(as_text=True)
        if method == "GET":
            assert answer.is_json and answer.json["location"] == location
    followed = client.get(path or "/", query_string=query, follow_redirects=True)
    assert followed.status_code == client.get(target, query_string=query).status_code


def test_a_call_with_doubled_slashes_is_a_404_naming_its_url(served):
    """As with a trailing slash: a CDS call or FHIR search posted to a path with doubled slashes was redirected (to
    the Host header's host), which would have the client send the patient's data again; now a 404 naming the URL."""
    client = served.test_client()
    for method, path in (("POST", "/cds-services//avh-patient-view"), ("POST", "/cds-services/avh-patient-view//feedback"),
                         ("POST", "/fhir//Patient/_search"), ("OPTIONS", "/cds-services//avh-patient-view")):
        answer = client.open(path, method=method, json={}, headers={"Host": "evil.example"})
        assert answer.status_code == 404 and "Location" not in answer.headers, (method, path)
        merged = re.sub("/+", "/", path)
        assert answer.json == {"error": "not_found", "message": f"no route {method} {path}: the URL is {merged}"}


def test_no_options_answer_says_html(served):
    """OPTIONS on any route (a CORS preflight, a probe) got an empty body typed text/html: now no Content-Type,
    and the Allow header and CORS headers as before."""
    client = served.test_client()
    for path in ("/cds-services", "/cds-services/avh-patient-view", "/fhir/metadata", "/healthz", "/governance"):
        for headers in ({}, {"Origin": "https://ehr.example", "Access-Control-Request-Method": "POST"}):
            answer = client.options(path, headers=headers)
            assert answer.status_code == 200 and "Content-Type" not in answer.headers, (path, headers)
            assert answer.get_data() == b"" and "OPTIONS" in answer.headers["Allow"]
        assert answer.headers["Access-Control-Allow-Origin"]


def test_a_write_to_the_fhir_base_is_the_read_only_405_slash_or_not(served):
    """PUT, PATCH and DELETE /fhir were a 404 saying "the URL is /fhir/" (werkzeug's redirect to the catch-all), and
    /fhir/ then refused them with a 405; POST /fhir/ was a 404 naming /fhir, which refuses a POST with a 405. Each
    is now the read-only 405 at once, its Allow naming what the URL answers."""
    client = served.test_client()
    for path in ("/fhir", "/fhir/"):
        for method in ("POST", "PUT", "PATCH", "DELETE"):
            answer = client.open(path, method=method, data="{}")
            assert answer.status_code == 405, (method, path, answer.get_data())
            assert answer.json["resourceType"] == "OperationOutcome" and answer.headers["Allow"] == "GET, HEAD, OPTIONS"
            assert answer.json["issue"][0]["code"] == "not-supported", (method, path)


def test_the_doubled_slash_redirect_says_so_in_plain_words(served):
    answer = served.test_client().get("/fhir//metadata")
    assert answer.status_code == 308 and answer.headers["Location"] == "/fhir/metadata"
    assert "this URL has doubled slashes: /fhir/metadata" in answer.get_data(as_text=True)
