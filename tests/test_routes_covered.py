"""Every route a user can reach is opened by some test.

The routes come from the app's own url_map (every optional part on), so a new route is checked the day it
is added. A route counts as opened when a test module holds a request path for it: a string literal, or
an f-string whose fixed parts, with any value put in its {placeholders}, is a URL the route answers
(`f"{server.url}/cds-services/{service_id}/feedback"` opens `/cds-services/<service_id>/feedback`).
"""
import ast
from pathlib import Path
from urllib.parse import urlsplit

from flask import Flask
from werkzeug.exceptions import HTTPException

from service import create_app
from service.config import Settings

TESTS = Path(__file__).resolve().parent
SAMPLE = "x1"          # what an f-string placeholder stands for inside a path


def request_paths(source: str) -> set[str]:
    """Every path-like string a module writes: literals and f-strings, placeholders filled with SAMPLE."""
    paths = set()
    tree = ast.parse(source)
    f_string_parts = {id(part) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for part in node.values}
    for node in ast.walk(tree):
        if id(node) in f_string_parts:
            continue
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
        elif isinstance(node, ast.JoinedStr):
            parts = node.values
            if parts and isinstance(parts[0], ast.FormattedValue):
                parts = parts[1:]                    # a leading {base_url}: the path follows it
            text = "".join(p.value if isinstance(p, ast.Constant) else SAMPLE for p in parts)
        else:
            continue
        if text.startswith(("http://", "https://")):
            try:
                text = urlsplit(text).path
            except ValueError:              # a hostile URL a test sends ("https://[::1/x"): no route's path
                continue
        if text.startswith("/") and " " not in text:
            paths.add(text.split("?")[0].split("#")[0])
    return paths


def paths_in_tests() -> set[str]:
    return set().union(*(request_paths(p.read_text()) for p in TESTS.glob("test_*.py")))


def uncovered_routes(app: Flask, paths: set[str]) -> list[str]:
    """The rules of `app` that none of `paths` reaches (with any of the rule's methods)."""
    adapter = app.url_map.bind("localhost")
    opened = set()
    for path in paths:
        for method in ("GET", "POST", "PUT", "DELETE", "PATCH"):
            try:
                endpoint, _ = adapter.match(path, method=method)
            except HTTPException:         # no route for it, or not with this method
                continue
            opened.add((endpoint, method))
    return [rule.rule for rule in app.url_map.iter_rules()
            if not any((rule.endpoint, m) in opened for m in rule.methods)]


def test_request_paths_reads_literals_and_f_strings():
    source = 'a = "/pathway"\nb = f"{server.url}/cds-services/{sid}/feedback"\nc = "not a path"\nd = "http://h:1/healthz?x=1"'
    assert request_paths(source) == {"/pathway", f"/cds-services/{SAMPLE}/feedback", "/healthz"}


def test_a_route_no_test_opens_is_reported():
    app = Flask(__name__, static_folder=None)
    app.add_url_rule("/opened/<thing>", "opened", lambda thing: thing)
    app.add_url_rule("/orphan/<thing>", "orphan", lambda thing: thing, methods=["POST"])
    assert uncovered_routes(app, request_paths('x = f"{base}/opened/{n}"\ny = "/orphan/1"')) == []
    assert uncovered_routes(app, request_paths('x = f"{base}/opened/{n}"')) == ["/orphan/<thing>"]


def test_every_route_in_the_url_map_is_opened_by_a_test(tmp_path):
    app = create_app(Settings.from_env({"AVH_CDS_AUTH": "off"}, fixture_fhir=True,
                                       sqlite_path=tmp_path / "avh-cds.sqlite3"))
    assert {"/pathway", "/cds-services/<service_id>", "/healthz"} <= {r.rule for r in app.url_map.iter_rules()}
    assert uncovered_routes(app, paths_in_tests()) == []
