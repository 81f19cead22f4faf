"""/openapi.json describes every route the service answers: each rule of the app's url_map (every optional part on:
the fixture FHIR server, the development explain route) is an operation of the document, or is listed, with why, in
its `x-routes-not-described`; and nothing the document describes is a route the app does not have."""
import json
import re

import jsonschema
import pytest
from schemathesis.specs.openapi.definitions import OPENAPI_31

from service import create_app
from service.config import Settings
from service.security import OPENAPI

IMPLICIT = {"HEAD", "OPTIONS"}          # werkzeug's and Flask's own, on every GET route and every route


def template(rule: str) -> str:
    """A werkzeug rule as an OpenAPI path: /cds-services/<service_id> -> /cds-services/{service_id}."""
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    return create_app(Settings.from_env({"AVH_CDS_AUTH": "off", "AVH_CDS_LOG_LEVEL": "ERROR"}, fixture_fhir=True,
                                        sqlite_path=tmp_path_factory.mktemp("openapi") / "avh-cds.sqlite3"))


@pytest.fixture(scope="module")
def document(app):
    return app.test_client().get("/openapi.json").json


def routes(app) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for rule in app.url_map.iter_rules():
        found.setdefault(template(rule.rule), set()).update(m.lower() for m in rule.methods - IMPLICIT)
    return found


def undescribed(found: dict[str, set[str]], document: dict) -> list[str]:
    """The routes (path and method) `document` neither describes nor lists in x-routes-not-described."""
    excluded = document.get("x-routes-not-described", {})
    return sorted(f"{method.upper()} {path}" for path, methods in found.items() if path not in excluded
                  for method in methods if method not in document["paths"].get(path, {}))


def test_template_reads_werkzeug_rules():
    assert template("/fhir/<rtype>/<rid>") == "/fhir/{rtype}/{rid}"
    assert template("/fhir/<path:rest>") == "/fhir/{rest}" and template("/pathway") == "/pathway"


def test_a_route_the_document_leaves_out_is_reported():
    document = {"paths": {"/a": {"get": {}}}, "x-routes-not-described": {"/b/{rest}": "why"}}
    assert undescribed({"/a": {"get"}, "/b/{rest}": {"get"}}, document) == []
    assert undescribed({"/a": {"get", "post"}, "/c": {"get"}}, document) == ["GET /c", "POST /a"]


def test_every_route_is_described_or_listed_as_left_out(app, document):
    found = routes(app)
    assert {"/", "/pathway", "/governance", "/healthz", "/readyz", "/metrics", "/fhir", "/fhir/metadata",
            "/cds-services/{service_id}/explain"} <= set(found)
    assert undescribed(found, document) == []


def test_the_document_describes_only_routes_the_app_has(app, document):
    found = routes(app)
    described = {(path, method) for path, item in document["paths"].items() for method in item}
    assert sorted(d for d in described if d[1] not in found.get(d[0], ())) == []
    for path, why in document["x-routes-not-described"].items():
        assert path in found and path not in document["paths"] and why, path


def test_the_document_is_valid_openapi_3_1(document):
    jsonschema.Draft202012Validator(OPENAPI_31).validate(document)
    assert document == json.loads(OPENAPI.read_text())
    operations = [op for item in document["paths"].values() for op in item.values()]
    assert len({op["operationId"] for op in operations}) == len(operations)
    tags = {t["name"] for t in document["tags"]}
    assert all(op.get("tags") and set(op["tags"]) <= tags for op in operations)
    # the client JWT (the document's default) is asked of the CDS Hooks routes only
    assert all(("security" in op) != (op["tags"] == ["CDS Hooks"]) for op in operations)


def test_the_governance_503_is_the_one_the_document_describes(tmp_path):
    """GET /governance with the feedback database down (nothing listens on port 9): the document described its 503
    as the replay cache's or a feedback post's (replay_cache_unavailable, storage_unavailable), the shared
    `Unavailable`; the report reads no replay cache. The answer is the one described: the error it names, its
    schema, its header."""
    app = create_app(Settings.from_env({"AVH_CDS_AUTH": "off", "AVH_CDS_LOG_LEVEL": "ERROR"},
                                       database_url="postgresql://avh@127.0.0.1:9/down", storage_timeout_seconds=1.0))
    try:
        client = app.test_client()
        answer, document = client.get("/governance?format=json"), client.get("/openapi.json").json
    finally:
        app.extensions["avh"].store.dispose()
    assert answer.status_code == 503
    described = document["paths"]["/governance"]["get"]["responses"]["503"]
    if "$ref" in described:                     # a shared response: #/components/responses/<name>
        described = document["components"]["responses"][described["$ref"].rsplit("/", 1)[1]]
    assert set(re.findall(r"\(([a-z_]+)\)", described["description"])) == {answer.json["error"]}
    schema = described["content"]["application/json"]["schema"]
    jsonschema.Draft202012Validator({**schema, "components": document["components"]}).validate(answer.json)
    assert int(answer.headers["Retry-After"]) == answer.json["retryAfterSeconds"] > 0
    assert set(described["headers"]) <= set(answer.headers.keys())
