"""Load the FHIR fixtures into a real FHIR R4 server (HAPI in docker-compose), and read them back.

Each resource is PUT by its id (update-as-create), so loading twice leaves the same data and the
ids the fixtures' expected cards refer to stay stable. Resources a fixture references are PUT
before the resources that reference them: HAPI checks referential integrity on write.
Fixture dates are shifted to the load day (service/fixtures.py), so --verify compares against the
fixtures as of that day (--as-of when verifying later).
The fixtures are synthetic: the loader prints resource types and ids, never resource content.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import requests

from service.fhir.fixtures import Fixture

FHIR_JSON = "application/fhir+json"
RETRIED_STATUSES = {429, 502, 503, 504}   # a server still starting or briefly overloaded


class ServerNotUp(Exception):
    pass


def _references(value) -> Iterator[str]:
    if isinstance(value, dict):
        if isinstance(value.get("reference"), str):
            yield value["reference"]
        for item in value.values():
            yield from _references(item)
    elif isinstance(value, list):
        for item in value:
            yield from _references(item)


def resources_in_load_order(fixtures: Iterable[Fixture]) -> list[dict]:
    """Every resource once, each after the resources it references (a cycle is broken where it is met)."""
    by_key: dict[str, dict] = {}
    for fixture in fixtures:
        for resource in fixture.resources():
            key = f"{resource['resourceType']}/{resource['id']}"
            if key in by_key and by_key[key] != resource:
                raise ValueError(f"{key} appears in two fixtures with different content ({fixture.name})")
            by_key[key] = resource
    ordered: list[dict] = []
    placed: set[str] = set()

    def place(key: str) -> None:
        if key in placed:
            return
        placed.add(key)
        for ref in _references(by_key[key]):
            if ref in by_key:
                place(ref)
        ordered.append(by_key[key])

    for key in by_key:
        place(key)
    return ordered


def without_server_meta(resource: dict) -> dict:
    """What must survive the round trip: everything but `meta` (servers set versionId, lastUpdated)."""
    return {k: v for k, v in resource.items() if k != "meta"}


@dataclass
class Report:
    done: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


class FhirLoader:
    def __init__(self, base_url: str, session: requests.Session | None = None, timeout: float = 10.0,
                 attempts: int = 5, backoff_seconds: float = 1.0):
        self.base = base_url.rstrip("/")
        self.session = session or requests.Session()
        self.timeout, self.attempts, self.backoff = timeout, attempts, backoff_seconds

    def wait_until_up(self, wait_seconds: float, interval: float = 2.0) -> None:
        """Poll GET [base]/metadata until the server answers below 500 (HAPI refuses connections while starting)."""
        deadline = time.monotonic() + wait_seconds
        while True:
            try:
                status = self.session.get(f"{self.base}/metadata", headers={"Accept": FHIR_JSON},
                                          timeout=self.timeout).status_code
                if status < 500:
                    return
                why = f"HTTP {status}"
            except requests.RequestException as exc:
                why = type(exc).__name__
            if time.monotonic() + interval > deadline:
                raise ServerNotUp(f"{self.base} did not come up within {wait_seconds:g} s (last: {why})")
            time.sleep(interval)

    def _send(self, method: str, url: str, **kwargs) -> requests.Response:
        """One request, retried on connection errors and on the statuses of a server not ready yet."""
        for attempt in range(1, self.attempts):
            try:
                response = self.session.request(method, url, timeout=self.timeout, **kwargs)
                if response.status_code not in RETRIED_STATUSES:
                    return response
            except requests.ConnectionError:
                pass
            time.sleep(self.backoff * attempt)
        return self.session.request(method, url, timeout=self.timeout, **kwargs)   # the last try answers as it is

    def load(self, resources: list[dict]) -> Report:
        report = Report()
        for resource in resources:
            key = f"{resource['resourceType']}/{resource['id']}"
            response = self._send("PUT", f"{self.base}/{key}", json=resource,
                                  headers={"Content-Type": FHIR_JSON, "Accept": FHIR_JSON})
            if response.status_code in (200, 201):
                report.done.append(key)
            else:
                report.problems.append(f"{key}: PUT answered HTTP {response.status_code}{_outcome(response)}")
        return report

    def verify(self, resources: list[dict]) -> Report:
        report = Report()
        for resource in resources:
            key = f"{resource['resourceType']}/{resource['id']}"
            response = self._send("GET", f"{self.base}/{key}", headers={"Accept": FHIR_JSON})
            if response.status_code != 200:
                report.problems.append(f"{key}: GET answered HTTP {response.status_code}")
                continue
            try:
                served = response.json()
            except ValueError:
                report.problems.append(f"{key}: GET answered a body that is not JSON")
                continue
            expected, got = without_server_meta(resource), without_server_meta(served)
            if expected == got:
                report.done.append(key)
            else:
                differing = sorted(k for k in expected.keys() | got.keys() if expected.get(k) != got.get(k))
                report.problems.append(f"{key}: served resource differs in {', '.join(differing)}")
        return report


def _outcome(response: requests.Response) -> str:
    """The issue codes of an OperationOutcome answer (codes only: diagnostics may quote the resource)."""
    try:
        issues = response.json().get("issue", [])
        codes = sorted({str(i.get("code")) for i in issues if isinstance(i, dict)})
    except (ValueError, AttributeError):
        return ""
    return f" (OperationOutcome: {', '.join(codes)})" if codes else ""
