"""Replay fixture bundles as patient-view hook calls and compare the cards with what each expects.

The prefetch is filled the way an EHR fills it: the service's own discovery templates are run as
FHIR searches over the fixture's resources. The service is reached in-process (Flask's test client,
no network) or over HTTP (a running `avh-cds serve`).
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Mapping, Protocol

import requests

from service.fhir.search import SearchError, answer_query
from service.fhir.fixtures import Fixture
from service.fhir.prefetch import fill_template

SERVICE_ID = "avh-patient-view"
REPLAY_USER = "Practitioner/avh-replay"


class ReplayError(RuntimeError):
    """The service could not be asked, or did not answer 200 with JSON."""


class Transport(Protocol):
    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, Any]: ...


class InProcess:
    """The service built by create_app (the caller builds it: fhir sits below the app), called through Flask's
    test client. Each answer is read whole and closed, as a WSGI server does after its last byte (PEP 3333): the
    call's bookkeeping (its access line, the histogram, its issued cards) runs then (service/api/aftersend.py), and
    Flask's client leaves an answer open unless asked (`buffered=True`)."""

    def __init__(self, app):
        self.client = app.test_client()

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, Any]:
        response = self.client.open(path, method=method, json=body, buffered=True)
        return response.status_code, response.get_json(silent=True)


class Remote:
    """A running service at a base URL (the part before /cds-services)."""

    def __init__(self, base_url: str, timeout: float = 10.0):
        self.base = base_url.rstrip("/").removesuffix("/cds-services")
        self.session = requests.Session()
        self.timeout = timeout

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, Any]:
        try:
            response = self.session.request(method, self.base + path, json=body, timeout=self.timeout)
        except requests.RequestException as exc:
            raise ReplayError(f"{method} {self.base + path} failed ({type(exc).__name__})") from exc
        try:
            return response.status_code, response.json()
        except ValueError:
            return response.status_code, None


def call_ok(transport: Transport, method: str, path: str, body: dict | None = None) -> dict:
    status, payload = transport.call(method, path, body)
    if status != 200 or not isinstance(payload, dict):
        raise ReplayError(f"{method} {path} answered {status}: {_problem(payload)}")
    return payload


def _problem(payload: Any) -> str:
    """What an error body says: our {error, message}, or an OperationOutcome's diagnostics (412)."""
    if not isinstance(payload, dict):
        return "no JSON body"
    issues = payload.get("issue") if isinstance(payload.get("issue"), list) else []
    said = [payload.get("message")] + [i.get("diagnostics") for i in issues if isinstance(i, dict)]
    return "; ".join(str(s) for s in said if s) or str(payload.get("error") or "no details")


def prefetch_templates(transport: Transport, service_id: str = SERVICE_ID) -> dict[str, str]:
    """The prefetch templates the service advertises in discovery."""
    services = call_ok(transport, "GET", "/cds-services").get("services", [])
    service = next((s for s in services if s.get("id") == service_id), None)
    if service is None:
        raise ReplayError(f"discovery does not list {service_id}")
    return service.get("prefetch", {})


def fill_prefetch(templates: Mapping[str, str], resources: list[dict], context: Mapping[str, Any]) -> dict:
    """Each key as a FHIR server holding the resources answers it: a read gives the resource (or null),
    a search a searchset Bundle. A template outside the search subset raises SearchError."""
    return {key: answer_query(fill_template(template, context), resources) for key, template in templates.items()}


def hook_request(fixture: Fixture, templates: Mapping[str, str], fhir_server: str | None = None) -> dict:
    """A patient-view request; with fhir_server, no prefetch at all (the service fetches what it needs)."""
    context = {"patientId": fixture.patient_id, "userId": REPLAY_USER}
    request = {"hookInstance": str(uuid.uuid4()), "hook": "patient-view", "context": context}
    if fhir_server:
        request["fhirServer"] = fhir_server
    else:
        request["prefetch"] = fill_prefetch(templates, fixture.resources(), context)
    return request


@dataclass(frozen=True)
class Outcome:
    fixture: Fixture
    request: dict
    response: dict

    @property
    def cards(self) -> list[dict]:
        return self.response.get("cards", [])

    @property
    def topics(self) -> frozenset[str]:
        return frozenset(c.get("source", {}).get("topic", {}).get("code", "?") for c in self.cards)

    @property
    def missing(self) -> frozenset[str]:
        return self.fixture.expected_topics - self.topics

    @property
    def unexpected(self) -> frozenset[str]:
        return self.topics - self.fixture.expected_topics

    @property
    def matches(self) -> bool:
        return not self.missing and not self.unexpected


def replay(fixtures: list[Fixture], transport: Transport, service_id: str = SERVICE_ID,
           fhir_server: str | None = None) -> list[Outcome]:
    templates = prefetch_templates(transport, service_id)
    outcomes = []
    for fixture in fixtures:
        try:
            request = hook_request(fixture, templates, fhir_server)
        except SearchError as exc:
            raise ReplayError(f"a discovery prefetch template is outside the search subset: {exc}") from exc
        response = call_ok(transport, "POST", f"/cds-services/{service_id}", request)
        outcomes.append(Outcome(fixture, request, response))
    return outcomes


def _names(topics: frozenset[str], empty: str) -> str:
    return ", ".join(sorted(topics)) or empty


def format_outcomes(outcomes: list[Outcome]) -> str:
    """A readable table: one block per patient, one row per card, then the verdict."""
    rows = [("PATIENT", "INDICATOR", "TOPIC", "SUMMARY")]
    verdicts = []
    for o in outcomes:
        patient = f"{o.fixture.name} (Patient/{o.fixture.patient_id})"
        if not o.cards:
            rows.append((patient, "-", "-", "no cards"))
        for i, card in enumerate(o.cards):
            topic = card.get("source", {}).get("topic", {}).get("code", "?")
            rows.append((patient if i == 0 else "", card.get("indicator", "?"), topic, card.get("summary", "")))
        if o.matches:
            verdict = f"ok: as expected ({_names(o.fixture.expected_topics, 'silent')})"
        else:
            verdict = (f"MISMATCH: expected {_names(o.fixture.expected_topics, 'silent')}; "
                       f"missing {_names(o.missing, 'none')}; unexpected {_names(o.unexpected, 'none')}")
        rows.append(("", "", "", verdict))
        verdicts.append(o.matches)
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row[:3], widths)) + "  " + row[3] for row in rows]
    lines.append(f"{sum(verdicts)} of {len(verdicts)} fixtures gave the expected cards")
    return "\n".join(line.rstrip() for line in lines)
