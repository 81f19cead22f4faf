"""polish16: the dexamethasone course card's texts as the real CDS Hooks sandbox's drafts show them (a dose in
tablets, a draft's "why" line) and when no shortened order is offered. Each test failed on int16."""
import pytest

from service import create_app
from service.config import Settings
from tests.fhir_records import NO_AUTH, UCUM, bounds_duration, hook_request, in_pathway_chart
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
