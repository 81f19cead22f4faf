"""FHIR fixtures: one patient per Bundle in fhir_fixtures/, each stating the cards it expects.

A fixture is written as of its anchor date (Bundle.meta.lastUpdated). Loading shifts every date and
dateTime by (today - anchor), so "deteriorating in the last 72 hours" or "dexamethasone day 20" stay
true whenever the fixture is replayed or served.
"""
from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EXPECTED_CARD_SYSTEM = "https://avh-cds.org/fhir/CodeSystem/expected-card"
SILENT = "silent"   # the tag a fixture carries when it expects no card at all
DATE = re.compile(r"^(\d{4}-\d{2}-\d{2})(T[0-9:.]+(Z|[+-]\d{2}:\d{2})?)?$")


@dataclass(frozen=True)
class Fixture:
    name: str
    bundle: dict
    patient_id: str
    expected_topics: frozenset[str]

    def resources(self) -> list[dict]:
        return [e["resource"] for e in self.bundle.get("entry", [])]


def shift_dates(value: Any, days: int) -> Any:
    if isinstance(value, dict):
        return {k: shift_dates(v, days) for k, v in value.items()}
    if isinstance(value, list):
        return [shift_dates(v, days) for v in value]
    if isinstance(value, str) and days:
        match = DATE.match(value)
        if match:
            shifted = dt.date.fromisoformat(match.group(1)) + dt.timedelta(days=days)
            return shifted.isoformat() + (match.group(2) or "")
    return value


def resolve_full_urls(value: Any, stored_as: dict[str, str]) -> Any:
    """Each `reference` naming an entry by its fullUrl (`urn:uuid:...`, as a transaction Bundle such as Synthea's
    writes them) made the `Type/id` that entry's resource is stored as, as a FHIR server does on a transaction."""
    if isinstance(value, dict):
        return {k: (stored_as.get(v, v) if k == "reference" and isinstance(v, str) else resolve_full_urls(v, stored_as))
                for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_full_urls(v, stored_as) for v in value]
    return value


def _stored_as(entries: list) -> dict[str, str]:
    """fullUrl -> Type/id, of the entries whose fullUrl is not already their Type/id's URL."""
    named = {}
    for e in entries:
        resource, full_url = e.get("resource"), e.get("fullUrl")
        if isinstance(resource, dict) and isinstance(full_url, str) and isinstance(resource.get("id"), str) \
                and isinstance(resource.get("resourceType"), str):
            typed = f"{resource['resourceType']}/{resource['id']}"
            if not full_url.endswith(typed):
                named[full_url] = typed
    return named


class FixtureError(ValueError):
    """A file that is not a Bundle of one patient: the message names what is missing or malformed."""


def load_fixture(path: Path, today: dt.date | None = None) -> Fixture:
    """A Bundle with no anchor (meta.lastUpdated: a record of one's own, exported from a FHIR server) is read with
    its dates as written."""
    bundle = json.loads(path.read_text())
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise FixtureError("not a FHIR Bundle")
    meta = bundle.get("meta") if isinstance(bundle.get("meta"), dict) else {}
    entries = bundle.get("entry", [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise FixtureError("Bundle.entry is not a list of entries")
    today = today or dt.date.today()
    written = meta.get("lastUpdated")
    try:
        anchor = dt.date.fromisoformat(written[:10]) if written is not None else today
    except (TypeError, ValueError):
        raise FixtureError(f"meta.lastUpdated {str(written)[:40]!r} is not a date") from None
    tags = {t.get("code") for t in meta.get("tag", []) if isinstance(t, dict) and t.get("system") == EXPECTED_CARD_SYSTEM}
    bundle = shift_dates(bundle, (today - anchor).days)
    if stored_as := _stored_as(entries):
        bundle = resolve_full_urls(bundle, stored_as)
    bundle["meta"] = meta   # the anchor and tags stay as written
    patient = next((e["resource"].get("id") for e in bundle["entry"] if isinstance(e.get("resource"), dict)
                    and e["resource"].get("resourceType") == "Patient"), None) if entries else None
    if not isinstance(patient, str):
        raise FixtureError("the Bundle holds no Patient with an id")
    return Fixture(path.stem, bundle, patient, frozenset(tags - {SILENT}))


def load_fixtures(directory: Path, today: dt.date | None = None) -> list[Fixture]:
    return [load_fixture(p, today) for p in sorted(directory.glob("*.json"))]
