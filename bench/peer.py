"""A peer-style CDS service for the benchmark: the request read into a shallow pydantic model, a walk over
the prefetch entries as plain dicts, one rule, one card. Not part of the production app.

It is modelled on how HealthChain (0.16) serves a hook without its FHIR adapter: the body decoded by the
standard library (as Starlette's `request.json()` does), validated into a request model whose `prefetch`
is `Dict[str, Any]` (nothing below it is checked), a rule over the decoded dicts, and the answer built as
pydantic models and serialised by pydantic. It runs in Flask under the same gunicorn settings as avh-cds
instead of FastAPI under uvicorn, so the comparison with the service is repeatable without installing the
peer; leaving out FastAPI's and HealthChain's own layers makes it a floor of the peer's cost, not the peer.
"""
from __future__ import annotations

import json
import uuid
from typing import Any, Optional

from flask import Flask, Response, request
from pydantic import BaseModel

from .peer_rule import has_vertebral_hemangioma


class CDSRequest(BaseModel):
    hook: str
    hookInstance: str
    context: dict[str, Any]
    fhirServer: Optional[str] = None
    prefetch: Optional[dict[str, Any]] = None


class Source(BaseModel):
    label: str


class Card(BaseModel):
    uuid: str
    summary: str
    indicator: str
    source: Source


class CDSResponse(BaseModel):
    cards: list[Card]


def create_app() -> Flask:
    app = Flask(__name__)

    @app.post("/cds-services/<service_id>")
    def invoke(service_id: str):
        call = CDSRequest.model_validate(json.loads(request.get_data()))
        cards = []
        if has_vertebral_hemangioma(call.prefetch or {}, call.context.get("patientId")):
            cards.append(Card(uuid=str(uuid.uuid4()), summary="Vertebral hemangioma: check for cord compression",
                              indicator="warning", source=Source(label="peer-style benchmark rule")))
        return Response(CDSResponse(cards=cards).model_dump_json(), mimetype="application/json")

    return app
