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


def load_fixture(path: Path, today: dt.date | None = None) -> Fixture:
    bundle = json.loads(path.read_text())
    meta = bundle.get("meta", {})
    anchor = dt.date.fromisoformat(meta["lastUpdated"][:10])
    today = today or dt.date.today()
    tags = {t["code"] for t in meta.get("tag", []) if t.get("system") == EXPECTED_CARD_SYSTEM}
    bundle = shift_dates(bundle, (today - anchor).days)
    bundle["meta"] = meta   # the anchor and tags stay as written
    patient = next(e["resource"]["id"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
    return Fixture(path.stem, bundle, patient, frozenset(tags - {SILENT}))


def load_fixtures(directory: Path, today: dt.date | None = None) -> list[Fixture]:
    return [load_fixture(p, today) for p in sorted(directory.glob("*.json"))]
