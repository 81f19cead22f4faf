""""Why no card?": `avh-cds explain` and POST /cds-services/<id>/explain (development servers only).

The explanation must agree with the cards the service answers for the same request, name the record entry
that silenced a topic, and exist only with authentication off."""
import json

import pytest

from service import create_app
from service.cli import main
from service.config import Settings
from service.fhir.fixtures import load_fixtures
from service.fhir.replay import InProcess, hook_request, prefetch_templates
from tests.browser import LiveServer
from tests.fhir_records import (CPT, ICD10CM, SNOMED, bounds_duration, condition, day, draft_dexamethasone,
                                draft_order, in_pathway_chart, procedure, today)
from tests.fhir_records import hook_request as order_request

FIXTURES = Settings().fixtures_dir
EXPLAIN = "/cds-services/avh-patient-view/explain"
INVOKE = "/cds-services/avh-patient-view"
FAILED = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "timeout"}]}


@pytest.fixture(scope="module")
def transport(tmp_path_factory):
    app = create_app(Settings.from_env({"AVH_CDS_AUTH": "off", "AVH_CDS_LOG_LEVEL": "ERROR"}, fixture_fhir=True,
                                       sqlite_path=tmp_path_factory.mktemp("explain") / "avh-cds.sqlite3"))
    return InProcess(app)


def request_for(transport, name: str) -> dict:
    [fixture] = [f for f in load_fixtures(FIXTURES) if f.name == name]
    return hook_request(fixture, prefetch_templates(transport))


def reasons(explanation: dict) -> dict[str, tuple[bool, str]]:
    return {t["topic"]: (t["fired"], t["reason"]) for t in explanation["topics"]}


@pytest.mark.parametrize("fixture", [f.name for f in load_fixtures(FIXTURES)])
def test_the_explanation_fires_exactly_the_cards_the_service_answers(transport, fixture):
    request = request_for(transport, fixture)
    status, explanation = transport.call("POST", EXPLAIN, request)
    assert status == 200
    status, answer = transport.call("POST", INVOKE, request)
    answered = {c["source"]["topic"]["code"] for c in answer["cards"]}
    assert {t for t, (fired, _) in reasons(explanation).items() if fired} == answered
    assert set(explanation["cards"]) == answered
    assert all(reason for _, reason in reasons(explanation).values())        # every topic says why


def test_a_silenced_topic_names_the_record_entry_that_silenced_it(transport):
    status, explanation = transport.call("POST", EXPLAIN, request_for(transport, "02-preop-workup-complete"))
    said = reasons(explanation)
    assert said["spine-mri"][0] is False and "MRI of the entire spine in this episode: " in said["spine-mri"][1]
    assert "(DiagnosticReport/avh-02-mri)" in said["spine-mri"][1]
    assert said["preop-cta"][0] is False and "(DiagnosticReport/avh-02-cta)" in said["preop-cta"][1]
    assert "(MedicationRequest/avh-02-dex)" in said["corticosteroids"][1]
    assert "(Procedure/avh-02-embolization)" in said["preop-embolization"][1]
    assert said["adjuvant-radiotherapy"] == (False, "not operated in this episode and not a recurrence")
    facts = dict((f["fact"], f["value"]) for f in explanation["facts"])
    assert facts["scope"].startswith("pre-operative") and "avh-02-mri" in facts["workup in the episode"]


def test_an_operated_patient_is_told_apart_from_one_never_in_the_pathway(transport):
    _, operated = transport.call("POST", EXPLAIN, request_for(transport, "06-operated-no-radiotherapy"))
    assert reasons(operated)["spine-mri"][1].startswith("not pre-operative: operated in this episode (") and "(Procedure/" in reasons(operated)["spine-mri"][1]
    assert reasons(operated)["adjuvant-radiotherapy"][0] is True
    _, outside = transport.call("POST", EXPLAIN, request_for(transport, "17-silent-metastatic-compression"))
    assert outside["cards"] == [] and all(reason.startswith("out of scope: ")
                                          for fired, reason in reasons(outside).values())


def test_data_that_could_not_be_read_is_not_taken_for_an_absence(transport):
    request = request_for(transport, "01-preop-stable-ambulatory")
    request["prefetch"]["diagnosticReports"] = FAILED
    _, explanation = transport.call("POST", EXPLAIN, request)
    said = reasons(explanation)
    assert said["spine-mri"] == (False, "not decided: DiagnosticReport could not be read")
    assert said["data-unavailable"] == (True, "could not be read: DiagnosticReport")


@pytest.mark.parametrize("body, status, error", [
    ({"hook": "patient-view"}, 400, "invalid_request"),
    (None, 400, "invalid_json"),
])
def test_a_malformed_request_is_a_json_400(transport, body, status, error):
    response = transport.client.post(EXPLAIN, json=body) if body else \
        transport.client.post(EXPLAIN, data=b"{", content_type="application/json")
    assert response.status_code == status and response.json["error"] == error


def test_unknown_services_wrong_hooks_and_foreign_fhir_servers_are_refused_by_name(transport):
    request = request_for(transport, "01-preop-stable-ambulatory")
    status, body = transport.call("POST", "/cds-services/avh-encounter-discharge/explain", request)
    assert status == 400 and body["error"] == "wrong_hook"
    status, body = transport.call("POST", "/cds-services/no-such-service/explain", request)
    assert status == 404 and body["error"] == "unknown_service"
    request = {**request, "fhirServer": "https://ehr.example.org/fhir"}
    del request["prefetch"]
    status, body = transport.call("POST", EXPLAIN, request)
    assert status == 403 and body["error"] == "fhir_server_not_allowed"


def test_nothing_to_read_is_a_412_as_for_the_call_itself(transport):
    request = request_for(transport, "01-preop-stable-ambulatory")
    del request["prefetch"]
    status, body = transport.call("POST", EXPLAIN, request)
    assert status == 412 and body["resourceType"] == "OperationOutcome"


def test_with_authentication_required_there_is_no_explain_endpoint(tmp_path):
    issuers = tmp_path / "issuers.json"
    issuers.write_text(json.dumps({"issuers": []}))
    app = create_app(Settings.from_env({"AVH_CDS_AUTH": "required", "AVH_CDS_ISSUERS_FILE": str(issuers)},
                                       sqlite_path=tmp_path / "avh-cds.sqlite3"))
    assert "explain.explain_call" not in {r.endpoint for r in app.url_map.iter_rules()}
    response = app.test_client().post(EXPLAIN, json={"hook": "patient-view"})
    assert response.status_code == 404


def test_the_command_prints_a_table_for_a_fixture(capsys):
    assert main(["explain", str(FIXTURES / "06-operated-no-radiotherapy.json")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Patient/avh-06 (avh-patient-view, at ")
    assert "\nFacts\n" in out and "\nTopics\n" in out
    [line] = [l for l in out.splitlines() if l.strip().startswith("posterior-fixation")]
    assert "not fired" in line and "(Procedure/avh-06-fixation)" in line
    [line] = [l for l in out.splitlines() if l.strip().startswith("adjuvant-radiotherapy")]
    assert "FIRED" in line
    assert out.rstrip().endswith("Cards the service answers: adjuvant-radiotherapy")


def test_the_command_explains_a_saved_hook_request_and_prints_json(transport, tmp_path, capsys):
    saved = tmp_path / "request.json"
    saved.write_text(json.dumps(request_for(transport, "03-rapid-ambulatory-loss")))
    assert main(["explain", str(saved), "--json"]) == 0
    explanation = json.loads(capsys.readouterr().out)
    assert reasons(explanation)["embolization-deferred"][0] is True
    assert reasons(explanation)["preop-embolization"][1].startswith("rapid deterioration, no waiting for embolization: ")
    assert "(Observation/avh-03-walk-3)" in reasons(explanation)["preop-embolization"][1]
    fired_because = reasons(explanation)["surgical-decompression"][1]
    assert fired_because.count("Observation/avh-03-walk-3)") == 1        # each record entry named once


def test_the_command_reads_a_fhir_server_and_asks_a_running_server(tmp_path, capsys):
    app = create_app(Settings.from_env({"AVH_CDS_AUTH": "off", "AVH_CDS_LOG_LEVEL": "ERROR"}, fixture_fhir=True,
                                       sqlite_path=tmp_path / "avh-cds.sqlite3"))
    with LiveServer(app) as server:
        fhir = f"{server.url}/fhir"
        assert main(["explain", "--fhir-server", fhir, "--patient", "avh-02", "--json"]) == 0     # in-process
        in_process = json.loads(capsys.readouterr().out)
        assert main(["explain", "--fhir-server", fhir, "--patient", "avh-02", "--json", "--url", server.url]) == 0
        remote = json.loads(capsys.readouterr().out)
    assert in_process["topics"] == remote["topics"] and in_process["facts"] == remote["facts"]
    assert in_process["cards"] == ["surgical-decompression"]
    assert "(DiagnosticReport/avh-02-mri)" in reasons(in_process)["spine-mri"][1]


def test_the_command_says_what_it_needs(capsys):
    assert main(["explain"]) == 2
    assert "--fhir-server with --patient" in capsys.readouterr().err
    assert main(["explain", "/no/such/file.json"]) == 2
    assert "cannot read /no/such/file.json" in capsys.readouterr().err


# --- order-select, order-sign and encounter-discharge: the same rules as their services --------------------

ORDER_SERVICE = {"order-sign": "avh-order-sign", "order-select": "avh-order-select",
                 "encounter-discharge": "avh-encounter-discharge"}


def operated(pid):
    return in_pathway_chart(pid) + [procedure(CPT, "63046", day(5, since=today()), display="Laminectomy",
                                              patient_id=pid, id=f"{pid}-op")]


def metastasis(pid):
    return condition((ICD10CM, "C79.51", "Secondary malignant neoplasm of bone"), onset=day(10, since=today()),
                     patient_id=pid, id=f"{pid}-met")


SURGERY = draft_order(CPT, "63046", "Laminectomy, thoracic", patient_id="x1", id="surg-1")
FIXATION = draft_order(CPT, "22842", "Posterior segmental instrumentation", patient_id="x1", id="fix-1")
EMBOLIZATION = draft_order(CPT, "37243", "Vascular embolization for tumor", patient_id="x1", id="emb-1")
DEX_20 = draft_dexamethasone(patient_id="x1", id="dex-1", dosage=[bounds_duration(20)])
DEX_5 = draft_dexamethasone(patient_id="x1", id="dex-1", dosage=[bounds_duration(5)])
RADIOTHERAPY = draft_order(SNOMED, "33195004", "Radiotherapy", patient_id="x1", id="rt", status="active")

ORDER_CASES = {   # name: (hook, record, drafts, selections)
    "sign-all-three": ("order-sign", in_pathway_chart("x1", rapid=True), [SURGERY, EMBOLIZATION, DEX_20], None),
    "sign-fixation-drafted": ("order-sign", in_pathway_chart("x1"), [SURGERY, FIXATION, EMBOLIZATION, DEX_5], None),
    "sign-competing-cause": ("order-sign", in_pathway_chart("x1") + [metastasis("x1")], [SURGERY, DEX_20], None),
    "sign-out-of-scope": ("order-sign", [r for r in in_pathway_chart("x1") if not r["id"].endswith("-scc")],
                          [SURGERY], None),
    "select-one": ("order-select", in_pathway_chart("x1", rapid=True), [SURGERY, EMBOLIZATION, DEX_20],
                   ["MedicationRequest/dex-1"]),
    "discharge-operated": ("encounter-discharge", operated("x1"), None, None),
    "discharge-planned": ("encounter-discharge", operated("x1") + [RADIOTHERAPY], None, None),
    "discharge-competing-cause": ("encounter-discharge", operated("x1") + [metastasis("x1")], None, None),
    "discharge-not-operated": ("encounter-discharge", in_pathway_chart("x1"), None, None),
}


def order_explanation(transport, case: str) -> tuple[dict, set[str]]:
    """The explanation of one ORDER_CASES request, and the topics the service itself answers for it."""
    hook, record, drafts, selections = ORDER_CASES[case]
    request = order_request(hook, "x1", record, drafts, selections)
    status, explanation = transport.call("POST", f"/cds-services/{ORDER_SERVICE[hook]}/explain", request)
    assert status == 200, explanation
    status, answer = transport.call("POST", f"/cds-services/{ORDER_SERVICE[hook]}", request)
    assert status == 200
    return explanation, {c["source"]["topic"]["code"] for c in answer["cards"]}


@pytest.mark.parametrize("case", list(ORDER_CASES))
def test_order_time_and_discharge_explanations_fire_exactly_the_cards_the_service_answers(transport, case):
    explanation, answered = order_explanation(transport, case)
    assert {t for t, (fired, _) in reasons(explanation).items() if fired} == answered
    assert set(explanation["cards"]) == answered
    assert all(reason for _, reason in reasons(explanation).values())
    hook = ORDER_CASES[case][0]
    expected_topics = ({"adjuvant-radiotherapy"} if hook == "encounter-discharge"
                       else {"posterior-fixation", "embolization-deferred", "steroid-duration"})
    assert set(reasons(explanation)) == expected_topics       # the hook's own topics, not the chart's


def test_an_order_time_topic_says_what_silenced_it(transport):
    said = reasons(order_explanation(transport, "sign-fixation-drafted")[0])
    assert said["posterior-fixation"][0] is False and "(ServiceRequest/fix-1)" in said["posterior-fixation"][1]
    assert said["embolization-deferred"] == (False, "no rapid deterioration now")
    assert said["steroid-duration"][0] is False and "within the 13-day course" in said["steroid-duration"][1]
    said = reasons(order_explanation(transport, "select-one")[0])
    assert said["posterior-fixation"] == (False, "no spine-surgery draft among the selected orders")
    assert said["steroid-duration"][0] is True and "; MedicationRequest/dex-1)" in said["steroid-duration"][1]
    said = reasons(order_explanation(transport, "sign-competing-cause")[0])
    assert all(not fired and "competing cause" in reason and "Condition/x1-met" in reason
               for fired, reason in said.values())
    assert all(reason.startswith("out of scope: ")
               for _, reason in reasons(order_explanation(transport, "sign-out-of-scope")[0]).values())


def test_a_discharge_topic_says_what_silenced_it(transport):
    assert reasons(order_explanation(transport, "discharge-operated")[0])["adjuvant-radiotherapy"][0] is True
    fired, reason = reasons(order_explanation(transport, "discharge-planned")[0])["adjuvant-radiotherapy"]
    assert not fired and reason.startswith("radiotherapy since the operation: ") and "ServiceRequest/rt" in reason
    assert reasons(order_explanation(transport, "discharge-not-operated")[0])["adjuvant-radiotherapy"] == (
        False, "not operated in this episode")


def test_the_command_explains_a_saved_order_sign_request(tmp_path, capsys):
    hook, record, drafts, _ = ORDER_CASES["sign-all-three"]
    saved = tmp_path / "order-sign.json"
    saved.write_text(json.dumps(order_request(hook, "x1", record, drafts)))
    assert main(["explain", str(saved), "--service", "avh-order-sign"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Patient/x1 (avh-order-sign, at ")
    [line] = [l for l in out.splitlines() if l.strip().startswith("embolization-deferred")]
    assert "FIRED" in line and "; ServiceRequest/emb-1)" in line
    assert out.rstrip().endswith("Cards the service answers: embolization-deferred, posterior-fixation, steroid-duration")


def test_the_command_explains_a_fixture_at_discharge_and_with_draft_orders(tmp_path, capsys):
    assert main(["explain", str(FIXTURES / "06-operated-no-radiotherapy.json"), "--service",
                 "avh-encounter-discharge", "--json"]) == 0
    explanation = json.loads(capsys.readouterr().out)
    assert explanation["service"] == "avh-encounter-discharge" and explanation["cards"] == ["adjuvant-radiotherapy"]
    drafts = tmp_path / "drafts.json"
    drafts.write_text(json.dumps({"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": {**SURGERY, "subject": {"reference": "Patient/avh-01"}}}]}))
    assert main(["explain", str(FIXTURES / "01-preop-stable-ambulatory.json"), "--service", "avh-order-select",
                 "--draft-orders", str(drafts), "--json"]) == 0
    explanation = json.loads(capsys.readouterr().out)
    assert explanation["cards"] == ["posterior-fixation"]          # every draft of the file is selected
    assert main(["explain", str(FIXTURES / "01-preop-stable-ambulatory.json"), "--service", "avh-order-sign"]) == 2
    assert "--draft-orders" in capsys.readouterr().err
    assert main(["explain", str(FIXTURES / "01-preop-stable-ambulatory.json"), "--service", "avh-order-sign",
                 "--draft-orders", "/no/such/drafts.json"]) == 2
    assert "cannot read /no/such/drafts.json" in capsys.readouterr().err


def test_the_command_explains_a_bundle_of_ones_own_dated_as_written(tmp_path, capsys):
    """An integration tester's own Bundle (a record exported from a FHIR server, no fixture anchor in
    meta.lastUpdated) was a KeyError traceback; it is read with its dates as written."""
    from service.fhir.fixtures import load_fixture
    fixture = load_fixture(FIXTURES / "02-preop-workup-complete.json")          # dated as of today
    own = {k: v for k, v in fixture.bundle.items() if k != "meta"}
    saved = tmp_path / "my-patient.json"
    saved.write_text(json.dumps(own))
    assert main(["explain", str(saved), "--json"]) == 0
    explanation = json.loads(capsys.readouterr().out)
    assert explanation["patient"] == "Patient/avh-02" and explanation["cards"] == ["surgical-decompression"]
    [mri] = [e for e in own["entry"] if e["resource"]["id"] == "avh-02-mri"]
    assert f"on {mri['resource']['effectiveDateTime'][:10]} (DiagnosticReport/avh-02-mri)" in reasons(explanation)["spine-mri"][1]


@pytest.mark.parametrize("bundle, named", [
    ({"resourceType": "Bundle", "type": "collection", "entry": []}, "no Patient"),
    ({"resourceType": "Bundle", "type": "collection", "entry": [{"fullUrl": "urn:uuid:1"}]}, "no Patient"),
    ({"resourceType": "Bundle", "entry": "x"}, "entry"),
    ({"resourceType": "Bundle", "meta": {"lastUpdated": "yesterday"}, "entry": []}, "lastUpdated"),
])
def test_the_command_names_what_is_wrong_with_a_bundle_it_cannot_explain(tmp_path, capsys, bundle, named):
    saved = tmp_path / "odd.json"
    saved.write_text(json.dumps(bundle))
    assert main(["explain", str(saved)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"avh-cds explain: cannot read {saved}") and named in err and "Traceback" not in err
    assert main(["replay", str(saved)]) == 2
    assert named in capsys.readouterr().err


def test_a_transaction_bundle_referencing_by_full_url_is_explained_as_a_fhir_server_would_store_it(tmp_path, capsys):
    """A Synthea-style transaction Bundle names its Patient by fullUrl (`urn:uuid:...`) in every subject: read as
    written, no resource was about the patient, and explain said "out of scope" for a patient in the pathway."""
    from service.fhir.fixtures import load_fixture
    fixture = load_fixture(FIXTURES / "02-preop-workup-complete.json")
    own = {"resourceType": "Bundle", "type": "transaction", "entry": []}
    for n, entry in enumerate(fixture.bundle["entry"]):
        resource = json.loads(json.dumps(entry["resource"]))
        for key in ("subject", "patient"):
            if isinstance(resource.get(key), dict):
                resource[key]["reference"] = "urn:uuid:0b9e4a64-5d6e-4d4e-9c1a-2b7f3c0e0001"
        full_url = ("urn:uuid:0b9e4a64-5d6e-4d4e-9c1a-2b7f3c0e0001" if resource["resourceType"] == "Patient"
                    else f"urn:uuid:0b9e4a64-5d6e-4d4e-9c1a-2b7f3c0e{n + 1000:04d}")
        own["entry"].append({"fullUrl": full_url, "resource": resource,
                             "request": {"method": "POST", "url": resource["resourceType"]}})
    saved = tmp_path / "synthea-like.json"
    saved.write_text(json.dumps(own))
    assert main(["explain", str(saved), "--json"]) == 0
    explanation = json.loads(capsys.readouterr().out)
    assert explanation["patient"] == "Patient/avh-02" and explanation["cards"] == ["surgical-decompression"]


@pytest.mark.parametrize("server", ["127.0.0.1:8080/fhir", "notaurl", "ftp://127.0.0.1/fhir"])
def test_a_fhir_server_that_is_not_a_url_is_named_not_a_traceback(capsys, server):
    """`--fhir-server 127.0.0.1:8080/fhir` (the scheme left off, a newcomer's slip) raised SecurityConfigError out of
    the command as a traceback."""
    assert main(["explain", "--fhir-server", server, "--patient", "avh-03"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("avh-cds explain: --fhir-server") and repr(server) in err and "Traceback" not in err
