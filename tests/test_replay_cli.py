"""`avh-cds replay`: the table, the verdict and the exit status, in-process and against a running service."""
import json
import threading

import pytest
from werkzeug.serving import make_server

from service import create_app
from service.cli import main
from service.config import PROJECT_ROOT, Settings
from service.fhir.fixtures import EXPECTED_CARD_SYSTEM, load_fixture
from service.fhir.replay import InProcess, ReplayError, replay
from tests.ports import refused_port

FIXTURES = PROJECT_ROOT / "fhir_fixtures"


def test_replay_prints_each_card_and_passes(capsys):
    status = main(["replay", str(FIXTURES / "03-rapid-ambulatory-loss.json"), str(FIXTURES / "16-silent-hemangioma-no-compression.json")])
    out = capsys.readouterr().out
    assert status == 0
    assert out.splitlines()[0].split() == ["PATIENT", "INDICATOR", "TOPIC", "SUMMARY"]
    row = next(line for line in out.splitlines() if "embolization-deferred" in line)
    assert "warning" in row and "go straight to surgery" in row
    assert "no cards" in out and "ok: as expected (silent)" in out
    assert "2 of 2 fixtures gave the expected cards" in out


def test_replay_takes_a_directory(capsys):
    assert main(["replay", str(FIXTURES)]) == 0
    count = len(list(FIXTURES.glob("*.json")))
    assert f"{count} of {count} fixtures gave the expected cards" in capsys.readouterr().out


def test_wrong_expectation_is_a_mismatch_and_exit_1(tmp_path, capsys):
    bundle = json.loads((FIXTURES / "06-operated-no-radiotherapy.json").read_text())
    bundle["meta"]["tag"] = [{"system": EXPECTED_CARD_SYSTEM, "code": "posterior-fixation"}]
    path = tmp_path / "wrong.json"
    path.write_text(json.dumps(bundle))
    assert main(["replay", str(path)]) == 1
    out = capsys.readouterr().out
    assert "MISMATCH: expected posterior-fixation; missing posterior-fixation; unexpected adjuvant-radiotherapy" in out
    assert "0 of 1 fixtures" in out


@pytest.mark.parametrize("content", [None, "{not json", '{"resourceType": "Bundle"}'])
def test_unreadable_fixture_is_exit_2(tmp_path, capsys, content):
    path = tmp_path / "broken.json"
    if content is not None:
        path.write_text(content)
    assert main(["replay", str(path)]) == 2
    assert "cannot read fixture" in capsys.readouterr().err


def test_unreachable_service_is_exit_2(capsys):
    with refused_port() as refused:
        assert main(["replay", str(FIXTURES / "01-preop-stable-ambulatory.json"), "--url", f"http://127.0.0.1:{refused}"]) == 2
    assert "ConnectionError" in capsys.readouterr().err


def test_replay_against_a_running_service(capsys):
    server = make_server("127.0.0.1", 0, create_app(Settings.from_env({"AVH_CDS_AUTH": "off"})), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        status = main(["replay", str(FIXTURES / "07-operated-no-fixation.json"), "--url", f"http://127.0.0.1:{server.server_port}/cds-services"])
    finally:
        server.shutdown()
        thread.join()
    out = capsys.readouterr().out
    assert status == 0
    assert "posterior-fixation" in out and "adjuvant-radiotherapy" in out and "1 of 1" in out


def test_a_refused_call_is_reported_with_the_services_reason():
    """A patient whose Condition key is an OperationOutcome gets 412; replay names why (the CLI exits 2)."""

    class OutcomeForConditions(InProcess):
        def call(self, method, path, body=None):
            if body is not None:
                body["prefetch"]["conditions"] = {"resourceType": "OperationOutcome",
                                                  "issue": [{"severity": "error", "code": "timeout"}]}
            return super().call(method, path, body)

    fx = load_fixture(FIXTURES / "01-preop-stable-ambulatory.json")
    with pytest.raises(ReplayError, match=r"answered 412: .*conditions"):
        replay([fx], OutcomeForConditions(create_app(Settings.from_env({"AVH_CDS_AUTH": "off"}))))
