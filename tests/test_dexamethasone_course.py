"""The draft set's dexamethasone course (pathway.md sections 3 and 5), as orders15 left it: partial dates read as
FHIR means them, a draft's start when its dosage states none, a withdrawn draft whose dosage cannot be read, and the
time zone "today" is read in. Each rule is checked card by card, with the cases that must stay silent."""
import pytest

from service import create_app
from service.clinical.orders import course_days
from service.config import Settings
from tests.fhir_records import NO_AUTH, UCUM, hook_request, in_pathway_chart
from tests.test_order_hooks import dex, post, signed_as_suggested

SUMMARY = "Dexamethasone order for {} days exceeds the 13-day course (3 days + 10-day taper)"


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    return create_app(Settings.from_env(NO_AUTH, sqlite_path=tmp_path_factory.mktemp("store") / "avh-cds.sqlite3"))


def between(start: str, end: str, mg: float = 96) -> dict:
    """A once-daily line at `mg` for the boundsPeriod `start` to `end`, as sent."""
    return {"timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d",
                                  "boundsPeriod": {"start": start, "end": end}}},
            "doseAndRate": [{"doseQuantity": {"value": mg, "unit": "mg", "system": UCUM, "code": "mg"}}]}


def explained(client, body) -> tuple[bool, str]:
    response = client.post("/cds-services/avh-order-sign/explain", json=body)
    assert response.status_code == 200, response.json
    [said] = [(t["fired"], t["reason"]) for t in response.json["topics"] if t["topic"] == "steroid-duration"]
    return said


# --- 1. partial dates: a period's start is the first instant of its partial date, its end the last -----------------

@pytest.mark.parametrize("start, end, days", [
    ("2026-12", "2027-01", 62),             # December and January (main: 32, the end read as 1 January + 1 day)
    ("2027", "2027", 365),                  # the year 2027 (main: 1 day)
    ("2027-01-25", "2027-02", 35),          # to the end of February (main: 8 days, silent)
    ("2027", "2027-01-20", 20),             # a partial start counts from its first day
    ("0001", "0001", 365),                  # the calendar's first year
    ("9999", "9999", 365),                  # its last: the end of the year 9999 is the calendar's end, no overflow
])
def test_a_partial_date_bounds_the_course_as_the_whole_month_or_year(client, start, end, days):
    """Attack (orders15): FHIR reads a partial date as a period's end as its last instant: a course from 2026-12 to
    2027-01 runs to the end of January, 62 days; it was read as ending on 2 January (32 days), and a period ending in
    a partial month or year was cut short, so a 35-day course from 25 January to 'February' drew no card."""
    drafts = [dex("dex-1", between(start, end))]
    assert round(course_days(drafts[0])) == days
    record = in_pathway_chart("p3")
    [card] = post(client, hook_request("order-sign", "p3", record, drafts))
    assert card["summary"] == SUMMARY.format(days)
    assert post(client, hook_request("order-sign", "p3", record, signed_as_suggested(drafts, card))) == []


@pytest.mark.parametrize("start, end", [("2027-02-20", "2027-02"), ("2027-02-01", "2027-02-13"),
                                        ("2027-02-01T00:00:00Z", "2027-02-13")])
def test_a_partial_end_within_the_course_stays_silent(client, start, end):
    """From 20 February to 'February' is 9 days (main: a period ending before it starts, unreadable); 13 days by
    whole dates is the recommended course: neither draws a card, and the explanation says the course is within it."""
    body = hook_request("order-sign", "p3", in_pathway_chart("p3"), [dex("dex-1", between(start, end))])
    assert post(client, body) == []
    fired, reason = explained(client, body)
    assert not fired and "within the 13-day course" in reason, reason
