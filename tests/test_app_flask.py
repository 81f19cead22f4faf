"""The app's Flask subclass (service/__init__.py, AvhFlask): ensure_sync answers as Flask's, remembered per function."""
import pytest
from flask import Flask

from service import SYNC_FUNCTIONS, AvhFlask


def test_a_synchronous_function_is_itself_and_remembered(app):
    def view():
        return "ok"
    assert isinstance(app, AvhFlask)
    assert app.ensure_sync(view) is view is Flask.ensure_sync(app, view)
    assert app._sync_functions[view] is view


def test_a_coroutine_function_is_still_handed_to_flask(app):
    """Flask wraps an async view (or says it needs its async extra): it is never run as if it were synchronous."""
    async def view():
        return "ok"
    try:
        wrapped = Flask.ensure_sync(app, view)
    except RuntimeError as flask_says:             # Flask without asgiref
        with pytest.raises(RuntimeError, match=str(flask_says)[:40]):
            app.ensure_sync(view)
    else:
        assert app.ensure_sync(view) is not view and wrapped is not view


def test_what_is_remembered_is_bounded_and_unhashable_callables_are_asked_each_time(app):
    functions = [lambda: None for _ in range(SYNC_FUNCTIONS + 50)]     # each a function of its own
    assert [app.ensure_sync(f) for f in functions] == functions
    assert len(app._sync_functions) == SYNC_FUNCTIONS

    class Unhashable:
        __hash__ = None

        def __call__(self):
            return "ok"
    view = Unhashable()
    assert app.ensure_sync(view) is view


def test_a_hook_call_answers_through_it(client):
    response = client.post("/cds-services/avh-patient-view", json={"hook": "patient-view"})
    assert response.status_code == 400 and response.json["error"] == "invalid_request"


def test_a_request_s_uploaded_files_are_still_closed_with_it(app):
    """AvhRequest.close asks werkzeug's close only when a form was parsed: its files are closed as before."""
    import io
    data = {"upload": (io.BytesIO(b"x" * 100), "a.txt")}
    with app.test_request_context("/x", method="POST", data=data, content_type="multipart/form-data") as ctx:
        upload = ctx.request.files["upload"]
        assert not upload.stream.closed
        ctx.request.close()
        assert upload.stream.closed


def test_a_request_without_a_parsed_form_parses_none_when_closed(app):
    with app.test_request_context("/x", method="POST", data=b"{}", content_type="application/json") as ctx:
        ctx.request.close()
        assert "files" not in ctx.request.__dict__ and "form" not in ctx.request.__dict__


def test_a_request_s_blueprint_is_flask_s_and_follows_its_rule(app):
    from flask import Request
    with app.test_request_context("/cds-services/avh-patient-view", method="POST") as ctx:
        request = ctx.request
        assert request.blueprint == "cds" == Request.blueprint.fget(request) and request.blueprints == ["cds"]
        request.url_rule = app.url_map._rules_by_endpoint["metrics.metrics"][0]
        assert request.blueprint == "metrics"
        request.url_rule = None
        assert request.blueprint is None and request.blueprints == []


def test_flask_s_private_context_variables_read_what_its_proxies_read(app):
    """Review of rest4: the service reads Flask's private `_cv_request` and `_cv_app` (flask.globals) instead of the
    `request`, `g` and `current_app` proxies, and pyproject allows any Flask from 3.1 on: a Flask that keeps the names
    but changes what they hold fails here, by name, not as a wrong g or request somewhere in a hook call."""
    from flask import current_app, g, request
    from flask.globals import _cv_app, _cv_request
    with app.test_request_context("/cds-services/avh-patient-view", method="POST"):
        with app.app_context():         # an app context pushed inside the request's: the innermost is read
            assert _cv_app.get().g is g._get_current_object()
            assert _cv_app.get().app is current_app._get_current_object() is app
            assert _cv_request.get().request is request._get_current_object()
            assert isinstance(_cv_request.get()._after_request_functions, list)
