"""order-select, order-sign, encounter-discharge: draft-order bundles in and out of scope give exactly the expected cards."""
import json
from pathlib import Path

import jsonschema
import pytest

from service import create_app
from service.config import Settings

from tests.fhir_records import (NO_AUTH, CPT, ICD10CM, SNOMED, UCUM, bounds_duration, condition, day, dexamethasone,
                                draft_dexamethasone, draft_order, hook_request, in_pathway_chart, procedure, today)


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """One app for the module: these tests read cards, not the feedback store."""
    return create_app(Settings.from_env(NO_AUTH, sqlite_path=tmp_path_factory.mktemp("store") / "avh-cds.sqlite3"))


RESPONSE_SCHEMA = json.loads((Path(__file__).parent.parent / "service/api/schemas/response.json").read_text())
SERVICE = {"order-sign": "avh-order-sign", "order-select": "avh-order-select",
           "encounter-discharge": "avh-encounter-discharge"}


def post(client, body):
    response = client.post(f"/cds-services/{SERVICE[body['hook']]}", json=body)
    assert response.status_code == 200, response.json
    jsonschema.validate(response.json, RESPONSE_SCHEMA)
    return response.json["cards"]


def topics(cards):
    return sorted(c["source"]["topic"]["code"] for c in cards)


def surgery(pid, srid="surg-1", **extra):
    return draft_order(CPT, "63046", "Laminectomy, thoracic", patient_id=pid, id=srid, **extra)


def fixation(pid, srid="fix-1", **extra):
    return draft_order(CPT, "22842", "Posterior segmental instrumentation", patient_id=pid, id=srid, **extra)


def embolization(pid, srid="emb-1"):
    return draft_order(CPT, "37243", "Vascular embolization for tumor", patient_id=pid, id=srid)


def dex_days(pid, days, unit="d", mrid="dex-1"):
    return draft_dexamethasone(patient_id=pid, id=mrid, dosage=[bounds_duration(days, unit)])


def metastasis_patient(pid):
    """Cord compression from a metastasis: no hemangioma, out of scope."""
    return [{"resourceType": "Patient", "id": pid, "birthDate": "1950-01-01"},
            condition((ICD10CM, "G95.20", "Spinal cord compression"), onset=day(10, since=today()), patient_id=pid, id=f"{pid}-scc"),
            condition((SNOMED, "94225005", "Secondary malignant neoplasm of vertebral column"), onset=day(10, since=today()), patient_id=pid, id=f"{pid}-met")]


def hemangioma_only_patient(pid):
    """A vertebral hemangioma with no cord compression: out of scope."""
    return [r for r in in_pathway_chart(pid, rapid=True) if not r["id"].endswith("-scc")]


# --- order-sign -------------------------------------------------------------------------------

@pytest.mark.parametrize("extra_record, extra_drafts, expected", [
    ([], [], ["posterior-fixation"]),
    ([], [fixation("p1")], []),                                                            # same draft set
    ([procedure(CPT, "22842", day(1, since=today()), display="Posterior instrumentation", patient_id="p1", id="fx")], [], []),     # done in the episode
    ([procedure(CPT, "22842", day(400, since=today()), display="Posterior instrumentation", patient_id="p1", id="fx")], [], ["posterior-fixation"]),  # old
    ([fixation("p1", "fx-signed", status="active")], [], []),                             # signed order on record
], ids=["no-fixation", "fixation-drafted", "fixation-done", "fixation-of-another-episode", "fixation-ordered"])
def test_surgery_order_needs_posterior_fixation(client, extra_record, extra_drafts, expected):
    body = hook_request("order-sign", "p1", in_pathway_chart("p1") + extra_record, [surgery("p1")] + extra_drafts)
    assert topics(post(client, body)) == expected


def test_posterior_fixation_card_completes_the_draft_order(client):
    draft = surgery("p1", priority="urgent")
    [card] = post(client, hook_request("order-sign", "p1", in_pathway_chart("p1"), [draft]))
    assert card["indicator"] == "warning" and card["summary"].startswith("Spine surgery order for AVH at T7")
    assert "ServiceRequest/surg-1" in card["detail"] and card["selectionBehavior"] == "at-most-one"
    update, create = card["suggestions"]
    [action] = update["actions"]
    assert action["type"] == "update" and update["isRecommended"] is True
    updated = action["resource"]
    assert updated["id"] == "surg-1" and updated["code"] == draft["code"] and updated["priority"] == "urgent"
    assert {"system": CPT, "code": "22842", "display": "Posterior segmental instrumentation; 3 to 6 vertebral segments"} \
        in updated["orderDetail"][-1]["coding"]
    [action] = create["actions"]
    new = action["resource"]
    assert action["type"] == "create" and new["resourceType"] == "ServiceRequest"
    assert new["code"]["coding"] == [{"system": CPT, "code": "22842",
                                      "display": "Posterior segmental instrumentation; 3 to 6 vertebral segments"}]
    assert new["subject"] == {"reference": "Patient/p1"}
    assert new["reasonReference"] == [{"reference": "Condition/p1-hem"}]


def test_accepting_the_update_silences_the_card(client):
    [card] = post(client, hook_request("order-sign", "p1", in_pathway_chart("p1"), [surgery("p1")]))
    updated = card["suggestions"][0]["actions"][0]["resource"]
    assert post(client, hook_request("order-sign", "p1", in_pathway_chart("p1"), [updated])) == []
    created = {**card["suggestions"][1]["actions"][0]["resource"], "id": "fix-new"}    # or the other suggestion
    assert post(client, hook_request("order-sign", "p1", in_pathway_chart("p1"), [surgery("p1"), created])) == []


def test_accepting_the_shortened_course_silences_the_card(client):
    [card] = post(client, hook_request("order-sign", "p3", in_pathway_chart("p3"), [dex_days("p3", 20)]))
    shortened = card["suggestions"][0]["actions"][0]["resource"]
    assert post(client, hook_request("order-sign", "p3", in_pathway_chart("p3"), [shortened])) == []


def test_embolization_order_while_deteriorating_rapidly_is_deferred(client):
    [card] = post(client, hook_request("order-sign", "p2", in_pathway_chart("p2", rapid=True), [embolization("p2")]))
    assert card["source"]["topic"]["code"] == "embolization-deferred"
    assert card["summary"].startswith("Embolization order while the deficit progresses rapidly")
    [suggestion] = card["suggestions"]
    assert suggestion["actions"] == [{"type": "delete", "resourceId": "ServiceRequest/emb-1",
                                      "description": suggestion["label"] + ": ServiceRequest/emb-1"}]
    assert "Rapidly progressive neurologic deficit" in card["detail"]


def test_embolization_order_for_a_stable_patient_is_fine(client):
    assert post(client, hook_request("order-sign", "p2", in_pathway_chart("p2"), [embolization("p2")])) == []


@pytest.mark.parametrize("dosage, extra, expected_days", [
    ([bounds_duration(21)], {}, "21"),
    ([bounds_duration(3, "wk")], {}, "21"),
    ([bounds_duration(1, "mo")], {}, "30"),                                                    # a month is 30 days
    ([{"timing": {"repeat": {"boundsDuration": {"value": 2, "unit": "weeks"}}}}], {}, "14"),   # `unit` text only
    ([{"timing": {"repeat": {"boundsDuration": {"value": 3, "unit": "Weeks", "code": "WEEK"}}}}], {}, "21"),  # odd code
    ([{"timing": {"repeat": {"boundsPeriod": {"start": day(0, since=today()), "end": day(-19, since=today())}}}}], {}, "20"),  # end date inclusive
    ([], {"dispenseRequest": {"expectedSupplyDuration": {"value": 14, "unit": "days", "system": UCUM, "code": "d"}}},
     "14"),
    ([bounds_duration(3, sequence=1), bounds_duration(11, sequence=2)], {}, "14"),              # steps add up
], ids=["21d", "3wk", "1mo", "unit-text", "unit-after-odd-code", "period", "supply", "steps"])
def test_dexamethasone_longer_than_13_days_warns(client, dosage, extra, expected_days):
    draft = draft_dexamethasone(patient_id="p3", id="dex-1", dosage=dosage, **extra)
    [card] = post(client, hook_request("order-sign", "p3", in_pathway_chart("p3"), [draft]))
    assert card["source"]["topic"]["code"] == "steroid-duration"
    assert card["summary"] == f"Dexamethasone order for {expected_days} days exceeds the 13-day course (3 days + 10-day taper)"
    [action] = card["suggestions"][0]["actions"]
    assert action["type"] == "update" and action["resource"]["id"] == "dex-1"
    # The shortened order, posted again, is within the course.
    assert post(client, hook_request("order-sign", "p3", in_pathway_chart("p3"), [action["resource"]])) == []


@pytest.mark.parametrize("dosage, extra", [
    ([bounds_duration(13)], {}),
    ([bounds_duration(1, "wk")], {}),
    ([{"timing": {"repeat": {"boundsPeriod": {"start": day(0, since=today()), "end": day(-12, since=today())}}}}], {}),
    ([bounds_duration(10)], {"dispenseRequest": {"expectedSupplyDuration": {"value": 30, "unit": "d"}}}),  # bounds win
    ([{"sequence": 1, "timing": {"repeat": {"count": 1}}}, bounds_duration(3, sequence=2), bounds_duration(10, sequence=3)], {}),
    ([{"text": "as directed"}], {}),                                                            # no duration stated
], ids=["13d", "1wk", "period-13", "bounds-over-supply", "pathway-regimen", "no-duration"])
def test_dexamethasone_within_the_course_is_silent(client, dosage, extra):
    draft = draft_dexamethasone(patient_id="p3", id="dex-1", dosage=dosage, **extra)
    assert post(client, hook_request("order-sign", "p3", in_pathway_chart("p3"), [draft])) == []


def test_dexamethasone_course_is_capped_step_by_step():
    from service.clinical.orders import course_days, shortened
    order = draft_dexamethasone(patient_id="p", id="d", dosage=[bounds_duration(3, sequence=1), bounds_duration(10, sequence=2),
                                            bounds_duration(7, sequence=3)])
    assert course_days(order) == 20
    short = shortened(order)
    assert course_days(short) == 13 and [d["sequence"] for d in short["dosageInstruction"]] == [1, 2]
    period = draft_dexamethasone(patient_id="p", id="d", dosage=[{"timing": {"repeat": {"boundsPeriod": {"start": "2026-01-01", "end": "2026-01-31"}}}}])
    assert shortened(period)["dosageInstruction"][0]["timing"]["repeat"]["boundsPeriod"] == {"start": "2026-01-01", "end": "2026-01-13"}


def test_all_three_order_warnings_at_once(client):
    drafts = [surgery("p4"), embolization("p4"), dex_days("p4", 20)]
    cards = post(client, hook_request("order-sign", "p4", in_pathway_chart("p4", rapid=True), drafts))
    assert topics(cards) == ["embolization-deferred", "posterior-fixation", "steroid-duration"]
    assert all(c["overrideReasons"] and all(r["display"] for r in c["overrideReasons"]) for c in cards)


@pytest.mark.parametrize("record", [metastasis_patient("p5"), hemangioma_only_patient("p5")], ids=["metastasis", "no-compression"])
@pytest.mark.parametrize("hook", ["order-sign", "order-select"])
def test_out_of_scope_patients_get_no_card(client, record, hook):
    drafts = [surgery("p5"), embolization("p5"), dex_days("p5", 30)]
    body = hook_request(hook, "p5", record, drafts, selections=["ServiceRequest/surg-1", "ServiceRequest/emb-1",
                                                                 "MedicationRequest/dex-1"])
    assert post(client, body) == []


def test_drafts_for_another_patient_or_withdrawn_are_ignored(client):
    drafts = [surgery("someone-else", "s-other"), surgery("p1", "s-revoked", status="revoked")]
    assert post(client, hook_request("order-sign", "p1", in_pathway_chart("p1"), drafts)) == []


def test_dexamethasone_via_contained_medication(client):
    draft = draft_dexamethasone(patient_id="p3", id="dex-1", dosage=[bounds_duration(20)])
    draft.pop("medicationCodeableConcept")
    draft["contained"] = [{"resourceType": "Medication", "id": "m", "code": {"coding": [
        {"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "197582"}]}}]
    draft["medicationReference"] = {"reference": "#m"}
    assert topics(post(client, hook_request("order-sign", "p3", in_pathway_chart("p3"), [draft]))) == ["steroid-duration"]


# --- order-select -----------------------------------------------------------------------------

@pytest.mark.parametrize("selections, expected", [
    (["MedicationRequest/dex-1"], ["steroid-duration"]),
    (["ServiceRequest/surg-1"], ["posterior-fixation"]),
    (["http://ehr.example/fhir/ServiceRequest/emb-1"], ["embolization-deferred"]),
    (["ServiceRequest/surg-1", "MedicationRequest/dex-1"], ["posterior-fixation", "steroid-duration"]),
    (["MedicationRequest/dex-1/_history/3"], ["steroid-duration"]),       # a version of the draft (hostile11)
    (["http://ehr.example/fhir/ServiceRequest/emb-1/_history/1/"], ["embolization-deferred"]),
])
def test_order_select_speaks_only_of_the_selected_orders(client, selections, expected):
    drafts = [surgery("p6"), embolization("p6"), dex_days("p6", 28)]
    body = hook_request("order-select", "p6", in_pathway_chart("p6", rapid=True), drafts, selections)
    assert topics(post(client, body)) == expected


@pytest.mark.parametrize("selections, where", [
    (["ServiceRequest/not-there"], "selections/0"),
    (["MedicationRequest/dex-1", "urn:uuid:0b6f2c8e-1d2a-4b7e-9c3f-5a6d7e8f9a0b"], "selections/1"),
])
@pytest.mark.parametrize("endpoint", ["", "/explain"])
def test_a_selection_naming_no_draft_order_is_a_400_naming_it(client, selections, where, endpoint):
    """Attack (hostile11): order-select whose selections name an order absent from draftOrders (CDS Hooks: the
    selections reference resources in the draftOrders Bundle). It was answered 200 with no card: silence about the
    order the clinician selected, whatever it was."""
    drafts = [surgery("p6"), embolization("p6"), dex_days("p6", 28)]
    body = hook_request("order-select", "p6", in_pathway_chart("p6", rapid=True), drafts, selections)
    answer = client.post(f"/cds-services/avh-order-select{endpoint}", json=body)
    assert answer.status_code == 400
    assert answer.json["error"] == "invalid_request" and where in answer.json["message"]
    assert "names no order in draftOrders" in answer.json["message"]


FULL_URL = "urn:uuid:0b6f2c8e-1d2a-4b7e-9c3f-5a6d7e8f9a0b"


def selected_topics(client, body, endpoint: str) -> list[str]:
    """The topics order-select answers `body` with: of its cards (endpoint ""), or as its /explain names them."""
    if not endpoint:
        return topics(post(client, body))
    answer = client.post(f"/cds-services/avh-order-select{endpoint}", json=body)
    assert answer.status_code == 200
    return answer.json["cards"]


@pytest.mark.parametrize("draft_id", [None, "dex-1"], ids=["no-id", "with-id"])
@pytest.mark.parametrize("endpoint", ["", "/explain"])
def test_order_select_selects_a_draft_by_its_bundle_full_url(client, draft_id, endpoint):
    """review11 (of 526b8b9): a draft order not yet stored may have no id: the draftOrders Bundle names it by its
    entry's fullUrl (urn:uuid:...), the way FHIR references a resource inside a Bundle, and the selection names that
    fullUrl. It was a 400 'names no order in draftOrders' (main: 200 and silence). The fullUrl selects a draft that
    has an id too; the service and its /explain say the same."""
    dex = dex_days("p6", 28, mrid=draft_id)
    if draft_id is None:
        del dex["id"]
    body = hook_request("order-select", "p6", in_pathway_chart("p6"), [surgery("p6"), embolization("p6"), dex],
                        [FULL_URL])
    body["context"]["draftOrders"]["entry"][2]["fullUrl"] = FULL_URL
    assert selected_topics(client, body, endpoint) == ["steroid-duration"]


@pytest.mark.parametrize("selection, full_url, draft_id", [
    ("dex-1", None, "dex-1"),                                          # the id alone ("the FHIR id" of the order)
    ("MedicationRequest/dex-1", "http://ehr.example/fhir/MedicationRequest/dex-1", None),  # a RESTful fullUrl, no id
    ("MedicationRequest/dex-1", "http://ehr.example/fhir/MedicationRequest/dex-1/_history/2", None),
], ids=["bare-id", "restful-full-url", "versioned-full-url"])
@pytest.mark.parametrize("endpoint", ["", "/explain"])
def test_order_select_selects_a_draft_by_its_id_or_restful_full_url(client, selection, full_url, draft_id, endpoint):
    """review11: a selection naming a draft by its id alone, or by the Type/id a RESTful fullUrl of a draft without
    an id ends in (as FHIR resolves a reference inside a Bundle), selects that draft (was a 400 'names no order')."""
    dex = dex_days("p6", 28, mrid=draft_id or "x")
    if draft_id is None:
        del dex["id"]
    body = hook_request("order-select", "p6", in_pathway_chart("p6"), [surgery("p6"), embolization("p6"), dex],
                        [selection])
    if full_url:
        body["context"]["draftOrders"]["entry"][2]["fullUrl"] = full_url
    assert selected_topics(client, body, endpoint) == ["steroid-duration"]


def test_a_restful_full_url_of_another_type_does_not_select_a_draft(client):
    """The Type/id a fullUrl ends in names the draft only when the type is the draft's own."""
    dex = dex_days("p6", 28, mrid="x")
    del dex["id"]
    body = hook_request("order-select", "p6", in_pathway_chart("p6"), [surgery("p6"), dex], ["ServiceRequest/dex-1"])
    body["context"]["draftOrders"]["entry"][1]["fullUrl"] = "http://ehr.example/fhir/ServiceRequest/dex-1"
    answer = client.post("/cds-services/avh-order-select", json=body)
    assert answer.status_code == 400 and "names no order in draftOrders" in answer.json["message"]


def test_order_select_counts_fixation_elsewhere_in_the_draft_set(client):
    body = hook_request("order-select", "p6", in_pathway_chart("p6"), [surgery("p6"), fixation("p6")],
                        ["ServiceRequest/surg-1"])
    assert post(client, body) == []


# --- encounter-discharge ----------------------------------------------------------------------

def operated(pid, **kw):
    return in_pathway_chart(pid, **kw) + [procedure(CPT, "63046", day(5, since=today()), display="Laminectomy", patient_id=pid, id=f"{pid}-op")]


@pytest.mark.parametrize("record, expected", [
    (operated("p7"), ["adjuvant-radiotherapy"]),
    (operated("p7") + [draft_order(SNOMED, "33195004", "Radiotherapy", patient_id="p7", id="rt", status="active")], []),
    (operated("p7") + [draft_order(SNOMED, "33195004", "Radiotherapy", patient_id="p7", id="rt", status="draft")],
     ["adjuvant-radiotherapy"]),                                       # a draft is not a plan
    (operated("p7") + [procedure(CPT, "77412", day(1, since=today()), display="Radiation treatment delivery", patient_id="p7", id="rt")], []),
    (in_pathway_chart("p7"), []),                                           # not operated
    (metastasis_patient("p7") + [procedure(CPT, "63046", day(5, since=today()), display="Laminectomy", patient_id="p7", id="p7-op")], []),
], ids=["no-radiotherapy", "planned", "draft-only", "given", "not-operated", "out-of-scope"])
def test_discharge_after_surgery_needs_radiotherapy(client, record, expected):
    assert topics(post(client, hook_request("encounter-discharge", "p7", record))) == expected


def test_discharge_card_suggests_the_referral(client):
    [card] = post(client, hook_request("encounter-discharge", "p7", operated("p7")))
    assert card["summary"] == "Discharge after AVH surgery (5 days ago) with no radiotherapy planned: refer for 30 Gy/10 fractions"
    [suggestion] = card["suggestions"]
    resource = suggestion["actions"][0]["resource"]
    assert resource["code"]["coding"][0]["code"] == "33195004" and resource["subject"]["reference"] == "Patient/p7"


def test_unreadable_procedures_withhold_the_absence_based_order_check(client):
    body = hook_request("order-sign", "p1", in_pathway_chart("p1"), [surgery("p1"), dex_days("p1", 20)])
    body["prefetch"]["procedures"] = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "exception"}]}
    assert topics(post(client, body)) == ["data-unavailable", "steroid-duration"]
    body = hook_request("encounter-discharge", "p7", operated("p7"))
    body["prefetch"]["procedures"] = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "exception"}]}
    assert topics(post(client, body)) == ["data-unavailable"]


def test_discovery_lists_the_three_order_time_services(client):
    services = {s["id"]: s for s in client.get("/cds-services").json["services"]}
    for hook, sid in SERVICE.items():
        assert services[sid]["hook"] == hook and services[sid]["description"] and services[sid]["title"]
        assert services[sid]["prefetch"]["patient"] == "Patient/{{context.patientId}}"
    assert "22842" in services["avh-order-sign"]["prefetch"]["serviceRequests"]


@pytest.mark.parametrize("hook", ["order-sign", "order-select"])
def test_malformed_draft_orders_are_a_specific_400_or_ignored(client, hook):
    body = hook_request(hook, "p1", in_pathway_chart("p1"), [], ["ServiceRequest/x"])
    body["context"]["draftOrders"] = {"resourceType": "Patient"}
    response = client.post(f"/cds-services/{SERVICE[hook]}", json=body)
    assert response.status_code == 400 and "draftOrders" in response.json["message"]
    body["context"]["draftOrders"] = {"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "ServiceRequest",
                                      "id": "x", "code": {"coding": "not-a-list"}}}, {"resource": {"resourceType": "MedicationRequest",
                                      "medicationCodeableConcept": {"coding": [{"system": 1, "code": ["x"]}]}}},
                                      {"resource": {"resourceType": "ServiceRequest", "status": ["draft"], "id": ["x"]}},
                                      {"resource": {"resourceType": "MedicationRequest", "status": "draft", "contained": [
                                          {"resourceType": "Medication", "id": ["m"]}], "medicationReference": {"reference": "#m"}}}]}
    assert post(client, body) == []
    body["context"]["draftOrders"]["entry"].insert(1, "junk")    # an entry that is not one: a 400 naming it
    response = client.post(f"/cds-services/{SERVICE[hook]}", json=body)
    assert response.status_code == 400 and "draftOrders/entry/1" in response.json["message"]


def test_every_card_of_every_hook_carries_the_override_reasons(client):
    reasons = json.loads((Path(__file__).parent.parent / "cards/override-reasons.json").read_text())["overrideReasons"]
    outage = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "exception"}]}
    bodies = [hook_request("order-sign", "p4", in_pathway_chart("p4", rapid=True), [surgery("p4"), embolization("p4"), dex_days("p4", 20)]),
              hook_request("encounter-discharge", "p7", operated("p7")),
              hook_request("order-sign", "p1", in_pathway_chart("p1"), [surgery("p1")])]
    bodies[2]["prefetch"]["procedures"] = outage      # the "record partly unavailable" card too
    cards = [card for body in bodies for card in post(client, body)]
    assert len(cards) == 5
    for card in cards:
        assert card["overrideReasons"] == reasons
    codes = [r["code"] for r in reasons]
    assert len(set(codes)) == len(codes) >= 4 and all(r["system"] and r["display"] for r in reasons)


# seed-trace.md rows 11, 14, 16 and 25 name order-sign and discharge: the order-time card says what the source says.
@pytest.mark.parametrize("row, hook, record, drafts, topic, says", [
    (11, "order-sign", in_pathway_chart("p8"), [surgery("p8")], "posterior-fixation",
     "Never perform surgery without posterior fixation"),
    (14, "order-sign", in_pathway_chart("p8", rapid=True), [embolization("p8")], "embolization-deferred",
     "proceed directly to surgery without waiting for embolization"),
    (16, "encounter-discharge", operated("p8"), None, "adjuvant-radiotherapy", "Postoperative radiotherapy is mandatory"),
    (25, "order-sign", in_pathway_chart("p8"), [dex_days("p8", 15)], "steroid-duration",
     "Avoid prolonged high-dose steroid courses beyond the initial treatment period"),
])
def test_seed_trace_at_order_time(client, row, hook, record, drafts, topic, says):
    [card] = post(client, hook_request(hook, "p8", record, drafts))
    assert card["source"]["topic"]["code"] == topic
    assert says in card["detail"], f"seed-trace row {row}"


# --- pathway.md v2 section 5 -------------------------------------------------------------------------

def test_course_days_already_taken_count_at_order_time(client):
    """10 days of dexamethasone taken in the episode + 7 more drafted: over the 13-day course."""
    taken = draft_dexamethasone(patient_id="p7", id="dex-on-record", status="active", authoredOn=day(10, since=today()))
    cards = post(client, hook_request("order-sign", "p7", in_pathway_chart("p7") + [taken], [dex_days("p7", 7)]))
    assert topics(cards) == ["steroid-duration"] and "17 days" in cards[0]["summary"]
    (action,) = cards[0]["suggestions"][0]["actions"]
    assert course_days_of(action["resource"]) == 3            # shortened to what is left of the 13 days
    assert post(client, hook_request("order-sign", "p7", in_pathway_chart("p7"), [dex_days("p7", 7)])) == []


def course_days_of(resource):
    from service.clinical.orders import course_days
    return course_days(resource)


def test_a_moderate_draft_dose_on_a_moderate_course_draws_no_warning(client):
    dose = {"doseAndRate": [{"doseQuantity": {"value": 16, "unit": "mg", "system": UCUM, "code": "mg"}}]}
    draft = draft_dexamethasone(patient_id="p8", id="dex-1", dosage=[{**bounds_duration(20), **dose}])
    assert post(client, hook_request("order-sign", "p8", in_pathway_chart("p8"), [draft])) == []
    high = draft_dexamethasone(patient_id="p8", id="dex-1", dosage=[{**bounds_duration(20), "doseAndRate": [
        {"doseQuantity": {"value": 96, "unit": "mg", "system": UCUM, "code": "mg"}}]}])
    assert topics(post(client, hook_request("order-sign", "p8", in_pathway_chart("p8"), [high]))) == ["steroid-duration"]


@pytest.mark.parametrize("end", ["9999-12-31", "9999-12-31T23:59:59-14:00", "0001-01-01"])
def test_dates_at_the_ends_of_the_calendar_are_read_without_overflow(client, end):
    """Hardening: boundsPeriod.end 9999-12-31 once overflowed to a 500."""
    draft = draft_dexamethasone(patient_id="p9", id="dex-1", dosage=[{"timing": {"repeat": {"boundsPeriod": {"start": "0001-01-01",
                                                                                          "end": end}}}}])
    response = client.post("/cds-services/avh-order-sign",
                           json=hook_request("order-sign", "p9", in_pathway_chart("p9"), [draft]))
    assert response.status_code == 200
    expected = [] if end == "0001-01-01" else ["steroid-duration"]
    assert topics(response.json["cards"]) == expected


def test_a_text_only_dexamethasone_draft_is_checked_and_a_topical_or_combined_one_is_not(client):
    text_only = draft_dexamethasone(patient_id="p10", id="dex-1", dosage=[bounds_duration(20)], medicationCodeableConcept={"text": "Dexamethasone 4 mg tablets"})
    topical = draft_dexamethasone(patient_id="p10", id="dex-2", dosage=[bounds_duration(20)], medicationCodeableConcept={"text": "Dexamethasone 0.1% eye drops"})
    assert topics(post(client, hook_request("order-sign", "p10", in_pathway_chart("p10"), [text_only]))) == ["steroid-duration"]
    assert post(client, hook_request("order-sign", "p10", in_pathway_chart("p10"), [topical])) == []
    combined = draft_dexamethasone(patient_id="p10", id="dex-3", dosage=[bounds_duration(20)], medicationCodeableConcept={"text": "tobramycin-dexamethasone"})
    assert post(client, hook_request("order-sign", "p10", in_pathway_chart("p10"), [combined])) == []


def test_discharge_after_surgery_with_resolved_compression_still_needs_radiotherapy(client):
    record = [{**r, "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                                   "code": "resolved"}]}} if r["resourceType"] == "Condition" else r
              for r in in_pathway_chart("p11")] + [procedure(CPT, "63003", day(3, since=today()), display="Laminectomy", patient_id="p11", id="lam"),
                                             procedure(CPT, "22842", day(3, since=today()), display="Instrumentation", patient_id="p11", id="fx")]
    cards = post(client, hook_request("encounter-discharge", "p11", record))
    assert topics(cards) == ["adjuvant-radiotherapy"]


@pytest.mark.parametrize("hook", ["order-sign", "encounter-discharge"])
def test_an_unreadable_compression_is_named_at_order_time_too(client, hook):
    record = [{**r, "severityLevel": "x"} if r["id"].endswith("-scc") else r for r in in_pathway_chart("p12")]
    cards = post(client, hook_request(hook, "p12", record, [surgery("p12")] if hook == "order-sign" else None))
    assert topics(cards) == ["data-unavailable"] and "Condition/p12-scc" in cards[0]["summary"]


def test_no_shortening_is_offered_when_the_course_is_already_used_up(client):
    taken = draft_dexamethasone(patient_id="p13", id="dex-on-record", status="active", authoredOn=day(15, since=today()))
    [card] = post(client, hook_request("order-sign", "p13", in_pathway_chart("p13") + [taken], [dex_days("p13", 3)]))
    assert card["source"]["topic"]["code"] == "steroid-duration" and "suggestions" not in card


# --- section 1 at order time and discharge: a competing cause leaves only the differential card -----------

def competing(pid):
    return condition((ICD10CM, "C79.51", "Secondary malignant neoplasm of bone"), onset=day(10, since=today()),
                     patient_id=pid, id=f"{pid}-met")


@pytest.mark.parametrize("hook, record, drafts", [
    ("encounter-discharge", operated("p14") + [competing("p14")], None),
    ("order-sign", in_pathway_chart("p14", rapid=True) + [competing("p14")],
     [surgery("p14"), embolization("p14"), dex_days("p14", 20)]),
    ("order-sign", operated("p14") + [competing("p14")], [surgery("p14"), dex_days("p14", 20)]),
], ids=["discharge-operated", "order-sign-pre-operative", "order-sign-operated"])
def test_a_competing_cause_silences_the_order_time_and_discharge_checks(client, hook, record, drafts):
    """pathway.md section 1: while a competing cause is on record only differential-diagnosis fires, as on the
    chart; the order-time and discharge checks (section 5) are for patients in the pathway."""
    assert post(client, hook_request(hook, "p14", record, drafts)) == []


@pytest.mark.parametrize("status", ["resolved", "refuted"])
def test_a_competing_cause_no_longer_active_or_refuted_leaves_the_discharge_check(client, status):
    key, system = (("clinicalStatus", "http://terminology.hl7.org/CodeSystem/condition-clinical") if status == "resolved"
                   else ("verificationStatus", "http://terminology.hl7.org/CodeSystem/condition-ver-status"))
    gone = {**competing("p15"), key: {"coding": [{"system": system, "code": status}]}}
    assert topics(post(client, hook_request("encounter-discharge", "p15", operated("p15") + [gone]))) == [
        "adjuvant-radiotherapy"]


# --- absurd but valid durations (pathway.md section 5): read, warned about, never a crash --------------------

def quantity(value, code):
    return {"value": value, "unit": code, "system": UCUM, "code": code}


def bounded(value, code, sequence=None):
    line = {"timing": {"repeat": {"boundsDuration": quantity(value, code)}}}
    return {**line, "sequence": sequence} if sequence is not None else line


@pytest.mark.parametrize("dosage, extra, says", [
    ([bounded(1e9, "a")], {}, "at least 3652059 days"),                   # a billion years
    ([bounded(1e9 * 365.25, "d")], {}, "at least 3652059 days"),
    ([bounded(1e12, "wk")], {}, "at least 3652059 days"),
    ([bounded(1e308, "mo"), bounded(1e308, "mo", sequence=2)], {}, "at least 3652059 days"),   # adds up past float
    ([{"timing": {"repeat": {"boundsPeriod": {"start": "0001-01-01", "end": "9999-12-31"}, "frequency": 1e300,
                             "period": 1e-300, "periodUnit": "d"}}}], {}, "at least 3652059 days"),
    ([{"text": "as directed"}], {"dispenseRequest": {"expectedSupplyDuration": quantity(1e300, "d")}},
     "at least 3652059 days"),
    ([bounded(1, "a")], {}, "365 days"),                                    # a year is read (365 days)
], ids=["1e9-years", "days", "weeks", "overflowing-steps", "calendar-period-absurd-repeat", "supply", "one-year"])
def test_an_absurdly_long_dexamethasone_draft_warns(client, dosage, extra, says):
    draft = draft_dexamethasone(patient_id="p16", id="dex-1", dosage=dosage, **extra)
    response = client.post("/cds-services/avh-order-sign",
                           json=hook_request("order-sign", "p16", in_pathway_chart("p16"), [draft]))
    assert response.status_code == 200
    [card] = response.json["cards"]
    assert card["source"]["topic"]["code"] == "steroid-duration" and says in card["summary"]
    assert len(card["summary"]) < 140
    # the shortened order the card offers passes the same check
    [action] = card["suggestions"][0]["actions"]
    assert course_days_of(action["resource"]) == 13
    assert post(client, hook_request("order-sign", "p16", in_pathway_chart("p16"), [action["resource"]])) == []


@pytest.mark.parametrize("dosage", [[bounded(-20, "d")], [bounded(20, "parsec")], [bounded("20", "d")]],
                         ids=["negative", "unknown-unit", "string"])
def test_a_dexamethasone_duration_that_cannot_be_read_draws_no_warning(client, dosage):
    draft = draft_dexamethasone(patient_id="p16", id="dex-1", dosage=dosage)
    assert post(client, hook_request("order-sign", "p16", in_pathway_chart("p16"), [draft])) == []


def test_durations_beyond_floating_point_are_held_at_the_calendar():
    from service.clinical.orders import CALENDAR_DAYS, course_days
    assert CALENDAR_DAYS == 3652059
    assert course_days({"dosageInstruction": [bounded(10 ** 400, "d")]}) == CALENDAR_DAYS
    assert course_days({"dosageInstruction": [bounded(float("inf"), "d")]}) == CALENDAR_DAYS
    assert course_days({"dosageInstruction": [bounded(float("nan"), "d")]}) is None


# --- review orders13 ----------------------------------------------------------------------------

@pytest.mark.parametrize("record, drafts, expected", [
    # "do not perform the instrumentation" is no instrumentation: laminectomy without stabilization
    (in_pathway_chart("p1"), [surgery("p1"), fixation("p1", doNotPerform=True)], ["posterior-fixation"]),
    (in_pathway_chart("p1"), [surgery("p1", doNotPerform=True)], []),
    (in_pathway_chart("p1", rapid=True), [embolization("p1") | {"doNotPerform": True}], []),
    (in_pathway_chart("p1"), [draft_dexamethasone(patient_id="p1", id="dex-1", dosage=[bounds_duration(20)],
                                                  doNotPerform=True)], []),
], ids=["fixation-not-to-be-done", "surgery-not-to-be-done", "embolization-not-to-be-done", "dex-not-to-be-given"])
def test_a_draft_that_says_do_not_perform_is_no_order(client, record, drafts, expected):
    """doNotPerform true: the draft forbids the act (FHIR R4 ServiceRequest/MedicationRequest); it neither asks
    for it (no warning about it) nor supplies it (no posterior instrumentation in the draft set)."""
    assert topics(post(client, hook_request("order-sign", "p1", record, drafts))) == expected


def unconfirmed_compression(pid, status="provisional", rapid=True):
    return [r | {"verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                                                    "code": status}]}} if r["id"].endswith("-scc") else r
            for r in in_pathway_chart(pid, rapid=rapid)]


@pytest.mark.parametrize("status", ["provisional", "differential", "unconfirmed"])
@pytest.mark.parametrize("hook", ["order-sign", "order-select"])
def test_an_unconfirmed_compression_draws_no_order_time_card(client, hook, status):
    """pathway.md section 1: while the compression is unconfirmed only corticosteroids, spine-mri and
    differential-diagnosis fire (no surgery, embolization or steroid-course advice), at order time as on the chart."""
    drafts = [surgery("p1"), embolization("p1"), dex_days("p1", 20)]
    body = hook_request(hook, "p1", unconfirmed_compression("p1", status), drafts,
                        selections=["ServiceRequest/surg-1", "ServiceRequest/emb-1", "MedicationRequest/dex-1"])
    assert post(client, body) == []
    confirmed = hook_request(hook, "p1", in_pathway_chart("p1", rapid=True), drafts, selections=body["context"].get("selections"))
    assert topics(post(client, confirmed)) == ["embolization-deferred", "posterior-fixation", "steroid-duration"]


def test_surgery_under_way_silences_the_embolization_deferral_at_order_time(client):
    """pathway.md section 1: a decompression in progress silences every pre-operative card, embolization-deferred
    among them, at order time as on the chart."""
    record = in_pathway_chart("p1", rapid=True) + [
        {"resourceType": "Procedure", "id": "dec-now", "status": "in-progress", "subject": {"reference": "Patient/p1"},
         "code": {"coding": [{"system": CPT, "code": "63046"}], "text": "Laminectomy"},
         "performedDateTime": day(0, since=today())}]
    assert post(client, hook_request("order-sign", "p1", record, [embolization("p1")])) == []


DEX_MEDICATION = {"resourceType": "Medication", "id": "dex-med",
                  "code": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "3264",
                                       "display": "dexamethasone"}]}}


def referring_dexamethasone(reference):
    """A 20-day draft whose drug is only a medicationReference."""
    draft = draft_dexamethasone(patient_id="p3", id="dex-1", dosage=[bounds_duration(20)])
    draft.pop("medicationCodeableConcept")
    return draft | {"medicationReference": {"reference": reference}}


def test_dexamethasone_via_a_medication_the_bundle_names_by_full_url_or_absolute_url(client):
    """pathway.md section 2: the drug may be a medicationReference to a Medication sent along; a Bundle names an
    entry by its fullUrl (urn:uuid:..., a Medication not stored yet has no id), and a reference may be absolute."""
    body = hook_request("order-sign", "p3", in_pathway_chart("p3"), [referring_dexamethasone("urn:uuid:5f0e0a41-8c1b-4e8e-9c55-0d1f9a2b3c4d")])
    body["context"]["draftOrders"]["entry"].append(
        {"fullUrl": "urn:uuid:5f0e0a41-8c1b-4e8e-9c55-0d1f9a2b3c4d", "resource": {k: v for k, v in DEX_MEDICATION.items() if k != "id"}})
    assert topics(post(client, body)) == ["steroid-duration"]
    body = hook_request("order-sign", "p3", in_pathway_chart("p3"),
                        [referring_dexamethasone("https://ehr.example/fhir/Medication/dex-med/_history/2"), DEX_MEDICATION])
    assert topics(post(client, body)) == ["steroid-duration"]


def test_dexamethasone_via_a_medication_sent_in_the_prefetch(client):
    """The prefetch templates include the Medications the orders on record name (_include=MedicationRequest:medication):
    a draft naming one of those is read through it, as an order on record is."""
    body = hook_request("order-sign", "p3", in_pathway_chart("p3"), [referring_dexamethasone("Medication/dex-med")])
    body["prefetch"]["medicationRequests"]["entry"].append({"resource": DEX_MEDICATION, "search": {"mode": "include"}})
    assert topics(post(client, body)) == ["steroid-duration"]


@pytest.mark.parametrize("value, unit, expected", [
    (4000, "ug", []), (4000, "mcg", []), (0.004, "g", []), (4, " mg ", []), (0.096, "g", ["steroid-duration"]),
], ids=["4000ug", "4000mcg", "0.004g", "spaced-mg", "0.096g"])
def test_a_draft_dose_in_g_or_micrograms_is_read_as_the_record_reads_it(client, value, unit, expected):
    """The dose rule of section 4 at order time: a draft stating 4 mg/day as 4000 ug is a moderate dose, as the
    same dose on record is (facts.MILLIGRAMS_IN); it was read as unknown, so a 20-day 4 mg course drew a warning."""
    dose = {"doseAndRate": [{"doseQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit}}]}
    draft = draft_dexamethasone(patient_id="p8", id="dex-1", dosage=[{**bounds_duration(20), **dose}])
    assert topics(post(client, hook_request("order-sign", "p8", in_pathway_chart("p8"), [draft]))) == expected


def medication_coded(pid, mrid, system, code, display):
    """A MedicationRequest whose 'medication' carries a procedure code (an EHR's misfiled order)."""
    return {"resourceType": "MedicationRequest", "id": mrid, "status": "draft", "intent": "order",
            "subject": {"reference": f"Patient/{pid}"}, "medicationCodeableConcept": concept(system, code, display)}


def concept(system, code, display):
    return {"coding": [{"system": system, "code": code, "display": display}], "text": display}


@pytest.mark.parametrize("record, drafts, expected", [
    (in_pathway_chart("p1"), [medication_coded("p1", "m-surg", CPT, "63046", "Laminectomy")], []),
    (in_pathway_chart("p1", rapid=True), [medication_coded("p1", "m-emb", CPT, "37243", "Embolization")], []),
    (in_pathway_chart("p1"), [surgery("p1"), medication_coded("p1", "m-fix", CPT, "22842", "Instrumentation")],
     ["posterior-fixation"]),
], ids=["surgery-as-medication", "embolization-as-medication", "instrumentation-as-medication"])
def test_only_a_service_request_is_a_surgery_embolization_or_instrumentation_draft(client, record, drafts, expected):
    """pathway.md section 5: a spine-surgery draft is a draft ServiceRequest coded in the decompression set; a
    MedicationRequest is read for its drug only (dexamethasone), whatever codes its medication carries."""
    assert topics(post(client, hook_request("order-sign", "p1", record, drafts))) == expected


@pytest.mark.parametrize("subject, expected", [
    ("Patient/p9/_history/1", []), ("https://ehr.example/fhir/Patient/p9/_history/4", []),
    ("Patient/p1/_history/1", ["posterior-fixation"]),
], ids=["other-patient-version", "other-patient-absolute-version", "this-patient-version"])
def test_a_draft_naming_a_version_of_another_patient_is_ignored(client, subject, expected):
    """A reference may name a version (Patient/p9/_history/1): the patient is p9, not 'no patient' (which was read
    as this one)."""
    draft = surgery("p1") | {"subject": {"reference": subject}}
    assert topics(post(client, hook_request("order-sign", "p1", in_pathway_chart("p1"), [draft]))) == expected


def test_a_draft_sent_twice_is_one_order(client):
    """The same draft (Type/id) twice in draftOrders is one order: named once, one update action (two updates of
    one resource in one suggestion would leave the EHR to pick one)."""
    [card] = post(client, hook_request("order-sign", "p3", in_pathway_chart("p3"), [dex_days("p3", 20), dex_days("p3", 20)]))
    [suggestion] = card["suggestions"]
    assert [a["type"] for a in suggestion["actions"]] == ["update"]
    assert card["detail"].count("(MedicationRequest/dex-1)") == 1
    [card] = post(client, hook_request("order-sign", "p1", in_pathway_chart("p1"), [surgery("p1"), surgery("p1")]))
    assert [a["type"] for a in card["suggestions"][0]["actions"]] == ["update"]


def test_a_dexamethasone_draft_without_an_id_gets_no_update_it_could_not_apply(client):
    """An update names the resource it replaces by its id: a draft without one (named by a urn:uuid fullUrl) gets the
    warning and no 'shorten' update, as the posterior-fixation and embolization cards give none for such drafts."""
    draft = dex_days("p3", 20)
    del draft["id"]
    [card] = post(client, hook_request("order-sign", "p3", in_pathway_chart("p3"), [draft]))
    assert card["source"]["topic"]["code"] == "steroid-duration" and "suggestions" not in card


def dosed(days, mg):
    return {**bounds_duration(days), "doseAndRate": [{"doseQuantity": {"value": mg, "unit": "mg", "system": UCUM, "code": "mg"}}]}


def test_the_order_time_steroid_card_tells_the_days_taken_from_the_days_drafted_and_names_the_dose(client):
    """Section 4: the card names the course days and, when known, the daily dose. With 10 days of the episode's
    course taken, a 5-day draft makes a 15-day course: the order itself does not run 15 days."""
    taken = dexamethasone(day(10, since=today()), "active", patient_id="p3", id="dex-prior", dosage=[dosed(30, 96)])
    draft = draft_dexamethasone(patient_id="p3", id="dex-1", dosage=[dosed(5, 8)])
    [card] = post(client, hook_request("order-sign", "p3", in_pathway_chart("p3") + [taken], [draft]))
    assert card["summary"] == ("Dexamethasone course of 15 days with this order (10 already taken): beyond the 13-day "
                               "course (3 days + 10-day taper)")
    assert "adds 5 days to 10 days of this episode's course already taken: 15 days in all, up to 96 mg/day" \
        in card["detail"]
    [card] = post(client, hook_request("order-sign", "p3", in_pathway_chart("p3"), [draft_dexamethasone(
        patient_id="p3", id="dex-1", dosage=[dosed(20, 96)])]))
    assert card["summary"] == "Dexamethasone order for 20 days exceeds the 13-day course (3 days + 10-day taper)"
    assert "runs for 20 days, up to 96 mg/day, longer than the 13-day initial course" in card["detail"]


def test_a_shortened_line_says_so_in_its_free_text(client):
    """The 'shorten' update cuts a dosage line's structured duration; its free-text sig ('for 20 d') would still tell
    the pharmacist and the patient the old length: the text says the line was shortened, and to how long."""
    [card] = post(client, hook_request("order-sign", "p3", in_pathway_chart("p3"), [dex_days("p3", 20)]))
    [dosage] = card["suggestions"][0]["actions"][0]["resource"]["dosageInstruction"]
    assert dosage["timing"]["repeat"]["boundsDuration"]["value"] == 13
    assert dosage["text"] == "for 20 d (shortened to 13 days)"


def test_a_line_shortened_twice_says_its_last_length_once(client):
    """A draft that is itself an earlier shortening (its sig already says '(shortened to 13 days)'), shortened again
    after days taken: the sig tells the new length alone, not both one after the other."""
    draft = dex_days("p3", 20)
    draft["dosageInstruction"][0]["text"] = "for 20 d (shortened to 16 days)"
    [card] = post(client, hook_request("order-sign", "p3", in_pathway_chart("p3"), [draft]))
    [dosage] = card["suggestions"][0]["actions"][0]["resource"]["dosageInstruction"]
    assert dosage["text"] == "for 20 d (shortened to 13 days)"


PREGNANT = {"resourceType": "Condition", "id": "p3-preg", "subject": {"reference": "Patient/p3"},
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
            "code": {"coding": [{"system": ICD10CM, "code": "Z33.1", "display": "Pregnant state, incidental"}]},
            "onsetDateTime": day(60, since=today())}


@pytest.mark.parametrize("record, says", [
    (in_pathway_chart("p3", birth=day(3650, since=today())), "the source gives adult doses only"),
    ([{k: v for k, v in r.items() if k != "birthDate"} for r in in_pathway_chart("p3")], "the source gives adult doses only"),
    (in_pathway_chart("p3") + [PREGNANT], "the source does not address dexamethasone in pregnancy"),
], ids=["child", "age-unknown", "pregnant"])
def test_no_one_click_shortened_dexamethasone_order_for_a_child_or_in_pregnancy(client, record, says):
    """pathway.md section 4: under 18, age unknown or pregnant, no dexamethasone suggestion / one-click order, and the
    card says why; the 13-day course is the source's adult regimen. The warning itself still fires."""
    [card] = post(client, hook_request("order-sign", "p3", record, [dex_days("p3", 20)]))
    assert card["source"]["topic"]["code"] == "steroid-duration"
    assert "suggestions" not in card and "selectionBehavior" not in card
    assert says in card["detail"]


# --- the draft set's dexamethasone course (pathway.md section 5 over several drafts) ------------------------------

def period(start_days: int, end_days: int, mg: float | None = 96) -> dict:
    """A once-daily line from today + start_days to today + end_days, both dates included."""
    line = {"timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d", "boundsPeriod": {
        "start": day(-start_days, since=today()), "end": day(-end_days, since=today())}}}}
    if mg is not None:
        line["doseAndRate"] = [{"doseQuantity": {"value": mg, "unit": "mg", "system": UCUM, "code": "mg"}}]
    return line


def dex(mrid, *dosage, pid="p3"):
    return draft_dexamethasone(patient_id=pid, id=mrid, dosage=list(dosage))


def signed_as_suggested(drafts, card):
    """The draft set after the card's suggestion is accepted: each update replaces its draft, each delete removes it."""
    [suggestion] = card["suggestions"]
    updated = {a["resource"]["id"]: a["resource"] for a in suggestion["actions"] if a["type"] == "update"}
    deleted = {a["resourceId"] for a in suggestion["actions"] if a["type"] == "delete"}
    assert len(updated) + len(deleted) == len(suggestion["actions"])
    return [updated.get(d["id"], d) for d in drafts if f"MedicationRequest/{d['id']}" not in deleted]


def test_dexamethasone_drafts_one_after_another_add_up(client):
    """3 days at 96 mg/day now, then a taper drafted apart from it for today + 3 to today + 13 (11 days): 14 days
    together, past the 13-day course, though neither order alone is (main: silent). The card names both drafts and
    the total; its one-click shortening cuts the taper, and signing what it suggests draws no card."""
    drafts = [dex("dex-1", dosed(3, 96)), dex("dex-2", period(3, 13, mg=8))]
    [card] = post(client, hook_request("order-sign", "p3", in_pathway_chart("p3"), drafts))
    assert card["source"]["topic"]["code"] == "steroid-duration"
    assert card["summary"] == "Dexamethasone orders together run 14 days: beyond the 13-day course (3 days + 10-day taper)"
    assert "The draft orders together run for 14 days, from the earliest start to the latest end" in card["detail"]
    assert f"(MedicationRequest/dex-1): 3 days from {day(since=today())}" in card["detail"]
    assert f"(MedicationRequest/dex-2): 11 days from {day(-3, since=today())}" in card["detail"]
    assert "up to 96 mg/day" in card["detail"]
    [suggestion] = card["suggestions"]
    [action] = suggestion["actions"]
    assert action["type"] == "update" and action["resource"]["id"] == "dex-2"
    assert action["resource"]["dosageInstruction"][0]["timing"]["repeat"]["boundsPeriod"]["end"] == \
        day(-12, since=today())
    assert post(client, hook_request("order-sign", "p3", in_pathway_chart("p3"), signed_as_suggested(drafts, card))) == []


@pytest.mark.parametrize("drafts", [
    [dex("dex-1", dosed(3, 96)), dex("dex-2", period(3, 12, mg=8))],
    [dex("dex-1", period(0, 2)), dex("dex-2", period(3, 12, mg=8))],
    [dex("dex-1", {"sequence": 1, "timing": {"repeat": {"count": 1}}}, period(0, 2)), dex("dex-2", period(3, 12, mg=None))],
    [dex("dex-2", period(3, 12, mg=8)), dex("dex-1", dosed(3, 96))],
], ids=["undated-then-dated", "both-dated", "bolus-and-unstated-taper-dose", "taper-sent-first"])
def test_the_recommended_regimen_split_into_two_drafts_is_silent(client, drafts):
    """96 mg/day for 3 days, then a 10-day taper drafted as a second order starting after it: 13 days, not more."""
    assert post(client, hook_request("order-sign", "p3", in_pathway_chart("p3"), drafts)) == []


def test_dexamethasone_drafts_side_by_side_are_not_summed(client):
    """Two undated 10-day drafts both start today: 10 days together, not 20. A 20-day one beside a 3-day one is a
    20-day course, the card naming both drafts."""
    assert post(client, hook_request("order-sign", "p3", in_pathway_chart("p3"),
                                     [dex("dex-1", dosed(10, 96)), dex("dex-2", dosed(10, 96))])) == []
    drafts = [dex("dex-1", dosed(20, 96)), dex("dex-2", dosed(3, 96))]
    [card] = post(client, hook_request("order-sign", "p3", in_pathway_chart("p3"), drafts))
    assert card["summary"] == "Dexamethasone orders together run 20 days: beyond the 13-day course (3 days + 10-day taper)"
    assert "MedicationRequest/dex-2" in card["detail"]
    [action] = card["suggestions"][0]["actions"]
    assert action["resource"]["id"] == "dex-1"
    assert post(client, hook_request("order-sign", "p3", in_pathway_chart("p3"), signed_as_suggested(drafts, card))) == []


def test_a_draft_whose_duration_cannot_be_read_is_left_out_of_the_course(client):
    """Section 5: a duration that cannot be read draws no warning, and adds no days to the other drafts'."""
    unreadable = dex("dex-2", {"text": "as directed", "timing": {"repeat": {"boundsPeriod": {
        "start": day(-10, since=today())}}}})
    assert post(client, hook_request("order-sign", "p3", in_pathway_chart("p3"), [dex("dex-1", dosed(10, 96)), unreadable])) == []
    drafts = [dex("dex-1", dosed(3, 96)), dex("dex-3", period(3, 13, mg=8)), unreadable]
    [card] = post(client, hook_request("order-sign", "p3", in_pathway_chart("p3"), drafts))
    assert "run 14 days" in card["summary"] and "MedicationRequest/dex-2" not in card["detail"]
    assert post(client, hook_request("order-sign", "p3", in_pathway_chart("p3"), signed_as_suggested(drafts, card))) == []


def test_dexamethasone_drafts_together_at_a_moderate_dose_are_silent(client):
    """The dose rule of section 4 still decides: a 20-day course at 8 mg/day on every day draws no warning; a high
    dose on some day of it does."""
    low = [dex("dex-1", dosed(10, 8)), dex("dex-2", period(10, 19, mg=8))]
    assert post(client, hook_request("order-sign", "p3", in_pathway_chart("p3"), low)) == []
    high = [dex("dex-1", dosed(3, 96)), dex("dex-2", period(3, 19, mg=8))]
    assert topics(post(client, hook_request("order-sign", "p3", in_pathway_chart("p3"), high))) == ["steroid-duration"]


@pytest.mark.parametrize("drafts, taken, types", [
    ([dex("dex-1", dosed(13, 96)), dex("dex-2", period(13, 17))], 0, ["delete"]),      # starts when the course ends
    ([dex("dex-1", dosed(5, 96)), dex("dex-2", period(5, 9))], 5, ["update"]),
    ([dex("dex-1", dosed(3, 96)), dex("dex-2", period(3, 13)), dex("dex-3", period(13, 20))], 0, ["update", "delete"]),
    ([dex("dex-1", dosed(20, 96)), dex("dex-2", dosed(15, 96)), dex("dex-3", dosed(2, 96))], 0, ["update", "update"]),
    ([dex("dex-1", {**period(0, 2), "timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d", "boundsPeriod": {
        "start": f"{day(since=today())}T08:00:17+02:00", "end": f"{day(-3, since=today())}T08:00:17+02:00"}}}},
      {"sequence": 2, "timing": {"repeat": {"boundsDuration": {"value": 9.333, "unit": "d"}}}}),
      dex("dex-2", dosed(12, 96)), dex("dex-3", period(9, 16))], 2, ["update", "update", "update"]),   # odd instants
], ids=["delete-the-later", "after-days-taken", "shorten-and-delete", "side-by-side", "fractional-starts"])
def test_signing_the_shortened_course_of_several_drafts_draws_no_card(client, drafts, taken, types):
    """pathway.md section 4: accepting a suggestion then signing it never draws a warning from this service's own
    checks. The one-click shortening of several drafts cuts each one running past the course's end there, and
    removes each one that would start after it."""
    record = in_pathway_chart("p3")
    if taken:
        record.append(dexamethasone(day(taken, since=today()), "active", patient_id="p3", id="dex-prior",
                                    dosage=[dosed(30, 96)]))
    [card] = post(client, hook_request("order-sign", "p3", record, drafts))
    assert [a["type"] for a in card["suggestions"][0]["actions"]] == types
    assert post(client, hook_request("order-sign", "p3", record, signed_as_suggested(drafts, card))) == []


def test_no_shortening_of_several_drafts_when_one_to_change_has_no_id(client):
    """An update or delete names its draft by id: when a draft that would have to change has none, no suggestion
    (what is left would draw the card again); one without an id that needs no change does not matter."""
    second = dex("x", period(3, 13, mg=8))
    del second["id"]
    [card] = post(client, hook_request("order-sign", "p3", in_pathway_chart("p3"), [dex("dex-1", dosed(3, 96)), second]))
    assert card["source"]["topic"]["code"] == "steroid-duration" and "suggestions" not in card
    first = dex("x", dosed(3, 96))
    del first["id"]
    drafts = [first, dex("dex-2", period(3, 13, mg=8))]
    [card] = post(client, hook_request("order-sign", "p3", in_pathway_chart("p3"), drafts))
    [action] = card["suggestions"][0]["actions"]
    assert action["resource"]["id"] == "dex-2"


@pytest.mark.parametrize("selections, expected", [
    (["MedicationRequest/dex-2"], ["steroid-duration"]),
    (["MedicationRequest/dex-1"], ["steroid-duration"]),
    (["ServiceRequest/surg-1"], ["posterior-fixation"]),
])
def test_order_select_counts_the_other_dexamethasone_drafts_of_the_set(client, selections, expected):
    """order-select: the selected draft's course is the draft set's (the other drafts are signed with it), so
    selecting the taper of a 14-day course in two drafts speaks; selecting another order does not."""
    drafts = [surgery("p3"), dex("dex-1", dosed(3, 96)), dex("dex-2", period(3, 13, mg=8))]
    assert topics(post(client, hook_request("order-select", "p3", in_pathway_chart("p3"), drafts, selections))) == expected


@pytest.mark.parametrize("status, expected", [
    ("stopped", ["steroid-duration"]), ("completed", ["steroid-duration"]),      # given: its days count (section 3)
    ("cancelled", []), ("entered-in-error", []),                                  # never given: they do not
])
def test_stopping_the_ongoing_dexamethasone_order_while_signing_a_new_one_keeps_the_days_taken(client, status,
                                                                                                  expected):
    """Attack (orders14): the ongoing order (10 days taken) sent in draftOrders as stopped, as an EHR discontinues
    an order it replaces, with a new 10-day order: a 20-day course. The stopped draft took the order off the record,
    and with it the days taken: no card (the new order alone, the old one left on, drew one). A draft that withdraws
    an order is what became of it, read as section 3 reads orders."""
    prior = dexamethasone(day(10, since=today()), "active", patient_id="p3", id="dex-prior", dosage=[dosed(30, 96)])
    record = in_pathway_chart("p3") + [prior]
    cards = post(client, hook_request("order-sign", "p3", record, [{**prior, "status": status}, dex("dex-new", dosed(10, 96))]))
    assert topics(cards) == expected
    if expected:
        assert cards[0]["summary"].startswith("Dexamethasone course of 20 days with this order (10 already taken)")
        assert "MedicationRequest/dex-prior" in cards[0]["detail"]


def test_revoking_the_instrumentation_order_while_signing_the_surgery_still_draws_the_fixation_card(client):
    """A revoked instrumentation order is not ordered (section 3), whether the record or the draft set says so."""
    ordered = fixation("p1", "fx-signed", status="active")
    record = in_pathway_chart("p1") + [ordered]
    assert topics(post(client, hook_request("order-sign", "p1", record, [surgery("p1")]))) == []
    assert topics(post(client, hook_request("order-sign", "p1", record, [surgery("p1"), {**ordered, "status": "revoked"}]))) == \
        ["posterior-fixation"]


def test_a_dosage_period_that_ends_before_it_starts_cannot_be_read(client):
    """Attack (orders14): a draft whose boundsPeriod ends before it starts (FHIR's per-1 forbids it), 100 days back,
    beside an undated 10-day draft: the course ran from its start, 110 days, a card about an order of 10 days. Such
    a period cannot be read (section 5: no warning, nothing added), and states no start for the draft's other lines."""
    backwards = {"timing": {"repeat": {"boundsPeriod": {"start": day(100, since=today()), "end": day(200, since=today())}}}}
    for second in (dex("dex-2", backwards), dex("dex-2", backwards, bounds_duration(10))):
        assert post(client, hook_request("order-sign", "p3", in_pathway_chart("p3"), [dex("dex-1", dosed(10, 96)), second])) == []
