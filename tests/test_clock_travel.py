"""tests.fhir_records.stay_on: the modules that date their records from the real clock at import keep the service's
clock on that day (a suite run crossing midnight UTC gave other cards than the fixtures expect)."""
import datetime as dt

from service import create_app
from service.config import PROJECT_ROOT, Settings
from service.fhir.fixtures import load_fixtures
from service.fhir.replay import InProcess, replay
from tests.fhir_records import NO_AUTH, stay_on

DAY = dt.date(2001, 2, 3)          # years before the real clock: records dated to it are old news to that clock
_clock = stay_on(DAY)


def test_fixtures_dated_on_a_past_day_get_their_cards_on_that_day():
    outcomes = replay(load_fixtures(PROJECT_ROOT / "fhir_fixtures", DAY), InProcess(create_app(Settings.from_env(NO_AUTH))))
    assert [o.fixture.name for o in outcomes if not o.matches] == []
    assert dt.datetime.now(dt.timezone.utc).date() == DAY
