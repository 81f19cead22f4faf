"""The fixed part of a hook call made cheaper without a change a caller can see: the URL adapter and rule remembered
per routing inputs (service.AvhFlask), the body read in one read (jsonbody.request_body) and decoded once for the
guard and the route (routes._json_body)."""
from __future__ import annotations

import io
import json

import pytest

import service
from tests.security_support import INVOKE, hook_request


def test_a_remembered_route_answers_as_a_new_one(client):
    for _ in range(2):          # the second of each is answered from the remembered adapter and rule
        assert client.post(INVOKE, json=hook_request()).status_code == 200
        assert client.get(INVOKE).json["error"] == "method_not_allowed"
        assert client.post(INVOKE + "/", json=hook_request()).json["error"] == "not_found"
        assert client.post("/cds-services/nope", json=hook_request()).json["error"] == "unknown_service"
        doubled = client.post("/cds-services//avh-patient-view", json=hook_request())  # werkzeug's redirect, refused
        assert doubled.status_code == 404 and doubled.json["message"].endswith(f"the URL is {INVOKE}")
        assert client.post(INVOKE, json=hook_request(), headers={"Host": "a..b"}).json["error"] == "bad_request"
        assert client.get("/cds-services").status_code == 200


def test_each_request_gets_its_own_view_arguments_and_host(client, app):
    seen = []

    @app.url_value_preprocessor
    def rename(endpoint, values):   # changes the request's arguments: the remembered ones must stay as matched
        if values:
            seen.append(values["service_id"])
            values["service_id"] = "avh-patient-view"

    for host in ("one.example", "two.example", "one.example"):
        assert client.post("/cds-services/renamed", json=hook_request(), headers={"Host": host}).status_code == 200
    assert seen == ["renamed"] * 3
    assert {"one.example", "two.example"} <= {host for host, _ in app._adapters.values()}


def test_the_remembered_adapters_are_bounded(client, app, monkeypatch):
    monkeypatch.setattr(service, "ADAPTERS", 4)
    for n in range(10):
        client.post(f"/cds-services/s{n}", json=hook_request())
        assert len(app._adapters) <= 4


def test_an_empty_or_broken_body_is_named_as_before(client):
    empty = client.post(INVOKE, data=b"", content_type="application/json")
    assert empty.status_code == 400 and empty.json["message"] == "the request body is empty; a JSON object is required"
    broken = client.post(INVOKE, data=b"{", content_type="application/json")
    assert broken.status_code == 400 and broken.json == {
        "error": "invalid_json", "message": "the request body is not valid JSON (unexpected end of data: line 1 column 2 "
        "(char 1))"}      # what orjson found and where (hard13)
    listed = client.post(INVOKE, data=b"[]", content_type="application/json")
    assert listed.json["error"] == "invalid_request"


def _post(app, body: bytes, length: int, **environ) -> tuple[str, dict]:
    """A POST whose Content-Length says `length` and whose input holds `body`, straight through the WSGI callable."""
    status = []
    chunks = app({"REQUEST_METHOD": "POST", "PATH_INFO": INVOKE, "QUERY_STRING": "", "SCRIPT_NAME": "",
                  "SERVER_NAME": "localhost", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1",
                  "CONTENT_TYPE": "application/json", "CONTENT_LENGTH": str(length), "HTTP_HOST": "localhost",
                  "wsgi.input": io.BytesIO(body), "wsgi.url_scheme": "http", "wsgi.errors": io.StringIO(),
                  "wsgi.version": (1, 0), "wsgi.multithread": False, "wsgi.multiprocess": False,
                  "wsgi.run_once": False, **environ}, lambda s, headers, exc_info=None: status.append(s))
    return status[0], json.loads(b"".join(chunks))


def test_a_body_of_a_given_length_is_read_as_werkzeug_reads_it(app):
    body = json.dumps(hook_request()).encode()
    assert _post(app, body, len(body))[0].startswith("200")
    assert _post(app, body + b"  trailing bytes past the length", len(body))[0].startswith("200")
    # Cut short: the client went away (400), or, under a server that ends the input itself, the body ends there.
    assert _post(app, body[:-5], len(body))[1]["error"] == "bad_request"
    status, answer = _post(app, body[:-5], len(body), **{"wsgi.input_terminated": True})
    assert status.startswith("400") and answer["error"] == "invalid_json"
    app.config["MAX_CONTENT_LENGTH"] = len(body) - 1
    assert _post(app, body, len(body))[1]["error"] == "body_too_large"


def test_without_a_secret_key_every_request_has_the_one_null_session(app):
    from flask import session
    from flask.sessions import NullSession
    with app.test_request_context("/"):
        assert isinstance(session._get_current_object(), NullSession)
        first = session._get_current_object()
        with pytest.raises(RuntimeError):
            session["x"] = 1
    with app.test_request_context("/"):
        assert session._get_current_object() is first
    app.secret_key = "a key"            # an app given a key gets Flask's signed sessions
    with app.test_request_context("/"):
        assert not isinstance(session._get_current_object(), NullSession)


def test_refused_routes_and_long_routing_inputs_are_not_remembered(client, app):
    """Review of 9c8ee8c: the adapter of a refused route (404, 405, a redirect) was remembered (only its match was
    not), so any caller could fill the memory with paths, Host names and Connection headers of its choosing (~7 MB
    a worker at gunicorn's header limits) and push the hook URL's adapter out; so could long routing inputs on a
    route that matches."""
    assert client.get("/nowhere/" + "p" * 2000).status_code == 404
    assert client.get(INVOKE).status_code == 405
    assert client.post("/cds-services//avh-patient-view", json=hook_request()).status_code == 404   # a redirect, refused
    assert client.post(INVOKE, json=hook_request(), headers={"Connection": "k" * 8000}).status_code == 200
    assert client.post(INVOKE, json=hook_request(), query_string="q" * 4000).status_code == 200
    assert app._adapters == {}
    assert client.post(INVOKE, json=hook_request()).status_code == 200
    assert len(app._adapters) == 1


@pytest.mark.parametrize("host", ["", "a b", "a@b", "x/y"])
def test_a_host_header_that_is_not_a_host_name_is_a_400(client, host):
    # werkzeug reads such a Host as none: a card's source had been "http:/pathway#...", a link "http:/fhir/...".
    for _ in range(2):          # never remembered as a routing input
        answer = client.post(INVOKE, json=hook_request(), headers={"Host": host})
        assert answer.status_code == 400
        assert answer.json == {"error": "bad_request", "message": "the Host header is not a host name"}
        assert client.get("/cds-services", headers={"Host": host}).status_code == 400
    assert client.post(INVOKE, json=hook_request(), headers={"Host": "ehr.example:8443"}).status_code == 200


@pytest.mark.parametrize("length", ["0", "73", "0073", " 73", "73 ", "7 3", "-1", "+5", "1_0", "١٢", "²", "", "x",
                                    "99999999999999999999999", "9" * 5000, None])
@pytest.mark.parametrize("transfer", [None, "chunked", "gzip", "gzip, chunked"])
def test_the_content_length_is_read_as_werkzeug_reads_it(length, transfer):
    from werkzeug.wsgi import get_content_length
    from service.jsonbody import content_length
    environ = {**({"CONTENT_LENGTH": length} if length is not None else {}),
               **({"HTTP_TRANSFER_ENCODING": transfer} if transfer is not None else {})}
    assert content_length(environ) == get_content_length(environ)


def test_a_content_length_past_pythons_digit_limit_is_read_as_werkzeug_reads_it(app):
    """Review of rest4: int() refuses a string of more than 4,300 digits (ValueError), which werkzeug reads as 0;
    read by int() alone it was a 500 instead of bca002b's 400 (an empty body)."""
    body = json.dumps(hook_request()).encode()
    status, answer = _post(app, body, "9" * 5000)
    assert status.startswith("400") and answer["message"] == "the request body is empty; a JSON object is required"


NOT_HOST_NAMES = ["", "a b", "a@b", "x/y"]
HOST_ROUTES = [("POST", INVOKE), ("GET", "/cds-services"), ("GET", "/pathway"), ("GET", "/readyz"), ("GET", "/nope")]


def _configure(app, setting: str) -> None:
    """Flask's own host settings, which send create_url_adapter to Flask's (nothing remembered). The environment
    cannot set them (Settings reads AVH_CDS_* alone); code that wraps create_app can."""
    if setting == "host_matching":
        app.url_map.host_matching = True
    elif setting == "subdomain_matching":
        app.subdomain_matching = True
    else:
        app.config.update({"trusted_empty": {"TRUSTED_HOSTS": []}, "trusted": {"TRUSTED_HOSTS": ["good.example"]},
                           "server_name": {"SERVER_NAME": "good.example"}}[setting])


@pytest.mark.parametrize("setting", ["trusted_empty", "trusted", "server_name", "subdomain_matching", "host_matching"])
def test_a_host_header_that_is_not_a_host_name_is_a_400_with_flask_host_settings_too(client, app, setting):
    # Without the check on Flask's path these answered 200 with a card source "http:/pathway#..." (all but "trusted",
    # whose werkzeug SecurityError already refused them).
    _configure(app, setting)
    for host in NOT_HOST_NAMES:
        for method, path in HOST_ROUTES:
            answer = client.open(path, method=method, json=hook_request() if method == "POST" else None,
                                 headers={"Host": host})
            assert answer.status_code == 400 and answer.json["error"] == "bad_request", (host, path)
            assert answer.json["message"] == (f"Host {host!r} is not trusted." if setting == "trusted"
                                              else service.INVALID_HOST)
    assert app._adapters == {}
    if setting != "host_matching":       # the app's rules name no host: host matching finds none of them (a 404)
        answer = client.post(INVOKE, json=hook_request(), headers={"Host": "good.example"})
        assert answer.status_code == 200
        assert {card["source"]["url"].split("#")[0] for card in answer.json["cards"]} == {"http://good.example/pathway"}


def test_an_untrusted_host_or_one_werkzeug_cannot_bind_is_a_400_with_flask_host_settings(client, app):
    app.config["SERVER_NAME"] = "good.example"      # werkzeug binds the URL map to it, not to the Host header
    answer = client.post(INVOKE, json=hook_request(), headers={"Host": "a..b"})     # had been cards under http://a..b
    assert answer.status_code == 400 and answer.json["error"] == "bad_request"
    app.config["TRUSTED_HOSTS"] = ["good.example"]
    answer = client.get("/cds-services", headers={"Host": "evil.example"})
    assert answer.status_code == 400 and answer.json == {"error": "bad_request",
                                                         "message": "Host 'evil.example' is not trusted."}
