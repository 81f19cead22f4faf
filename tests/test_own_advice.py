"""pathway.md section 4: accepting any suggestion of this service and then signing it never draws a warning
from this service's own order checks. End to end: patient-view's cards, then order-sign of every create action."""
import datetime as dt

import pytest

from service.config import PROJECT_ROOT
from service.fhir.fixtures import load_fixtures
from tests.fhir_records import hook_request, stay_on

TODAY = dt.datetime.now(dt.timezone.utc).date()
_clock = stay_on(TODAY)                # the service's clock on that day, whenever the tests run
FIXTURES = {f.name[:2]: f for f in load_fixtures(PROJECT_ROOT / "fhir_fixtures", TODAY)}
# pre-op stable, rapid, recurrence stable and rapid, operated (with and without fixation), child, pregnant,
# lapsed deterioration, unconfirmed compression, operated over a year ago, operated child
PATIENTS = ["01", "03", "04", "23", "24", "06", "07", "31", "12", "36", "34", "22", "40"]


def _post(client, hook, body):
    response = client.post(f"/cds-services/avh-{hook}", json=body)
    assert response.status_code == 200, response.json
    return response.json["cards"]


def _accepted(cards, pid):
    """Every create action of every suggestion, as the draft orders an EHR makes of them (with ids)."""
    drafts = []
    for card in cards:
        for s in card.get("suggestions", []):
            for i, action in enumerate(a for a in s["actions"] if a["type"] == "create"):
                drafts.append({**action["resource"], "id": f"{pid}-{s['uuid'][:8]}-{i}"})
    return drafts


@pytest.mark.parametrize("prefix", PATIENTS)
def test_signing_every_suggestion_draws_no_card(client, prefix):
    fx = FIXTURES[prefix]
    record = [r for r in fx.resources()]
    cards = _post(client, "patient-view", hook_request("patient-view", fx.patient_id, record))
    drafts = _accepted(cards, fx.patient_id)
    assert _post(client, "order-sign", hook_request("order-sign", fx.patient_id, record, drafts)) == []
    assert _post(client, "order-select", hook_request("order-select", fx.patient_id, record, drafts,
                                                      [f"{d['resourceType']}/{d['id']}" for d in drafts])) == []


def test_the_patients_checked_do_get_suggestions_of_every_kind(client):
    """The test above is not vacuous: surgery (two actions), both dexamethasone regimens, MRI, CTA,
    embolization and radiotherapy suggestions are among what it signs."""
    kinds = set()
    for prefix in PATIENTS:
        fx = FIXTURES[prefix]
        cards = _post(client, "patient-view", hook_request("patient-view", fx.patient_id, fx.resources()))
        for d in _accepted(cards, fx.patient_id):
            coding = (d.get("code") or d.get("medicationCodeableConcept"))["coding"]
            assert len(coding) == 1                  # one code from the sets
            kinds.add(coding[0]["code"])
    assert {"63003", "22842", "3264", "36067-7", "ct-angiography-spine", "37243", "33195004"} <= kinds


def test_surgery_suggestion_is_two_orders_and_never_708651002(client):
    fx = FIXTURES["01"]
    cards = _post(client, "patient-view", hook_request("patient-view", fx.patient_id, fx.resources()))
    (surgery,) = [c for c in cards if c["source"]["topic"]["code"] == "surgical-decompression"]
    (suggestion,) = surgery["suggestions"]
    codes = [a["resource"]["code"]["coding"][0]["code"] for a in suggestion["actions"]]
    assert [a["type"] for a in suggestion["actions"]] == ["create", "create"] and codes == ["63003", "22842"]
    assert "708651002" not in str(cards)


def test_the_high_dose_suggestion_runs_13_days():
    from service.clinical.orders import course_days
    from tests.fixture_cards import card
    (high,) = [s for s in card("01", "corticosteroids")["suggestions"] if "96 mg" in s["label"]]
    (action,) = high["actions"]
    assert course_days(action["resource"]) == 13
