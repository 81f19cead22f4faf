"""`avh-cds serve` never starts werkzeug's debugger or reloader (docs/deployment.md)."""
import logging

import werkzeug.serving

from service import cli


def test_serve_ignores_flask_debug(monkeypatch, caplog):
    """With FLASK_DEBUG=1 Flask's app.run turned on werkzeug's interactive debugger (a traceback page with the
    request's headers, a console open to a caller sending Host: 127.0.0.1) and its reloader. Now both stay off, and
    one warning line says FLASK_DEBUG is ignored."""
    started = {}

    def run_simple(host, port, app, **options):
        started.update(options, host=host, port=port, debug=app.debug)

    monkeypatch.setattr(werkzeug.serving, "run_simple", run_simple)
    monkeypatch.delenv("FLASK_RUN_FROM_CLI", raising=False)
    monkeypatch.setenv("FLASK_DEBUG", "1")
    with caplog.at_level(logging.WARNING):
        assert cli.main(["serve", "--host", "127.0.0.1", "--port", "8123"]) == 0
    assert started["port"] == 8123
    assert started["use_debugger"] is False and started["use_reloader"] is False and started["debug"] is False
    warned = [r.getMessage() for r in caplog.records if "FLASK_DEBUG" in r.getMessage()]
    assert warned == ["avh-cds serve: FLASK_DEBUG is ignored: the werkzeug debugger and reloader stay off"]


def test_serve_says_nothing_of_flask_debug_when_it_is_off(monkeypatch, caplog):
    monkeypatch.setattr(werkzeug.serving, "run_simple", lambda host, port, app, **options: None)
    monkeypatch.delenv("FLASK_RUN_FROM_CLI", raising=False)
    monkeypatch.delenv("FLASK_DEBUG", raising=False)
    with caplog.at_level(logging.WARNING):
        assert cli.main(["serve", "--port", "8123"]) == 0
    assert not [r for r in caplog.records if "FLASK_DEBUG" in r.getMessage()]
