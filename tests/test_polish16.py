"""polish16: the dexamethasone course card's texts as the real CDS Hooks sandbox's drafts show them (a dose in
tablets, a draft's "why" line) and when no shortened order is offered. Each test failed on int16."""
import pytest

from service import create_app
from service.config import Settings
from tests.fhir_records import NO_AUTH, UCUM, bounds_duration, day, dexamethasone, hook_request, in_pathway_chart, today
from tests.test_dexamethasone_course import dosed
from tests.test_order_hooks import dex, post


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    app = create_app(Settings.from_env(NO_AUTH, sqlite_path=tmp_path_factory.mktemp("store") / "avh-cds.sqlite3"))
    return app.test_client()


def tablets(days: float, unit: dict) -> dict:
    """A once-daily line of 2 tablets for `days` days, its dose in `unit` (the sandbox's Rx View writes {pill})."""
    return {**bounds_duration(days), "doseAndRate": [{"doseQuantity": {"value": 2, **unit}}]}


@pytest.mark.parametrize("unit", [{"unit": "{pill}", "system": UCUM, "code": "{pill}"}, {"unit": "TAB"}])
def test_a_dose_in_tablets_is_a_dose_not_stated_in_mg(client, unit):
    """Sandbox run (polish16): a 30-day draft dosed in tablets. The card said 'daily dose not stated in structured
    form', false: a dose is stated, not in mg. It still counts as unknown, so high (the card fires)."""
    [card] = post(client, hook_request("order-sign", "p3", in_pathway_chart("p3"), [dex("dex-1", tablets(30, unit))]))
    assert card["summary"].startswith("Dexamethasone order for 30 days")
    assert "30 days, daily dose not stated in mg," in card["detail"]
    assert "structured form" not in card["detail"]


def test_a_draft_with_no_dose_quantity_still_states_none_in_structured_form(client):
    """A draft whose dosage gives no dose quantity at all keeps the old words: no structured dose exists."""
    [card] = post(client, hook_request("order-sign", "p3", in_pathway_chart("p3"), [dex("dex-1", bounds_duration(30))]))
    assert "30 days, daily dose not stated in structured form," in card["detail"]


def test_a_draft_orders_why_line_names_it_once(client):
    """Sandbox run (polish16): a draft's "Why am I seeing this?" line read 'Dexamethasone (draft order) (medication
    order, 2026-11-30; MedicationRequest/dex-1)', its kind said twice in two parentheses. Now once: '(draft medication
    order, ...)', in the card and in the explanation; an order on record keeps its line."""
    record = in_pathway_chart("p3")
    body = hook_request("order-sign", "p3", record, [dex("dex-1", dosed(30))])
    [card] = post(client, body)
    day = body["context"]["draftOrders"]["entry"][0]["resource"]["authoredOn"]
    assert f"- dexamethasone (draft medication order, {day}; MedicationRequest/dex-1)" in card["detail"]
    assert "(draft order)" not in card["detail"]
    explained = client.post("/cds-services/avh-order-sign/explain", json=body).json
    [reason] = [t["reason"] for t in explained["topics"] if t["topic"] == "steroid-duration"]
    assert f"dexamethasone (draft medication order, {day}; MedicationRequest/dex-1)" in reason
    assert "(draft order)" not in reason


NO_FIX = "**No shortened order is offered:**"


def test_a_draft_without_an_id_says_why_no_shortened_order_is_offered(client):
    """Hostile review (polish16): a 30-day draft with no id (an update must name it by its id) got a card with no
    suggestion and no word why; a patient under 18 or pregnant gets one. Now the card says it."""
    draft = dex("x", dosed(30))
    del draft["id"]
    [card] = post(client, hook_request("order-sign", "p3", in_pathway_chart("p3"), [draft]))
    assert "suggestions" not in card
    assert f"{NO_FIX} a draft order to change has no id" in card["detail"], card["detail"]


def test_a_changed_order_on_file_says_why_no_shortened_order_is_offered(client):
    """Hostile review (polish16): review16b's case (a changed order on file, dex-1, beside a back-dated 30-day draft):
    deleting dex-1's draft would leave the order as filed, so no fix; the card now says why."""
    filed = dexamethasone(day(3, since=today()), "active", patient_id="p3", id="dex-1", dosage=[dosed(30)])
    drafts = [{**filed, "dosageInstruction": [dosed(5)]},
              {**dexamethasone(day(20, since=today()), "draft", patient_id="p3", id="dex-2"),
               "dosageInstruction": [dosed(30)]}]
    [card] = post(client, hook_request("order-sign", "p3", in_pathway_chart("p3") + [filed], drafts))
    assert "suggestions" not in card
    assert f"{NO_FIX} removing the draft that changes an order on file" in card["detail"], card["detail"]


def test_a_course_already_used_up_says_why_no_shortened_order_is_offered(client):
    """Hostile review (polish16): 13 course days taken and a 1-day draft: nothing is left to shorten the course to,
    no suggestion, and the card said nothing of it."""
    taken = dexamethasone(day(13, since=today()), "completed", patient_id="p3", id="dex-0", dosage=[dosed(13)])
    [card] = post(client, hook_request("order-sign", "p3", in_pathway_chart("p3") + [taken], [dex("dex-1", dosed(1))]))
    assert "suggestions" not in card
    assert f"{NO_FIX} the 13 days of the course are already taken" in card["detail"], card["detail"]


def test_a_shortened_order_offered_gives_no_such_reason(client):
    """The reasons are said only when the fix is withheld: a 30-day draft with an id gets the fix and no reason."""
    [card] = post(client, hook_request("order-sign", "p3", in_pathway_chart("p3"), [dex("dex-1", dosed(30))]))
    assert card["suggestions"] and NO_FIX not in card["detail"]
