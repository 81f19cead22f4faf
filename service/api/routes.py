"""The CDS Hooks routes. Thin: parse, check, hand over to prefetch and the engine, answer."""
from __future__ import annotations

import datetime as dt

import orjson

from flask import Blueprint, current_app, jsonify
from flask.globals import _cv_app, _cv_request

from service.ops import metrics
from service.api.aftersend import after_sent
from service.clinical.orders import selections_not_drafted
from service.errors import ApiError
from service.jsonbody import request_body, request_json
from service.lazyjson import NumberBeyondDouble
from service.feedback.entries import parse_feedback
from service.fhir.prefetch import PrefetchFailed

bp = Blueprint("cds", __name__)


def _json_body() -> dict:
    """The body decoded (by the guard already, for a CDS call); the body is read again only to say why it is not JSON."""
    try:
        body = request_json()
    except (ValueError, RecursionError) as exc:
        if not request_body():
            raise ApiError(400, "invalid_json", "the request body is empty; a JSON object is required") from None
        raise ApiError(400, "invalid_json", f"the request body is not valid JSON ({_why_not_json(exc)})") from exc
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_request", "the request body must be a JSON object")
    return body


def _why_not_json(exc: Exception) -> str:
    """What orjson found and where (its messages never quote the body: 'number is infinity when parsed as double:
    line 1 column 7 (char 6)'), so that one bad number or string in megabytes of prefetch can be found."""
    if isinstance(exc, orjson.JSONDecodeError):
        where = exc.doc[exc.pos:exc.pos + 8] if isinstance(exc.doc, str) and isinstance(exc.pos, int) else ""
        named = "; NaN and Infinity are not JSON numbers" if where.startswith(("NaN", "Infinity")) else ""
        return str(exc)[:200] + named
    if isinstance(exc, NumberBeyondDouble):
        return str(exc)
    return type(exc).__name__


def _validate(validator, body: dict, what: str) -> None:
    refusal = validator.refusal(body)
    if refusal is not None:
        raise ApiError(400, "invalid_request", f"{what}: {refusal}")


def _service_or_404(avh, service_id: str):
    service = avh.registry.get(service_id)
    if service is None:
        raise ApiError(404, "unknown_service", f"no CDS service with id {service_id[:100]!r}; see GET /cds-services")
    return service


@bp.get("/cds-services")
def discovery():
    return jsonify({"services": [s.discovery() for s in current_app.extensions["avh"].registry]})


def hook_call(avh, service_id: str):
    """The service called and the request body, checked as a CDS Hooks 2.0 call of that service. `avh`: the app's
    (current_app.extensions["avh"], looked up once a call: each lookup through Flask's proxy costs ~1-2 µs)."""
    service = _service_or_404(avh, service_id)
    body = _json_body()
    _validate(avh.validators["request"], body, "not a CDS Hooks 2.0 request")
    if body["hook"] != service.hook:
        raise ApiError(400, "wrong_hook", f"service {service.id} answers the {service.hook} hook, not {body['hook'][:100]!r}")
    context = body["context"]
    _validate(avh.validators[service.hook], context, f"context of {service.hook}")
    if service.hook == "order-select":      # silence about an order selected but not sent is not an answer
        for position, selection in selections_not_drafted(context["selections"], context["draftOrders"])[:1]:
            raise ApiError(400, "invalid_request", f"context of order-select: selections/{position}: "
                           f"{selection[:100]!r} names no order in draftOrders")
    return service, body


def precondition_failed(exc: PrefetchFailed):
    """412: the data that decides whether the patient is in scope cannot be had; an OperationOutcome says which."""
    return jsonify({"resourceType": "OperationOutcome", "issue": [{
        "severity": "error", "code": problem.code,
        "diagnostics": f"prefetch key '{key}' could not be had: {problem.reason}"}
        for key, problem in exc.failures]}), 412


@bp.post("/cds-services/<service_id>")
def invoke(service_id: str):
    # The app and g from Flask's context variable (what its proxies read, each through a Python call); g's attributes
    # set in its dict, as g's __setattr__ (a Python call each) sets them.
    app_context = _cv_app.get()
    app, call = app_context.app, vars(app_context.g)
    avh = app.extensions["avh"]
    service, body = hook_call(avh, service_id)
    call["hook_instance"] = body["hookInstance"]
    try:
        prefetched = avh.prefetch.resolve(service.prefetch, body)
    except PrefetchFailed as exc:
        return precondition_failed(exc)
    now = dt.datetime.now(dt.timezone.utc)
    answer = service.evaluate(avh.engine, prefetched, body, now, avh.source_url(_cv_request.get().request))
    topics = answer.topics
    call["resource_count"], call["card_topics"] = prefetched.read, topics
    # Made at once by the app's response class when it can (service.AvhResponse.of_json); by another (a test's Flask
    # one) with the content type given whole: a mimetype is asked whether it takes a charset (application/json does not).
    of_json = getattr(app.response_class, "of_json", None)
    response = of_json(answer.json) if of_json is not None \
        else app.response_class(answer.json, content_type="application/json")
    after_sent(response, metrics.observe_cards, service.id, topics)
    if avh.store.flush_seconds <= 0:        # issued cards written before the answer: feedback may follow at once
        record_issued(avh, service.id, body["hookInstance"], answer, now)
    else:
        after_sent(response, record_issued, avh, service.id, body["hookInstance"], answer, now)
    return response


def record_issued(avh, service_id: str, hook_instance: str, answer, now: dt.datetime) -> None:
    """The answer's cards and suggestions queued in the issued-card store (the feedback join). Once the answer has
    been sent (service/api/aftersend.py), unless AVH_CDS_ISSUED_FLUSH_SECONDS is 0: then written before it."""
    ids = avh.engine.library.suggestion_ids
    avh.store.record_issued(service_id, hook_instance, answer.issued, now,
                            [(s, c, ids.get((topic, label), label[:100])) for s, c, topic, label in answer.suggested])


@bp.post("/cds-services/<service_id>/feedback")
def feedback(service_id: str):
    avh = current_app.extensions["avh"]
    service = _service_or_404(avh, service_id)
    body = _json_body()
    _validate(avh.validators["feedback"], body, "not CDS Hooks 2.0 feedback")
    entries = parse_feedback(service.id, body["feedback"])
    result = avh.store.record_feedback(service.id, entries, dt.datetime.now(dt.timezone.utc))
    metrics.observe_feedback(result.outcomes, avh.engine.library.topics)
    return jsonify(result.as_json())
