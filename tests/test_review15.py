"""Hostile review of int15 (ui15 + orders15): each test failed on int15."""
import pytest

from service import create_app
from service.config import Settings
from tests.fhir_records import NO_AUTH, day, dexamethasone, hook_request, in_pathway_chart, today
from tests.test_dexamethasone_course import dosed
from tests.test_order_hooks import post, signed_as_suggested


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    app = create_app(Settings.from_env(NO_AUTH, sqlite_path=tmp_path_factory.mktemp("store") / "avh-cds.sqlite3"))
    return app.test_client()


# --- a trailing-slash redirect stays on this site -------------------------------------------------------------------

@pytest.mark.parametrize("typed, canonical", [("//pathway/", "/pathway"), ("///governance//", "/governance"),
                                              ("//fhir/Patient/x/", "/fhir/Patient/x")])
def test_a_path_typed_with_leading_slashes_is_redirected_on_this_site(typed, canonical, tmp_path):
    """Attack (rev15): a request line `GET //pathway/` (a link an attacker sends) was redirected to `//pathway`: a
    browser reads a Location starting with two slashes as another host's URL (http://pathway/, a name the hospital's
    DNS search domain completes), an open redirect. The Location is this site's path, with one leading slash."""
    app = create_app(Settings.from_env({"AVH_CDS_AUTH": "off", "AVH_CDS_LOG_LEVEL": "ERROR"}, fixture_fhir=True,
                                       sqlite_path=tmp_path / "avh-cds.sqlite3"))
    answer = app.test_client().get("/", environ_overrides={"PATH_INFO": typed})
    assert answer.status_code == 308 and answer.headers["Location"] == canonical, answer.headers.get("Location")


# --- a draft dated in the past overlaps the course days already taken: they are counted once ------------------------

def course_in_progress(taper_days: int) -> tuple[list[dict], list[dict]]:
    """The recommended regimen under way: the 3-day bolus dex-0 given from 10 days ago (completed), the taper dex-1
    (active, authored 7 days ago, no dosage start) changed to a lower dose and sent again as a draft with its
    authoredOn, `taper_days` long. (record, drafts)."""
    bolus = dexamethasone(day(10, since=today()), "completed", patient_id="p3", id="dex-0", dosage=[dosed(3)])
    taper = dexamethasone(day(7, since=today()), "active", patient_id="p3", id="dex-1", dosage=[dosed(10, 16)])
    changed = {**taper, "status": "draft", "dosageInstruction": [dosed(taper_days, 24)]}
    return in_pathway_chart("p3") + [bolus, taper], [changed]


def test_a_changed_taper_of_the_recommended_course_stays_silent(client):
    """Attack (rev15): the taper of the recommended 13-day course (3-day bolus from 10 days ago, then 10 days from 7
    days ago), its dose changed today and sent again: the course runs from 10 days ago to 3 days on, 13 days. int15
    placed the draft at its authoredOn (7 days ago) and added its 10 days to the 10 taken: the 7 days both counted
    twice, a 20-day card on the recommended regimen."""
    record, drafts = course_in_progress(10)
    assert post(client, hook_request("order-sign", "p3", record, drafts)) == []
    assert post(client, hook_request("order-select", "p3", record, drafts, ["MedicationRequest/dex-1"])) == []


def test_a_changed_taper_past_the_course_is_shortened_to_the_course_end(client):
    """The same taper made 13 days long (7 days ago to 6 days on): the course is 16 days, the card says so, and its
    one-click fix ends the taper with the course, 3 days from today (10 days from its start); signing it draws no
    card. int15 said 23 days and cut the taper to 3 days: to end 4 days ago."""
    record, drafts = course_in_progress(13)
    [card] = post(client, hook_request("order-sign", "p3", record, drafts))
    assert "16 days" in card["summary"], card["summary"]
    assert "adds 6 days to 10 days of this episode's course already taken: 16 days in all" in card["detail"]
    [action] = card["suggestions"][0]["actions"]
    assert action["resource"]["dosageInstruction"][0]["timing"]["repeat"]["boundsDuration"]["value"] == 10
    assert post(client, hook_request("order-sign", "p3", record, signed_as_suggested(drafts, card))) == []


@pytest.mark.parametrize("authored", [40, 6, 3], ids=["ended-before-the-course", "before-the-course", "in-the-course"])
def test_signing_the_fix_of_a_draft_dated_in_the_past_draws_no_card(client, authored):
    """The one-click fix of a 14-day draft authored `authored` days ago, 5 days into a course (an ongoing 30-day
    order from 5 days ago), stays silent once signed, wherever the draft lies beside the days taken."""
    record = in_pathway_chart("p3") + [dexamethasone(day(5, since=today()), "active", patient_id="p3", id="dex-0",
                                                     dosage=[dosed(30)])]
    drafts = [{**dexamethasone(day(authored, since=today()), "draft", patient_id="p3", id="dex-1"),
               "dosageInstruction": [dosed(14)]}]
    [card] = post(client, hook_request("order-sign", "p3", record, drafts))
    assert post(client, hook_request("order-sign", "p3", record, signed_as_suggested(drafts, card))) == []


# --- a changed order sent again that the record cannot read leaves prefetch's version on record --------------------

@pytest.mark.parametrize("status", ["draft", "active"])
def test_a_changed_order_that_cannot_be_read_leaves_the_days_taken_on_record(client, status):
    """Attack (rev15): the ongoing order dex-1 (10 days taken) is sent again changed, still to sign, but its dosage is
    not a list (invalid FHIR), beside a new 10-day draft. int15 kept prefetch's version on record only for a withdrawn
    draft: this one took it off and was left out itself, the 10 days taken lost: 10 days, silent. 20 days, a card."""
    on_record = dexamethasone(day(10, since=today()), "active", patient_id="p3", id="dex-1", dosage=[dosed(30)])
    drafts = [{**on_record, "status": status, "dosageInstruction": "every morning"},
              dexamethasone(day(0, since=today()), "draft", patient_id="p3", id="dex-2", dosage=[dosed(10)])]
    [card] = post(client, hook_request("order-sign", "p3", in_pathway_chart("p3") + [on_record], drafts))
    assert card["summary"] == ("Dexamethasone course of 20 days with this order (10 already taken): beyond the "
                               "13-day course (3 days + 10-day taper)")


# --- the log line of an invalid Patient names no element the sender made up ----------------------------------------

@pytest.mark.parametrize("extra", [{"MRN778899": "x"}, {"birthDate": "1970-05-01", "MRN778899birthDate": "1970"}])
def test_an_invalid_patient_logs_no_name_the_sender_chose(client, caplog, extra):
    """Attack (rev15): a Patient with an element its type does not define, named by a record number (`MRN778899`):
    it was left out and logged as `invalid FHIR at MRN778899: extra_forbidden`, the sender's name for it in the log.
    The line says an undefined element was sent, not its name."""
    import logging
    chart = in_pathway_chart("p3")
    chart[0] = {**chart[0], **extra}
    caplog.set_level(logging.WARNING)
    assert client.post("/cds-services/avh-patient-view", json=hook_request("patient-view", "p3", chart)).status_code == 200
    [line] = [r.getMessage() for r in caplog.records if "left out invalid Patient" in r.getMessage()]
    assert "extra_forbidden" in line and "778899" not in line, line
