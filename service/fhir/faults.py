"""Fault injection for tests and benchmarks: a WSGI wrapper that makes a FHIR server misbehave.

Never installed by create_app (it is not on the production path); a test or benchmark wraps an app
it built itself:

    injector = FaultInjector(app.wsgi_app)
    app.wsgi_app = injector
    injector.faults = [Fault(r"^/fhir/Procedure", delay=0.3), Fault(r"^/fhir/Observation", status=500)]

Each request takes the first Fault whose `path` regex is found in "PATH_INFO?QUERY_STRING".
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

HTML_ERROR = b"<html><head><title>502 Bad Gateway</title></head><body><h1>Bad Gateway</h1></body></html>"
STATUS_TEXT = {200: "OK", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 429: "Too Many Requests",
               500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}


@dataclass(frozen=True)
class Fault:
    path: str                          # regex searched in "PATH_INFO?QUERY_STRING"
    delay: float = 0.0                 # seconds to wait before answering
    status: int | None = None          # answer this status instead, with an OperationOutcome body
    html: bool = False                 # ... or, with `status`, an HTML error page (as a proxy would)
    body: bytes | None = None          # answer 200 with this body (e.g. JSON that is not FHIR)
    truncate: int | None = None        # send only the first N bytes of the real body (a consistent length)
    hang_up: bool = False              # announce the full length, send half of it, close the connection
    next_loop: bool = False            # a searchset's `next` link points back at the page itself
    other_patient: str | None = None   # every Patient reference (and a Patient's id) becomes this id

    def applies(self, environ: dict) -> bool:
        target = environ.get("PATH_INFO", "") + "?" + environ.get("QUERY_STRING", "")
        return re.search(self.path, target) is not None


class FaultInjector:
    def __init__(self, app: Callable, faults: Iterable[Fault] = ()):
        self.app = app
        self.faults = list(faults)

    def __call__(self, environ: dict, start_response: Callable):
        fault = next((f for f in self.faults if f.applies(environ)), None)
        if fault is None:
            return self.app(environ, start_response)
        if fault.delay:
            time.sleep(fault.delay)
        if fault.status is not None:
            return self._replace(start_response, fault.status, *self._error_body(fault))
        if fault.body is not None:
            return self._replace(start_response, 200, fault.body, "application/fhir+json")
        captured: dict[str, Any] = {}

        def capture(status, headers, exc_info=None):
            captured["status"], captured["headers"] = status, headers
            return lambda data: None

        chunks = self.app(environ, capture)
        try:
            body = b"".join(chunks)
        finally:
            getattr(chunks, "close", lambda: None)()
        body = self._rewrite(fault, body, environ)
        headers = [(k, v) for k, v in captured["headers"] if k.lower() != "content-length"]
        if fault.hang_up:
            start_response(captured["status"], headers + [("Content-Length", str(len(body))),
                                                          ("Connection", "close")])
            return [body[: len(body) // 2]]
        if fault.truncate is not None:
            body = body[: fault.truncate]
        start_response(captured["status"], headers + [("Content-Length", str(len(body)))])
        return [body]

    @staticmethod
    def _error_body(fault: Fault) -> tuple[bytes, str]:
        if fault.html:
            return HTML_ERROR, "text/html; charset=utf-8"
        return json.dumps({"resourceType": "OperationOutcome", "issue": [
            {"severity": "error", "code": "exception", "diagnostics": "injected fault"}]}).encode(), \
            "application/fhir+json"

    @staticmethod
    def _replace(start_response: Callable, status: int, body: bytes, content_type: str):
        start_response(f"{status} {STATUS_TEXT.get(status, 'Injected')}",
                       [("Content-Type", content_type), ("Content-Length", str(len(body)))])
        return [body]

    @staticmethod
    def _rewrite(fault: Fault, body: bytes, environ: dict) -> bytes:
        if not (fault.next_loop or fault.other_patient):
            return body
        data = json.loads(body)
        if fault.next_loop and data.get("resourceType") == "Bundle":
            here = f"{environ['wsgi.url_scheme']}://{environ['HTTP_HOST']}{environ.get('SCRIPT_NAME', '')}" \
                   f"{environ['PATH_INFO']}?{environ.get('QUERY_STRING', '')}"
            data["link"] = [*(l for l in data.get("link", []) if l.get("relation") != "next"),
                            {"relation": "next", "url": here}]
        if fault.other_patient:
            data = _repoint(data, fault.other_patient)
        return json.dumps(data).encode()


def _repoint(value: Any, patient_id: str) -> Any:
    if isinstance(value, dict):
        out = {k: _repoint(v, patient_id) for k, v in value.items()}
        if isinstance(out.get("reference"), str) and out["reference"].startswith("Patient/"):
            out["reference"] = f"Patient/{patient_id}"
        if out.get("resourceType") == "Patient":
            out["id"] = patient_id
        return out
    if isinstance(value, list):
        return [_repoint(v, patient_id) for v in value]
    return value
