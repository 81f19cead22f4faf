"""AvhFlask's thin dispatch (service/__init__.py): Flask's steps with the hook functions composed once per blueprint
and signals sent only when something listens. Every answer must be the one Flask's own dispatch gives."""
import re

import pytest
from hypothesis import given, strategies as st
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Response as WerkzeugResponse
from flask import Flask, after_this_request
from flask.signals import (appcontext_popped, appcontext_pushed, request_finished, request_started,
                           request_tearing_down)

from bench.patients import patient_view_request
from service import AvhFlask, AvhRequest, AvhResponse, create_app
from service.config import Settings

UUIDS = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class FlaskDispatch(AvhFlask):
    """The same app with Flask's own dispatch, request and response, to compare with."""
    request_class = Flask.request_class
    response_class = Flask.response_class
    app_context = Flask.app_context
    dispatch_request = Flask.dispatch_request
    full_dispatch_request = Flask.full_dispatch_request
    finalize_request = Flask.finalize_request
    preprocess_request = Flask.preprocess_request
    process_response = Flask.process_response
    do_teardown_request = Flask.do_teardown_request
    do_teardown_appcontext = Flask.do_teardown_appcontext


def _app(tmp_path, name: str, flask_own: bool):
    # The body's fhirServer allowed, so that the hook calls below reach the route (the guard refuses it otherwise).
    app = create_app(Settings.from_env({"AVH_CDS_AUTH": "off", "AVH_CDS_FHIR_SERVERS": BODY["fhirServer"]},
                                       sqlite_path=tmp_path / f"{name}.sqlite3"))
    if flask_own:
        app.__class__ = FlaskDispatch
    return app


BODY = patient_view_request(10)
HOOK = "/cds-services/avh-patient-view"
REQUESTS = [      # (method, path, request, the status Flask answers)
    ("POST", HOOK, {"json": BODY}, 200),                                                       # cards
    ("POST", HOOK, {"json": {**BODY, "fhirServer": "https://elsewhere.example/fhir"}}, 403),     # refused
    ("POST", HOOK, {"data": b"{", "content_type": "application/json"}, 400),
    ("POST", HOOK, {"data": b"x", "content_type": "text/plain"}, 415),
    ("POST", HOOK, {"json": {**BODY, "context": {"userId": 5}}}, 400),                         # schema
    ("POST", "/cds-services/nobody", {"json": BODY}, 404),                                      # 404 of the route
    ("GET", HOOK, {}, 405),
    ("GET", "/nowhere", {}, 404),                                                               # 404 of routing
    ("GET", "/cds-services", {}, 200),
    ("OPTIONS", HOOK, {"headers": {"Origin": "https://ehr.example", "Access-Control-Request-Method": "POST"}}, 200),
    ("POST", HOOK, {"json": BODY, "headers": {"Origin": "https://ehr.example"}}, 200),
    ("POST", HOOK + "/feedback", {"json": {"feedback": []}}, 400),
    ("GET", "/healthz", {}, 200),
    ("GET", "/metrics", {}, 200),
    ("GET", "/openapi.json", {}, 200),
    ("OPTIONS", "/cds-services", {}, 200),                                                   # Flask's automatic OPTIONS
    ("POST", HOOK, {"data": b"{" * (17 << 20), "content_type": "application/json"}, 413),    # over the body limit
]


def _answers(app) -> list:
    client = app.test_client()
    answers = []
    for method, path, kwargs, _ in REQUESTS * 2:       # the second time from the hooks composed by the first
        response = client.open(path, method=method, **kwargs)
        body, headers = UUIDS.sub(b"<uuid>", response.get_data()), sorted(response.headers.items())
        if path == "/metrics":      # the process's counts (both apps' calls) and timings: test_health_metrics's
            body, headers = b"", [h for h in headers if h[0] != "Content-Length"]
        answers.append((method, path, response.status, headers, body))
    return answers


def test_every_answer_is_the_one_flask_dispatch_gives(tmp_path):
    thin, flask_own = _app(tmp_path, "thin", False), _app(tmp_path, "flask", True)
    got, expected = _answers(thin), _answers(flask_own)
    assert [int(a[2][:3]) for a in expected] == [status for *_, status in REQUESTS * 2]
    assert got == expected


def test_hooks_run_in_flask_order_with_signals_and_teardown(tmp_path):
    """A function of each kind registered on the app and on a blueprint runs where Flask runs it; a listener to
    each signal hears it; an after_this_request function runs first."""
    for flask_own in (False, True):
        app = _app(tmp_path, f"order{flask_own}", flask_own)
        seen = []
        app.before_request(lambda: seen.append("before app") and None)
        app.after_request(lambda r: seen.append("after app") or r)
        app.after_request(lambda r: seen.append("after app, registered last") or r)
        app.teardown_request(lambda exc: seen.append(f"teardown app {type(exc).__name__}"))
        app.teardown_appcontext(lambda exc: seen.append("teardown appcontext"))
        app.url_value_preprocessor(lambda endpoint, values: seen.append(f"url {endpoint}"))
        app.before_request_funcs.setdefault("cds", []).append(lambda: seen.append("before cds") and None)
        app.after_request_funcs.setdefault("cds", []).append(lambda r: seen.append("after cds") or r)
        app.teardown_request_funcs.setdefault("cds", []).append(lambda exc: seen.append("teardown cds"))

        @app.get("/boom")
        def boom():
            after_this_request(lambda r: seen.append("after this request") or r)
            raise KeyError("boom")

        listeners = {signal.name: (lambda sender, signal=signal, **kw: seen.append(f"signal {signal.name}"))
                     for signal in (request_started, request_finished, request_tearing_down, appcontext_pushed,
                                    appcontext_popped)}
        for signal in (request_started, request_finished, request_tearing_down, appcontext_pushed, appcontext_popped):
            signal.connect(listeners[signal.name], app)
        try:
            client = app.test_client()
            for _ in range(2):
                seen.clear()
                assert client.get("/cds-services").status_code == 200
                cds = list(seen)
                seen.clear()
                assert client.get("/boom").status_code == 500
                boom_seen = list(seen)
        finally:
            for signal in (request_started, request_finished, request_tearing_down, appcontext_pushed,
                           appcontext_popped):
                signal.disconnect(listeners[signal.name], app)
        if flask_own:
            assert (cds, boom_seen) == thin_seen
        else:
            thin_seen = (cds, boom_seen)
            assert cds == ["signal appcontext-pushed", "signal request-started", "url cds.discovery", "before app",
                           "before cds", "after cds", "after app, registered last", "after app",
                           "signal request-finished", "teardown cds",
                           "teardown app NoneType", "signal request-tearing-down", "teardown appcontext",
                           "signal appcontext-popped"]
            assert "after this request" in boom_seen and "teardown app NoneType" in boom_seen


def test_hooks_are_composed_once_the_app_has_answered(app):
    """Flask refuses new hook functions once it has handled a request; until then each request composes them anew."""
    with app.test_request_context("/cds-services"):
        app.preprocess_request()
    assert app._hooks == {}
    app.test_client().get("/cds-services")
    assert set(app._hooks) == {"cds"}
    with pytest.raises(AssertionError, match="already handled its first request"):
        app.before_request(lambda: None)


def _wsgi(response_class, status, method, extra, body, drop_length):
    environ = {"REQUEST_METHOD": method, "wsgi.url_scheme": "https", "HTTP_HOST": "ehr.example:8443",
               "SERVER_NAME": "ehr.example", "SERVER_PORT": "8443", "SCRIPT_NAME": "/root", "PATH_INFO": "/a/b",
               "QUERY_STRING": "q=1"}
    response = response_class(body() if callable(body) else body, status=status, mimetype="application/json")
    for name, value in extra:
        response.headers.add(name, value)
    if drop_length:
        del response.headers["Content-Length"]
    app_iter, status_line, headers = response.get_wsgi_response(environ)
    return status_line, headers, b"".join(app_iter)


@pytest.mark.parametrize("status", [100, 200, 201, 204, 304, 400, 404, 500])
@pytest.mark.parametrize("method", ["GET", "HEAD", "POST"])
@pytest.mark.parametrize("extra", [(), (("Location", "/elsewhere/ü"),), (("content-location", "x y"),),
                                   (("X-Two", "1"), ("x-two", "2"), ("CONTENT-LENGTH", "3"))])
@pytest.mark.parametrize("body", [b'{"cards":[]}', lambda: iter([b"a", b"bc"])], ids=["bytes", "stream"])
@pytest.mark.parametrize("drop_length", [False, True])
def test_the_response_hands_the_server_what_werkzeug_hands_it(status, method, extra, body, drop_length):
    """AvhResponse skips werkzeug's copy of the headers only where the copy would be the same."""
    assert _wsgi(AvhResponse, status, method, extra, body, drop_length) == _wsgi(
        WerkzeugResponse, status, method, extra, body, drop_length)


@pytest.mark.parametrize("body", [b'{"cards":[]}', '{"cards":["é"]}', [b"a", b"bc"], "generator"])
@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("passthrough", [False, True])
def test_the_answers_iterable_gives_and_closes_as_werkzeugs(body, method, passthrough):
    """A body set whole is handed over as a WholeBody (iterated in C), not werkzeug's ClosingIterator: the same
    bytes, and closing it runs the response's close functions (aftersend's steps) and closes the body's own
    iterable, as werkzeug's does."""
    def seen(response_class):
        events = []

        def chunks():
            try:
                yield b"x"
            finally:
                events.append("body closed")
        response = response_class(chunks() if body == "generator" else body, mimetype="application/json")
        response.headers["Content-Length"] = "1"         # as a hook answer has it
        response.direct_passthrough = passthrough
        response.call_on_close(lambda: events.append("on close"))
        app_iter, status_line, headers = response.get_wsgi_response({"REQUEST_METHOD": method})
        data = b"".join(app_iter)
        getattr(app_iter, "close", lambda: None)()          # a passed-through list has none: a server skips it
        return status_line, headers, data, events
    assert seen(AvhResponse) == seen(WerkzeugResponse)


def test_the_body_limit_is_flasks(app):
    """AvhRequest reads MAX_CONTENT_LENGTH without Flask's proxy: the app's, a request's own, werkzeug's outside an
    app."""
    environ = EnvironBuilder(path=HOOK, method="POST", data=b"{}").get_environ()
    request = AvhRequest(environ)
    assert request.max_content_length is None                     # no app: werkzeug's
    with app.app_context():
        assert request.max_content_length == app.config["MAX_CONTENT_LENGTH"] > 0
        app.config["MAX_CONTENT_LENGTH"] = 5
        assert request.max_content_length == 5
        request.max_content_length = 7
        assert request.max_content_length == 7


def test_a_subclass_of_the_answer_is_made_by_its_own_constructor():
    """review20: a deployer's AvhResponse subclass keeps its own __init__ and content-length setting."""
    class Framed(AvhResponse):
        automatically_set_content_length = False

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.headers["X-Frame-Options"] = "DENY"

    answer = Framed.of_json(b"{}")
    assert type(answer) is Framed
    assert answer.headers.to_wsgi_list() == [("Content-Type", "application/json"), ("X-Frame-Options", "DENY")]


@given(st.binary(max_size=40) | st.sampled_from([b"", b"{}", b'{"cards":[]}' * 1000]))
def test_the_json_answer_is_the_response_werkzeug_makes(body):
    """AvhResponse.of_json: what AvhResponse(body, content_type="application/json") makes, attribute for attribute."""
    theirs, ours = AvhResponse(body, content_type="application/json"), AvhResponse.of_json(body)
    assert list(vars(ours)) == list(vars(theirs))
    for name, value in vars(theirs).items():
        if name != "headers":
            assert vars(ours)[name] == value, name
    assert type(ours.headers) is type(theirs.headers)
    assert vars(ours.headers) == vars(theirs.headers)
    assert ours.headers.to_wsgi_list() == theirs.headers.to_wsgi_list()
    assert (ours.status, ours.status_code, ours.get_data(), ours.mimetype) == (
        theirs.status, theirs.status_code, theirs.get_data(), theirs.mimetype)
