"""`avh-cds load-fhir --verify` against the project's own fixture FHIR endpoint (/fhir), served live."""
import json
import threading

import pytest
from werkzeug.serving import make_server

from service import create_app
from service.cli import main
from service.config import Settings
from tests.deployment_support import avh_bundle

PORT = 18540


@pytest.fixture
def fixture_fhir(tmp_path):
    for patient in ("dep-live-1", "dep-live-2"):
        (tmp_path / f"{patient}.json").write_text(json.dumps(avh_bundle(patient)))
    app = create_app(Settings.from_env({"AVH_CDS_AUTH": "off"}, fixture_fhir=True, fixtures_dir=tmp_path))
    server = make_server("127.0.0.1", PORT, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield tmp_path, f"http://127.0.0.1:{PORT}/fhir"
    server.shutdown()


def test_verify_reads_every_fixture_resource_back_from_the_live_endpoint(fixture_fhir, capsys):
    fixtures_dir, url = fixture_fhir
    assert main(["load-fhir", "--fhir-url", url, "--fixtures", str(fixtures_dir), "--verify", "--wait", "5"]) == 0
    assert "verified 6 of 6 resources" in capsys.readouterr().out


def test_verify_notices_a_resource_the_endpoint_does_not_serve(fixture_fhir, capsys):
    fixtures_dir, url = fixture_fhir
    extra = avh_bundle("dep-live-3")
    extra_dir = fixtures_dir / "more"
    extra_dir.mkdir()
    (extra_dir / "dep-live-3.json").write_text(json.dumps(extra))
    assert main(["load-fhir", "--fhir-url", url, "--fixtures", str(extra_dir), "--verify", "--wait", "5"]) == 1
    assert "Patient/dep-live-3: GET answered HTTP 404" in capsys.readouterr().err


def test_the_read_only_endpoint_refuses_the_write_path(fixture_fhir, capsys):
    fixtures_dir, url = fixture_fhir
    assert main(["load-fhir", "--fhir-url", url, "--fixtures", str(fixtures_dir), "--wait", "5"]) == 1
    assert "PUT answered HTTP 405 (OperationOutcome: not-supported)" in capsys.readouterr().err
