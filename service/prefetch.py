"""Prefetch: use what the client sent, fetch what is missing, fail per key.

For each prefetch key of a service:
- sent as a resource or Bundle: used as is;
- sent as null: the client looked and there is no data;
- sent as an OperationOutcome (alone or inside a Bundle): the client tried and failed;
- absent: fetched from fhirServer.
A key that cannot be had is recorded as unavailable by resource type; when that type decides
whether the patient is in scope at all, the call fails with 412.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import requests

from .registry import REQUIRED_TYPES, resource_type_of

log = logging.getLogger(__name__)
TOKEN = re.compile(r"\{\{\s*([A-Za-z.]+)\s*\}\}")


class PrefetchFailed(Exception):
    """Data that decides scope could not be had: answered with 412 and an OperationOutcome."""

    def __init__(self, key: str, reason: str):
        super().__init__(f"{key}: {reason}")
        self.key, self.reason = key, reason


@dataclass
class Prefetched:
    resources: list[dict] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)   # resource type -> why
    sources: dict[str, str] = field(default_factory=dict)       # key -> "prefetch" | "fetched" | "null"


def fill_template(template: str, context: Mapping[str, Any]) -> str | None:
    """Replace {{context.x}} and the 2.0 user tokens; None when a token has no value."""
    user = str(context.get("userId", ""))
    user_type, _, user_id = user.partition("/")
    values = {f"context.{k}": v for k, v in context.items() if isinstance(v, str)}
    for token in ("Practitioner", "PractitionerRole", "Patient", "RelatedPerson"):
        if user_type == token:
            values[f"user{token}Id"] = user_id
    missing = [m for m in TOKEN.findall(template) if m not in values]
    if missing:
        return None
    return TOKEN.sub(lambda m: str(values[m.group(1)]), template)


def _outcome_in(value: Mapping) -> bool:
    if value.get("resourceType") == "OperationOutcome":
        return True
    if value.get("resourceType") == "Bundle":
        return any(isinstance(e, Mapping) and isinstance(e.get("resource"), Mapping)
                   and e["resource"].get("resourceType") == "OperationOutcome"
                   and e.get("search", {}).get("mode") != "include" and _is_error(e["resource"])
                   for e in value.get("entry") or [])
    return False


def _is_error(outcome: Mapping) -> bool:
    return any(i.get("severity") in {"error", "fatal"} for i in outcome.get("issue") or [] if isinstance(i, Mapping)) \
        or not outcome.get("issue")


def resources_of(value: Mapping) -> list[dict]:
    if value.get("resourceType") == "Bundle":
        return [e["resource"] for e in value.get("entry") or []
                if isinstance(e, Mapping) and isinstance(e.get("resource"), Mapping)
                and e["resource"].get("resourceType") != "OperationOutcome"]
    return [dict(value)]


class PrefetchResolver:
    def __init__(self, session: requests.Session | None = None, timeout: float = 2.0):
        self.session = session or requests.Session()
        self.timeout = timeout

    def resolve(self, templates: Mapping[str, str], request: Mapping[str, Any]) -> Prefetched:
        sent = request.get("prefetch") or {}
        context = request.get("context") or {}
        result = Prefetched()
        for key, template in templates.items():
            rtype = resource_type_of(template)
            if key in sent:
                value = sent[key]
                if value is None:
                    result.sources[key] = "null"
                elif _outcome_in(value):
                    self._fail(result, key, rtype, "the client could not prefetch it (OperationOutcome)")
                else:
                    result.resources += resources_of(value)
                    result.sources[key] = "prefetch"
                continue
            query = fill_template(template, context)
            if query is None:
                self._fail(result, key, rtype, "its query needs a context value the request did not carry")
                continue
            if not request.get("fhirServer"):
                self._fail(result, key, rtype, "not prefetched and no fhirServer to fetch it from")
                continue
            try:
                result.resources += self._fetch(request, query)
                result.sources[key] = "fetched"
            except (requests.RequestException, ValueError) as exc:
                self._fail(result, key, rtype, f"fetch from fhirServer failed ({type(exc).__name__})")
        return result

    @staticmethod
    def _fail(result: Prefetched, key: str, rtype: str, reason: str) -> None:
        log.warning("prefetch key %s unavailable: %s", key, reason)
        if rtype in REQUIRED_TYPES:
            raise PrefetchFailed(key, reason)
        result.unavailable[rtype] = reason

    def _fetch(self, request: Mapping[str, Any], query: str) -> list[dict]:
        headers = {"Accept": "application/fhir+json"}
        auth = request.get("fhirAuthorization")
        if auth and auth.get("access_token"):
            headers["Authorization"] = f"Bearer {auth['access_token']}"
        url = request["fhirServer"].rstrip("/") + "/" + query
        response = self.session.get(url, headers=headers, timeout=self.timeout, allow_redirects=False)
        if response.status_code == 404 and "?" not in query:
            return []
        response.raise_for_status()
        body = response.json()
        if not isinstance(body, Mapping) or _outcome_in(body):
            raise ValueError("not a FHIR resource or Bundle")
        return resources_of(body)
