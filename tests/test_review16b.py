"""review16b: hostile review of orders16 (the dexamethasone course's dates, lengths and card text). Each test failed
on int16 (0331a55)."""
import re
from decimal import Decimal

import pytest

from service import create_app
from service.config import Settings
from tests.fhir_records import NO_AUTH, day, dexamethasone, hook_request, in_pathway_chart, today
from tests.test_dexamethasone_course import between, dosed
from tests.test_order_hooks import post, signed_as_suggested


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    app = create_app(Settings.from_env(NO_AUTH, sqlite_path=tmp_path_factory.mktemp("store") / "avh-cds.sqlite3"))
    return app.test_client()


def test_the_days_added_and_the_days_taken_add_up_to_the_days_in_all(client):
    """Attack (review16b): 10 course days taken, a draft from 00:00 UTC today to 00:36 UTC three days on (3 days and
    36 minutes, 3.025 days). Each length was rounded alone, and 3.025 and 13.025 round apart in binary floating
    point: the card said the draft 'adds 3.02 days to 10 days ...: 13.03 days in all', arithmetic that does not hold.
    The days in all are the days taken plus the days added as written: 3.02 and 13.02."""
    taken = dexamethasone(day(10, since=today()), "completed", patient_id="p3", id="dex-0", dosage=[dosed(10)])
    start, end = f"{day(0, since=today())}T00:00:00Z", f"{day(-3, since=today())}T00:36:00Z"
    drafts = [{**dexamethasone("x", "draft", patient_id="p3", id="dex-1"), "dosageInstruction": [between(start, end)]}]
    drafts[0].pop("authoredOn")
    record = in_pathway_chart("p3") + [taken]
    [card] = post(client, hook_request("order-sign", "p3", record, drafts))
    added, days_taken, in_all = re.search(r"adds ([\d.]+) days to ([\d.]+) days of this episode's course already "
                                          r"taken: ([\d.]+) days in all", card["detail"]).groups()
    assert Decimal(added) + Decimal(days_taken) == Decimal(in_all), card["detail"]
    assert f"Dexamethasone course of {in_all} days with this order ({days_taken} already taken)" in card["summary"]
    assert post(client, hook_request("order-sign", "p3", record, signed_as_suggested(drafts, card))) == []


def test_a_changed_order_sent_again_without_its_date_keeps_the_days_it_has_run(client):
    """Attack (review16b): the ongoing order dex-1 (from 10 days ago, at 96 mg/day) is changed to 8 days and sent
    again as a draft without authoredOn or dosage start (an EHR need not send the date of a draft), beside a new 5-day
    draft. A draft is never on record, so the version on file went, its 10 days taken with it, and the undated
    draft started today: '0 course days taken + 8 drafted', silent. orders16 dates a withdrawn draft stating no date
    as the version on file; a changed one is the same order, begun when that version began: from 10 days ago to
    the new draft's end, 15 days, the card, as when the draft carries its authoredOn."""
    filed = dexamethasone(day(10, since=today()), "active", patient_id="p3", id="dex-1", dosage=[dosed(30)])
    changed = {k: v for k, v in filed.items() if k != "authoredOn"}
    drafts = [{**changed, "dosageInstruction": [dosed(8)]},
              {**dexamethasone("x", "draft", patient_id="p3", id="dex-2"), "dosageInstruction": [dosed(5)]}]
    drafts[1].pop("authoredOn")
    record = in_pathway_chart("p3") + [filed]
    [card] = post(client, hook_request("order-sign", "p3", record, drafts))
    assert card["summary"] == ("Dexamethasone orders together run 15 days: beyond the 13-day course (3 days + "
                               "10-day taper)"), card["summary"]
    assert f"8 days from {day(10, since=today())}" in card["detail"], card["detail"]
    assert post(client, hook_request("order-sign", "p3", record, signed_as_suggested(drafts, card))) == []


def test_the_shortening_says_the_length_it_gives_the_order(client):
    """Attack (review16b): the recommended regimen under way (3-day bolus from 10 days ago, 10-day taper from 7 days
    ago), the taper changed to 13 days and sent again with its authoredOn: 16 days, the card. Its one-click fix cuts
    the taper to 10 days (7 run, 3 left; its sig says '(shortened to 10 days)'), but the action said 'Shorten
    MedicationRequest/dex-1 to the 3 days left of the 13-day course': a 3-day order, not the 10-day one it writes.
    The action names the length it gives the order."""
    bolus = dexamethasone(day(10, since=today()), "completed", patient_id="p3", id="dex-0", dosage=[dosed(3)])
    taper = dexamethasone(day(7, since=today()), "active", patient_id="p3", id="dex-1", dosage=[dosed(10, 16)])
    drafts = [{**taper, "status": "draft", "dosageInstruction": [dosed(13, 24)]}]
    record = in_pathway_chart("p3") + [bolus, taper]
    [card] = post(client, hook_request("order-sign", "p3", record, drafts))
    [action] = card["suggestions"][0]["actions"]
    assert action["resource"]["dosageInstruction"][0]["timing"]["repeat"]["boundsDuration"]["value"] == 10
    assert action["description"].startswith("Shorten MedicationRequest/dex-1 to 10 days"), action["description"]
    assert "3 days left of the 13-day course" in action["description"], action["description"]
    assert post(client, hook_request("order-sign", "p3", record, signed_as_suggested(drafts, card))) == []


def test_no_fix_deletes_a_changed_order_whose_version_on_file_would_return(client):
    """Attack (review16b): the ongoing order dex-1 (from 3 days ago) changed to 5 days and sent again, beside a draft
    dex-2 dated from 20 days ago for 30 days (a back-dated order). The draft set replaces dex-1's version on file: 0
    days taken, 33 days drafted, the card. Its fix cut dex-2 to 13 days and deleted dex-1's draft; but deleting the
    change of an order on file leaves that order as it is on file, its 3 days taken back on record: signed as
    suggested, 13 + 3 days, the card again (pathway.md section 4: accepting a suggestion and signing it never draws
    a warning). A draft that changes an order on file is not deleted: no fix is offered, as for a draft without
    an id."""
    filed = dexamethasone(day(3, since=today()), "active", patient_id="p3", id="dex-1", dosage=[dosed(30)])
    drafts = [{**filed, "status": "active", "dosageInstruction": [dosed(5)]},
              {**dexamethasone(day(20, since=today()), "draft", patient_id="p3", id="dex-2"),
               "dosageInstruction": [dosed(30)]}]
    record = in_pathway_chart("p3") + [filed]
    [card] = post(client, hook_request("order-sign", "p3", record, drafts))
    assert card["source"]["topic"]["code"] == "steroid-duration"
    assert not [a for s in card.get("suggestions", []) for a in s["actions"]
                if a.get("resourceId") == "MedicationRequest/dex-1"], card["suggestions"]
    for suggestion in card.get("suggestions", []):
        signed = signed_as_suggested(drafts, {"suggestions": [suggestion]})
        assert post(client, hook_request("order-sign", "p3", record, signed)) == [], suggestion


@pytest.mark.parametrize("taken_days, drafted_days, said", [
    (1, 15, "adds 15 days to 1 day of this episode's course already taken: 16 days in all"),
    (13, 1, "adds 1 day to 13 days of this episode's course already taken: 14 days in all")])
def test_one_day_is_said_in_the_singular(client, taken_days, drafted_days, said):
    """review16b's finding, fixed by the coordinator: the card wrote its unit after the number whatever the number,
    'adds 15.2 days to 1 days of this episode's course'. The unit now agrees with the number (orders.days_phrase)."""
    taken = dexamethasone(day(taken_days, since=today()), "completed", patient_id="p3", id="dex-0",
                          dosage=[dosed(taken_days)])
    drafts = [{**dexamethasone("x", "draft", patient_id="p3", id="dex-1"), "dosageInstruction": [dosed(drafted_days)]}]
    drafts[0].pop("authoredOn")
    [card] = post(client, hook_request("order-sign", "p3", in_pathway_chart("p3") + [taken], drafts))
    assert said in card["detail"], card["detail"]
    assert " 1 days" not in card["detail"] + card["summary"]
