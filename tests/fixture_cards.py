"""The fixtures of fhir_fixtures/ evaluated by the pure engine at a fixed moment (no server)."""
from __future__ import annotations

from functools import lru_cache

from service.config import PROJECT_ROOT
from service.api.engine import Engine
from service.fhir.fixtures import Fixture, load_fixtures
from service.fhir.prefetch import Prefetched
from tests.pathway_builders import NOW

ENGINE = Engine.load(PROJECT_ROOT / "cards")
SOURCE_URL = "http://cds.test/pathway"


@lru_cache(maxsize=1)
def all_fixtures() -> tuple[Fixture, ...]:
    return tuple(load_fixtures(PROJECT_ROOT / "fhir_fixtures", NOW.date()))


def fixture(prefix: str) -> Fixture:
    """The fixture whose file name starts with prefix ('03' or '03-rapid')."""
    (found,) = [f for f in all_fixtures() if f.name.startswith(prefix)]
    return found


def chart_cards(fx: Fixture) -> list[dict]:
    """Cards for the whole bundle, unrelated resources included, as an EHR sending everything would get."""
    return ENGINE.chart_answer(Prefetched(resources=fx.resources()), fx.patient_id, NOW, SOURCE_URL).cards


def card(prefix: str, topic: str) -> dict:
    (found,) = [c for c in chart_cards(fixture(prefix)) if c["source"]["topic"]["code"] == topic]
    return found


def topics(prefix: str) -> set[str]:
    return {c["source"]["topic"]["code"] for c in chart_cards(fixture(prefix))}
