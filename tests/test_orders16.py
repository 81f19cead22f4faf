"""orders16: the dexamethasone course's dates on one time line (pathway.md section 3: "a date without a time is 00:00
UTC", "Today is the service's UTC date"), and a withdrawn draft that states no date. Each test failed on main."""
import datetime as dt
import re

import pytest
import time_machine

from service import create_app
from service.config import Settings
from tests.fhir_records import NO_AUTH, day, dexamethasone, hook_request, in_pathway_chart, today
from tests.test_dexamethasone_course import between, dosed, explained
from tests.test_order_hooks import dex, post, signed_as_suggested

UTC = dt.timezone.utc


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    app = create_app(Settings.from_env(NO_AUTH, sqlite_path=tmp_path_factory.mktemp("store") / "avh-cds.sqlite3"))
    return app.test_client()


# --- a draft's authoredOn is read on the line the course is counted on: UTC -------------------------------------

def test_a_draft_authored_now_after_local_midnight_at_plus_14_starts_today(client):
    """Attack (orders16): at 11:00 UTC on 30 November it is 01:00 on 1 December in Kiribati (+14:00); a 13-day draft
    authored now (authoredOn 2026-12-01T01:00:00+14:00) beside an undated 3-day draft. Read at the date it is written
    in, it started tomorrow on the UTC line today is read on: the two drafts written at the same moment ran 14 days
    (a card). Both start today: the 13-day course, silent."""
    with time_machine.travel(dt.datetime(2026, 11, 30, 11, tzinfo=UTC), tick=False):
        drafts = [{**dex("dex-1", dosed(13)), "authoredOn": "2026-12-01T01:00:00+14:00"}, dex("dex-2", dosed(3))]
        body = hook_request("order-sign", "p3", in_pathway_chart("p3"), drafts)
        cards = post(client, body)
        fired, reason = explained(client, body)
    assert cards == []
    assert not fired and reason.startswith("0 course days taken + 13 drafted"), reason


def test_a_changed_taper_sent_again_from_tokyo_counts_its_days_as_the_record_does(client):
    """Attack (orders16): the recommended regimen written in Tokyo at 02:00 local time (17:00 UTC the day before): a
    3-day bolus authored 10 days ago by its local date (given), then a 10-day taper authored 7 days ago by its local
    date (ongoing), changed today and sent again as a draft with its authoredOn. The record counts the course days
    from the bolus's UTC date (pathway.md section 3: 11 days taken); the draft was placed at its local date, a day
    after the same order's start on record, so the taper ran to a day after the course's end: a 14-day card on the
    recommended 13-day course. Read on the UTC line as the record reads it: 13 days, silent."""
    bolus = dexamethasone(f"{day(10, since=today())}T02:00:00+09:00", "completed", patient_id="p3", id="dex-0",
                          dosage=[dosed(3)])
    taper = dexamethasone(f"{day(7, since=today())}T02:00:00+09:00", "active", patient_id="p3", id="dex-1",
                          dosage=[dosed(10, 16)])
    changed = {**taper, "status": "draft", "dosageInstruction": [dosed(10, 24)]}
    body = hook_request("order-sign", "p3", in_pathway_chart("p3") + [bolus, taper], [changed])
    assert post(client, body) == []
    fired, reason = explained(client, body)
    assert not fired and reason.startswith("11 course days taken + 10 drafted"), reason


def test_the_dates_the_card_shows_are_the_days_the_course_is_counted_from(client):
    """Attack (orders16): a bolus drafted at 02:00 on 1 December in Tokyo (17:00 on 30 November, UTC; no dosage start)
    and a taper dated 4 to 14 December. The card said '3 days from 2026-12-01' and '11 days from 2026-12-04' while its
    "why" dated both drafts 2026-11-30 (their authoredOn in UTC): the card contradicted itself. Each draft is shown
    with the day its days are counted from, the same in both places: the bolus from 30 November (today, the UTC date),
    the taper from 4 December; the course is 15 days."""
    with time_machine.travel(dt.datetime(2026, 11, 30, 17, tzinfo=UTC), tick=False):
        bolus = {**dex("dex-1", dosed(3)), "authoredOn": "2026-12-01T02:00:00+09:00"}
        drafts = [bolus, dex("dex-2", between("2026-12-04", "2026-12-14", mg=8))]
        [card] = post(client, hook_request("order-sign", "p3", in_pathway_chart("p3"), drafts))
    assert "run 15 days" in card["summary"], card["summary"]
    counted = dict(re.findall(r"\(MedicationRequest/(dex-\d)\): \d+ days from (\d{4}-\d\d-\d\d)", card["detail"]))
    shown = dict(re.findall(r"medication order, (\d{4}-\d\d-\d\d); MedicationRequest/(dex-\d)\)", card["detail"]))
    assert counted == {"dex-1": "2026-11-30", "dex-2": "2026-12-04"}, card["detail"]
    assert {ref: date for date, ref in shown.items()} == counted, card["detail"]


# --- a withdrawn draft that states no date is the order on file, stopped: it keeps the date on file ----------------

@pytest.mark.parametrize("dated_on_file_by", ["authoredOn", "dosage-start"])
def test_a_withdrawn_draft_stating_no_date_keeps_the_days_taken(client, dated_on_file_by):
    """Attack (orders16): the EHR stops the ongoing order dex-1 (10 days taken) while signing a new 10-day draft; the
    stopped draft is valid FHIR but carries no date at all (no authoredOn, no dosage start: a status change). It took
    the place of the dated version on file as an undated order, which starts no course: the 10 days taken were lost,
    10 days drafted, silent. What it does not say of when the order began, the version on file says: 20 days, a card
    naming the 10 taken."""
    if dated_on_file_by == "authoredOn":
        on_record = dexamethasone(day(10, since=today()), "active", patient_id="p3", id="dex-1", dosage=[dosed(30)])
    else:
        on_record = {k: v for k, v in dexamethasone("x", "active", patient_id="p3", id="dex-1",
                                                    dosage=[between(day(10, since=today()), day(-19, since=today()))]
                                                    ).items() if k != "authoredOn"}
    stopped = {k: v for k, v in on_record.items() if k not in ("authoredOn", "dosageInstruction")}
    stopped = {**stopped, "status": "stopped", "dosageInstruction": [dosed(30)]}
    drafts = [stopped, dex("dex-2", dosed(10))]
    [card] = post(client, hook_request("order-sign", "p3", in_pathway_chart("p3") + [on_record], drafts))
    assert card["summary"] == ("Dexamethasone course of 20 days with this order (10 already taken): beyond the "
                               "13-day course (3 days + 10-day taper)")
    assert post(client, hook_request("order-sign", "p3", in_pathway_chart("p3") + [on_record],
                                     signed_as_suggested(drafts, card))) == []


def test_a_withdrawn_draft_with_its_own_date_is_read_as_sent(client):
    """A stopped draft that states its own date is read at that date, not the version on file's: stopped 2 days into
    the course by its own authoredOn (the order on file says 10 days ago), 2 + 10 days, silent."""
    on_record = dexamethasone(day(10, since=today()), "active", patient_id="p3", id="dex-1", dosage=[dosed(30)])
    drafts = [{**on_record, "status": "stopped", "authoredOn": day(2, since=today())}, dex("dex-2", dosed(10))]
    body = hook_request("order-sign", "p3", in_pathway_chart("p3") + [on_record], drafts)
    assert post(client, body) == []
    fired, reason = explained(client, body)
    assert not fired and reason.startswith("2 course days taken + 10 drafted"), reason


# --- a course over 13 days is never said to be 13 days long -------------------------------------------------------

@pytest.mark.parametrize("start, end, said", [
    ("2027-02-01T08:00:00+09:00", "2027-02-13", "13.04"),     # the bare end is 00:00 UTC on 14 February
    ("2027-01-31T23:57:00Z", "2027-02-13", "13.002"),
])
def test_a_course_an_hour_over_13_days_is_not_said_to_be_13_days(client, start, end, said):
    """Attack (orders16): a period from 08:00 on 1 February in Tokyo to the bare date 13 February. pathway.md
    section 3 reads a date without a time as 00:00 UTC, so the period ends at 00:00 UTC on 14 February (09:00 in
    Tokyo), 13 days and an hour after its start: beyond the 13-day course, and the card fires; but it said
    'Dexamethasone order for 13 days exceeds the 13-day course', the length rounded to the tenth of a day. A length
    that is not a whole number of days is never shown as one."""
    drafts = [dex("dex-1", between(start, end))]
    body = hook_request("order-sign", "p3", in_pathway_chart("p3"), drafts)
    [card] = post(client, body)
    assert card["summary"] == f"Dexamethasone order for {said} days exceeds the 13-day course (3 days + 10-day taper)"
    assert post(client, hook_request("order-sign", "p3", in_pathway_chart("p3"), signed_as_suggested(drafts, card))) == []


def test_a_course_just_under_13_days_is_not_said_to_be_13_days(client):
    """A period from 01:00 UTC on 1 February to the bare date 13 February is 12.96 days, within the course: the
    explanation said '13 drafted: within the 13-day course', a length it also says is beyond."""
    body = hook_request("order-sign", "p3", in_pathway_chart("p3"), [dex("dex-1", between("2027-02-01T01:00:00Z",
                                                                                          "2027-02-13"))])
    assert post(client, body) == []
    fired, reason = explained(client, body)
    assert not fired and reason.startswith("0 course days taken + 12.96 drafted: within"), reason


# --- the card says what the drafts add to the days taken, not that they run after them ------------------------------

def test_a_draft_dated_before_the_course_is_not_said_to_run_after_the_days_taken(client):
    """Attack (orders16): a 14-day draft authored 40 days ago, beside the course on record (an ongoing order from 5
    days ago). The card said the draft 'runs for 14 days after 5 days of this episode's course already taken' while
    its "why" dated the draft 40 days ago and the course's order 5 days ago. It says what the draft adds."""
    record = in_pathway_chart("p3") + [dexamethasone(day(5, since=today()), "active", patient_id="p3", id="dex-0",
                                                     dosage=[dosed(30)])]
    drafts = [{**dexamethasone(day(40, since=today()), "draft", patient_id="p3", id="dex-1"),
               "dosageInstruction": [dosed(14)]}]
    [card] = post(client, hook_request("order-sign", "p3", record, drafts))
    assert f"medication order, {day(40, since=today())}; MedicationRequest/dex-1" in card["detail"]
    assert "after 5 days" not in card["detail"], card["detail"]
    assert "adds 14 days to 5 days of this episode's course already taken: 19 days in all" in card["detail"]


def test_drafts_running_on_days_taken_are_not_said_to_run_only_the_days_they_add(client):
    """Attack (orders16): the recommended regimen under way (3-day bolus from 10 days ago, 10-day taper from 7 days
    ago), its taper changed to 13 days and sent again beside a new 3-day draft from today. The card said 'the draft
    orders together run for 6 days, from the earliest start to the latest end (... 13 days from <7 days ago>; ...
    3 days from <today>)': 6 days is what they add to the 10 taken, not how long they run. It says so."""
    bolus = dexamethasone(day(10, since=today()), "completed", patient_id="p3", id="dex-0", dosage=[dosed(3)])
    taper = dexamethasone(day(7, since=today()), "active", patient_id="p3", id="dex-1", dosage=[dosed(10, 16)])
    drafts = [{**taper, "status": "draft", "dosageInstruction": [dosed(13, 24)]}, dex("dex-2", dosed(3))]
    [card] = post(client, hook_request("order-sign", "p3", in_pathway_chart("p3") + [bolus, taper], drafts))
    assert "16 days" in card["summary"], card["summary"]
    assert "together run for 6 days" not in card["detail"], card["detail"]
    assert (f"13 days from {day(7, since=today())}; dexamethasone (MedicationRequest/dex-2): 3 days from "
            f"{day(0, since=today())}; an order without a start date starts on the day it was authored, else today), "
            "add 6 days to 10 days of this episode's course already taken: 16 days in all") in card["detail"]
    assert post(client, hook_request("order-sign", "p3", in_pathway_chart("p3") + [bolus, taper],
                                     signed_as_suggested(drafts, card))) == []
