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
    assert said["spine-mri"][0] is False and "MRI of the entire spine on record" in said["spine-mri"][1]
    assert "(DiagnosticReport/avh-02-mri)" in said["spine-mri"][1]
    assert said["preop-cta"][0] is False and "(DiagnosticReport/avh-02-cta)" in said["preop-cta"][1]
    assert "(MedicationRequest/avh-02-dex)" in said["corticosteroids"][1]
    assert "(Procedure/avh-02-embolization)" in said["preop-embolization"][1]
    assert said["adjuvant-radiotherapy"] == (False, "not operated (no decompression on record)")
    facts = dict((f["fact"], f["value"]) for f in explanation["facts"])
    assert facts["in pathway"] == "yes" and facts["operated"] == "no" and "avh-02-mri" in facts["mri entire spine"]


def test_an_operated_patient_is_told_apart_from_one_never_in_the_pathway(transport):
    _, operated = transport.call("POST", EXPLAIN, request_for(transport, "06-operated-no-radiotherapy"))
    assert reasons(operated)["spine-mri"][1].startswith("operated: Procedure")
    assert reasons(operated)["adjuvant-radiotherapy"][0] is True
    _, outside = transport.call("POST", EXPLAIN, request_for(transport, "17-silent-metastatic-compression"))
    assert outside["cards"] == [] and all(reason.startswith("not in the pathway")
                                          for fired, reason in reasons(outside).values())


def test_data_that_could_not_be_read_is_not_taken_for_an_absence(transport):
    request = request_for(transport, "01-preop-stable-ambulatory")
    request["prefetch"]["diagnosticReports"] = FAILED
    _, explanation = transport.call("POST", EXPLAIN, request)
    said = reasons(explanation)
    assert said["spine-mri"] == (False, "not decided: DiagnosticReport could not be read (see the data-unavailable card)")
    assert said["data-unavailable"] == (True, "could not be read: DiagnosticReport")


@pytest.mark.parametrize("body, status, error", [
    ({"hook": "patient-view"}, 400, "invalid_request"),
    (None, 400, "invalid_json"),
])
def test_a_malformed_request_is_a_json_400(transport, body, status, error):
    response = transport.client.post(EXPLAIN, json=body) if body else transport.client.post(EXPLAIN, data=b"{")
    assert response.status_code == status and response.json["error"] == error


def test_other_services_and_foreign_fhir_servers_are_refused_by_name(transport):
    request = request_for(transport, "01-preop-stable-ambulatory")
    discharge = {**request, "hook": "encounter-discharge", "context": {**request["context"], "encounterId": "e1"}}
    status, body = transport.call("POST", "/cds-services/avh-encounter-discharge/explain", discharge)
    assert status == 400 and body["error"] == "not_explained" and "patient-view" in body["message"]
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
    assert reasons(explanation)["preop-embolization"][1].startswith("deficit progressing rapidly: ")
    fired_because = reasons(explanation)["surgical-decompression"][1]
    assert fired_because.count("(Observation/avh-03-walk-3)") == 1        # each record entry named once


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
