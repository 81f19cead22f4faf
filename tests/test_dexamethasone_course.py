"""The draft set's dexamethasone course (pathway.md sections 3 and 5), as orders15 left it: partial dates read as
FHIR means them, a draft's start when its dosage states none, a withdrawn draft whose dosage cannot be read, and the
time zone "today" is read in. Each rule is checked card by card, with the cases that must stay silent."""
import datetime as dt

import pytest
import time_machine

from service import create_app
from service.clinical.orders import course_days
from service.config import Settings
from tests.fhir_records import (NO_AUTH, UCUM, bounds_duration, day, dexamethasone, hook_request, in_pathway_chart,
                                today)
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


# --- 2. a draft whose dosage states no start starts on the day it was authored -------------------------------------

def dosed(days: float, mg: float = 96) -> dict:
    return {**bounds_duration(days), "doseAndRate": [{"doseQuantity": {"value": mg, "unit": "mg", "system": UCUM,
                                                                       "code": "mg"}}]}


def test_a_changed_ongoing_order_sent_again_keeps_the_days_it_has_run(client):
    """Attack (orders15): the ongoing order dex-1 (authored 10 days ago, 10 days at 96 mg/day) is changed and sent
    again as a draft with its authoredOn, beside a new 8-day taper. The draft is never on record, so its days taken are
    not counted there; read as starting today (main), it ran side by side with the taper: a 10-day course, silent.
    pathway.md section 3 dates a MedicationRequest by its earliest dosage start, else authoredOn: the course runs from
    10 days ago to the taper's end, 18 days, and draws the card."""
    on_record = dexamethasone(day(10, since=today()), "active", patient_id="p3", id="dex-1", dosage=[dosed(10)])
    changed = {**on_record, "status": "draft", "dosageInstruction": [dosed(10, 48)]}
    drafts = [changed, dex("dex-2", dosed(8, 8))]
    record = in_pathway_chart("p3") + [on_record]
    [card] = post(client, hook_request("order-sign", "p3", record, drafts))
    assert card["summary"] == "Dexamethasone orders together run 18 days: beyond the 13-day course (3 days + 10-day taper)"
    assert f"MedicationRequest/dex-1): 10 days from {day(10, since=today())}" in card["detail"]
    assert "an order without a start date starts on the day it was authored, else today" in card["detail"]
    assert post(client, hook_request("order-sign", "p3", record, signed_as_suggested(drafts, card))) == []


@pytest.mark.parametrize("authored", [f"{day(0, since=today())}T23:59:00Z", day(-5, since=today()),
                                      f"{day(-5, since=today())}T08:00:00+02:00"],
                         ids=["authored-now-late-in-the-day", "authored-in-5-days", "authored-in-5-days-with-a-time"])
def test_a_new_draft_authored_now_or_later_starts_today(client, authored):
    """A new draft is authored now (a dateTime, hours into today): it starts today, as the record counts course days
    by date, so 13 days beside a 3-day draft from today is the 13-day course, silent (read to the minute, the two
    would end 23 hours apart: 13.99 days, a card). An authoredOn after today states no start: read as one, the
    13-day draft would run from 5 days on, 18 days with the 3 from today."""
    drafts = [{**dex("dex-1", dosed(13)), "authoredOn": authored}, dex("dex-2", dosed(3))]
    body = hook_request("order-sign", "p3", in_pathway_chart("p3"), drafts)
    assert post(client, body) == []
    fired, reason = explained(client, body)
    assert not fired and reason.startswith("0 course days taken + 13 drafted"), reason


# --- 3. a withdrawn draft the record cannot read leaves prefetch's version on record ------------------------------

@pytest.mark.parametrize("unreadable", [
    {"dosageInstruction": "every morning"},
    {"dosageInstruction": [{"timing": {"repeat": {"boundsPeriod": {"start": "soon"}}}}]},
    {"authoredOn": "yesterday"},
], ids=["dosage-not-a-list", "dosage-start-not-a-date", "authored-not-a-date"])
def test_a_withdrawn_draft_that_cannot_be_read_leaves_the_days_taken_on_record(client, unreadable):
    """Attack (orders15): the EHR stops the ongoing order dex-1 (10 days taken) while signing a new 10-day draft, but
    the stopped draft is invalid FHIR. It took prefetch's version off the record and was itself left out as invalid:
    the 10 days taken were lost, 10 days drafted, silent. The record reads prefetch's version instead: 20 days, a card
    naming the 10 taken."""
    on_record = dexamethasone(day(10, since=today()), "active", patient_id="p3", id="dex-1", dosage=[dosed(30)])
    stopped = {**on_record, "status": "stopped", **unreadable}
    drafts = [stopped, dex("dex-2", dosed(10))]
    [card] = post(client, hook_request("order-sign", "p3", in_pathway_chart("p3") + [on_record], drafts))
    assert card["summary"] == ("Dexamethasone course of 20 days with this order (10 already taken): beyond the "
                               "13-day course (3 days + 10-day taper)")


def test_a_withdrawn_draft_that_cannot_be_read_leaves_a_short_course_silent(client):
    """The same with 2 days taken: 2 + 10 days is within the 13-day course, no card."""
    on_record = dexamethasone(day(2, since=today()), "active", patient_id="p3", id="dex-1", dosage=[dosed(30)])
    drafts = [{**on_record, "status": "stopped", "dosageInstruction": "every morning"}, dex("dex-2", dosed(10))]
    body = hook_request("order-sign", "p3", in_pathway_chart("p3") + [on_record], drafts)
    assert post(client, body) == []
    fired, reason = explained(client, body)
    assert not fired and reason.startswith("2 course days taken + 10 drafted"), reason


# --- 5. the day a draft was authored, on the UTC line the course is counted on (orders16) ---------------------------

@pytest.mark.parametrize("taper_end, fires", [("2026-12-12", False), ("2026-12-13", True)], ids=["13-days", "14-days"])
def test_a_draft_authored_after_local_midnight_east_of_utc_starts_on_its_utc_date(client, taper_end, fires):
    """At 02:00 on 1 December in Tokyo (17:00 on 30 November, UTC), a 3-day bolus is drafted with no dosage start
    (authoredOn 2026-12-01T02:00:00+09:00) beside a taper dated by bare dates. pathway.md section 3: today is the
    service's UTC date, a bare date is 00:00 UTC, and the record dates this order by its UTC date: the bolus starts on
    30 November, so a taper from 3 to 12 December makes the 13-day course, silent, and one to 13 December 14 days, a
    card. (orders15 read the authoredOn at its local date, 1 December: a day after the day the record counts it
    from, and a day after today for one written now in +14:00; tests/test_orders16.py.)"""
    with time_machine.travel(dt.datetime(2026, 11, 30, 17, tzinfo=dt.timezone.utc), tick=False):
        bolus = {**dex("dex-1", dosed(3)), "authoredOn": "2026-12-01T02:00:00+09:00"}
        drafts = [bolus, dex("dex-2", between("2026-12-03", taper_end, mg=8))]
        body = hook_request("order-sign", "p3", in_pathway_chart("p3"), drafts)
        cards = post(client, body)
        fired, reason = explained(client, body)
    assert [c["source"]["topic"]["code"] for c in cards] == (["steroid-duration"] if fires else [])
    assert fired is fires and ("course of 14 days" if fires else "+ 13 drafted") in reason, reason
