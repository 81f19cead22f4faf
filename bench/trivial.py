"""The baseline for the HTTP benchmark: a Flask app that only decodes the request body and returns no cards.

It runs under the same gunicorn settings as the service, so the ratio of the two throughputs is what
avh-cds itself costs on top of HTTP, Flask and reading the JSON. Not part of the production app.
"""
from __future__ import annotations

import orjson
from flask import Flask, Response, request

EMPTY = orjson.dumps({"cards": []})


def create_app() -> Flask:
    app = Flask(__name__)

    @app.post("/cds-services/<service_id>")
    def invoke(service_id: str):
        body = orjson.loads(request.get_data())
        return Response(EMPTY if isinstance(body, dict) else b"{}", mimetype="application/json")

    return app
