"""`avh-cds load-fhir`: against real HTTP servers on 127.0.0.1."""
import datetime as dt
import json
import threading
import time

import pytest

from tests.deployment_support import RecordingFhirServer, avh_bundle
from tests.ports import refused_port
from service.cli import main
from service.fhir.fixtures import load_fixtures
from service.fhir.loader import FhirLoader, resources_in_load_order

TODAY = dt.date(2026, 11, 24)


@pytest.fixture
def fixtures_dir(tmp_path):
    for name, patient in (("one", "dep-load-1"), ("two", "dep-load-2")):
        (tmp_path / f"{name}.json").write_text(json.dumps(avh_bundle(patient, anchor="2026-01-10")))
    return tmp_path


def run_cli(*args) -> int:
    return main(["load-fhir", *args])


def test_load_puts_every_resource_by_id_referenced_resources_first(fixtures_dir, capsys):
    with RecordingFhirServer() as fhir:
        code = run_cli("--fhir-url", fhir.base_url, "--fixtures", str(fixtures_dir), "--as-of", TODAY.isoformat())
        stored, puts = fhir.stored, fhir.puts
    assert code == 0
    assert set(stored) == {f"{t}/{i}" for p in ("dep-load-1", "dep-load-2")
                           for t, i in (("Patient", p), ("Condition", f"{p}-cc"), ("Condition", f"{p}-vh"))}
    order = [path for path, _ in puts]
    for patient in ("dep-load-1", "dep-load-2"):   # HAPI checks references on write: the Patient goes first
        assert order.index(f"Patient/{patient}") < order.index(f"Condition/{patient}-cc")
    assert {content_type for _, content_type in puts} == {"application/fhir+json"}
    # dates are shifted from the fixtures' anchor (2026-01-10) to the load day
    assert stored["Condition/dep-load-1-vh"]["onsetDateTime"] == TODAY.isoformat()
    assert "loaded 6 of 6 resources" in capsys.readouterr().out


def test_loading_twice_leaves_the_same_data(fixtures_dir):
    with RecordingFhirServer() as fhir:
        assert run_cli("--fhir-url", fhir.base_url, "--fixtures", str(fixtures_dir)) == 0
        first = dict(fhir.stored)
        assert run_cli("--fhir-url", fhir.base_url, "--fixtures", str(fixtures_dir)) == 0
        assert fhir.stored == first and len(fhir.puts) == 12


def test_waits_for_a_server_that_comes_up_late_and_retries_503(fixtures_dir):
    late = RecordingFhirServer(failures_before_success=2)
    starter = threading.Timer(1.0, late.__enter__)
    starter.start()
    try:
        loader = FhirLoader(late.base_url, backoff_seconds=0.05)
        loader.wait_until_up(wait_seconds=10, interval=0.2)
        report = loader.load(resources_in_load_order(load_fixtures(fixtures_dir)))
    finally:
        starter.join()
        late.__exit__()
    assert report.problems == [] and len(report.done) == 6
    assert len(late.puts) == 8   # two answered 503, both sent again


def test_gives_up_with_exit_code_2_when_the_server_never_comes_up(fixtures_dir, capsys):
    started = time.monotonic()
    with refused_port() as refused:
        code = run_cli("--fhir-url", f"http://127.0.0.1:{refused}/fhir", "--fixtures", str(fixtures_dir),
                       "--wait", "1")
    assert code == 2 and time.monotonic() - started < 5
    assert "did not come up within 1 s (last: ConnectionError)" in capsys.readouterr().err


def test_verify_reads_every_resource_back(fixtures_dir, capsys):
    with RecordingFhirServer() as fhir:
        assert run_cli("--fhir-url", fhir.base_url, "--fixtures", str(fixtures_dir)) == 0
        puts = len(fhir.puts)
        assert run_cli("--fhir-url", fhir.base_url, "--fixtures", str(fixtures_dir), "--verify") == 0
        assert len(fhir.puts) == puts   # verify writes nothing
    assert "verified 6 of 6 resources" in capsys.readouterr().out


def test_verify_names_missing_and_changed_resources(fixtures_dir, capsys):
    with RecordingFhirServer() as fhir:
        assert run_cli("--fhir-url", fhir.base_url, "--fixtures", str(fixtures_dir)) == 0
        del fhir.stored["Condition/dep-load-2-cc"]
        fhir.stored["Patient/dep-load-1"]["gender"] = "male"
        code = run_cli("--fhir-url", fhir.base_url, "--fixtures", str(fixtures_dir), "--verify")
    out = capsys.readouterr()
    assert code == 1
    assert "Condition/dep-load-2-cc: GET answered HTTP 404" in out.err
    assert "Patient/dep-load-1: served resource differs in gender" in out.err
    assert "verified 4 of 6 resources" in out.out
    assert "male" not in out.err   # ids and field names only, never resource content


def test_verify_on_another_day_needs_the_load_day(fixtures_dir):
    with RecordingFhirServer() as fhir:
        assert run_cli("--fhir-url", fhir.base_url, "--fixtures", str(fixtures_dir), "--as-of", "2026-11-20") == 0
        assert run_cli("--fhir-url", fhir.base_url, "--fixtures", str(fixtures_dir), "--verify",
                       "--as-of", "2026-11-21") == 1
        assert run_cli("--fhir-url", fhir.base_url, "--fixtures", str(fixtures_dir), "--verify",
                       "--as-of", "2026-11-20") == 0


def test_a_refused_put_is_reported_with_the_outcome_codes_and_the_rest_still_loaded(fixtures_dir, capsys):
    with RecordingFhirServer(refuse=frozenset({"Condition/dep-load-1-vh"})) as fhir:
        assert run_cli("--fhir-url", fhir.base_url, "--fixtures", str(fixtures_dir)) == 1
        assert len(fhir.stored) == 5
    out = capsys.readouterr()
    assert "Condition/dep-load-1-vh: PUT answered HTTP 422 (OperationOutcome: processing)" in out.err
    assert "loaded 5 of 6 resources" in out.out


def test_the_same_id_with_different_content_in_two_fixtures_is_refused(fixtures_dir):
    other = avh_bundle("dep-load-1")
    other["entry"][1]["resource"]["gender"] = "male"
    (fixtures_dir / "three.json").write_text(json.dumps(other))
    with pytest.raises(ValueError, match="Patient/dep-load-1 appears in two fixtures"):
        resources_in_load_order(load_fixtures(fixtures_dir))


def test_an_empty_fixture_directory_is_an_error(tmp_path, capsys):
    with refused_port() as refused:
        assert run_cli("--fhir-url", f"http://127.0.0.1:{refused}/fhir", "--fixtures", str(tmp_path)) == 1
    assert "no fixtures in" in capsys.readouterr().err
