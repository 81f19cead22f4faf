"""The CDS Hooks routes. Thin: parse, check, hand over to prefetch and the engine, answer."""
from __future__ import annotations

import datetime as dt
import logging
import time

import jsonschema
import orjson
from flask import Blueprint, current_app, g, jsonify, request

from .errors import ApiError
from .prefetch import PrefetchFailed

log = logging.getLogger(__name__)
bp = Blueprint("cds", __name__)


def _json_body() -> dict:
    if not request.data:
        raise ApiError(400, "invalid_json", "the request body is empty; a JSON object is required")
    try:
        body = orjson.loads(request.data)
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, "invalid_json", f"the request body is not valid JSON ({type(exc).__name__})") from exc
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_request", "the request body must be a JSON object")
    return body


def _validate(body: dict, schema: dict, what: str) -> None:
    error = jsonschema.exceptions.best_match(current_app.extensions["avh"].validators[schema].iter_errors(body))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        raise ApiError(400, "invalid_request", f"{what}: {where}: {error.message[:300]}")


def _service_or_404(service_id: str):
    service = current_app.extensions["avh"].registry.get(service_id)
    if service is None:
        raise ApiError(404, "unknown_service", f"no CDS service with id {service_id!r}; see GET /cds-services")
    return service


@bp.get("/cds-services")
def discovery():
    return jsonify({"services": [s.discovery() for s in current_app.extensions["avh"].registry]})


@bp.post("/cds-services/<service_id>")
def invoke(service_id: str):
    avh = current_app.extensions["avh"]
    service = _service_or_404(service_id)
    body = _json_body()
    _validate(body, "request", "not a CDS Hooks 2.0 request")
    if body["hook"] != service.hook:
        raise ApiError(400, "wrong_hook", f"service {service.id} answers the {service.hook} hook, not {body['hook']!r}")
    _validate(body["context"], service.hook, f"context of {service.hook}")
    g.hook_instance = body["hookInstance"]
    started = time.perf_counter()
    try:
        prefetched = avh.prefetch.resolve(service.prefetch, body)
    except PrefetchFailed as exc:
        return jsonify({"resourceType": "OperationOutcome", "issue": [{
            "severity": "error", "code": "not-found" if "no fhirServer" in exc.reason else "exception",
            "diagnostics": f"prefetch key '{exc.key}' could not be had: {exc.reason}"}]}), 412
    now = dt.datetime.now(dt.timezone.utc)
    cards = service.evaluate(avh.engine, prefetched, body, now, avh.source_url())
    log.info("service=%s hookInstance=%s resources=%d cards=%s ms=%.1f", service.id, body["hookInstance"],
             len(prefetched.resources), ",".join(c["source"]["topic"]["code"] for c in cards),
             (time.perf_counter() - started) * 1000)
    return jsonify({"cards": cards})


@bp.post("/cds-services/<service_id>/feedback")
def feedback(service_id: str):
    _service_or_404(service_id)
    body = _json_body()
    _validate(body, "feedback", "not CDS Hooks 2.0 feedback")
    return jsonify({"received": len(body["feedback"])})
