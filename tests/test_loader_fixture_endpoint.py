"""`avh-cds load-fhir --verify` against the project's own fixture FHIR endpoint (/fhir), served live."""
import json
import threading
from contextlib import contextmanager
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from service import create_app
from service.cli import main
from service.config import Settings
from service.fhir.fixtures import load_fixtures
from service.fhir.loader import resources_in_load_order
from tests.deployment_support import avh_bundle

FIXTURES = Path(__file__).resolve().parent.parent / "fhir_fixtures"


@contextmanager
def serving(fixtures_dir: Path, scratch: Path):
    """The app serving fixtures_dir at /fhir on 127.0.0.1, as `avh-cds serve` does."""
    app = create_app(Settings.from_env({"AVH_CDS_AUTH": "off"}, fixture_fhir=True, fixtures_dir=fixtures_dir,
                                       sqlite_path=scratch / "feedback.sqlite3"))
    server = make_server("127.0.0.1", 0, app, threaded=True)      # a port the kernel picks
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/fhir"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def fixture_fhir(tmp_path):
    fixtures_dir = tmp_path / "fixtures"
    fixtures_dir.mkdir()
    for patient in ("dep-live-1", "dep-live-2"):
        (fixtures_dir / f"{patient}.json").write_text(json.dumps(avh_bundle(patient)))
    with serving(fixtures_dir, tmp_path) as url:
        yield fixtures_dir, url


def test_the_project_fixtures_all_load_in_order_and_are_served_back(tmp_path, capsys):
    resources = resources_in_load_order(load_fixtures(FIXTURES))   # no id with two contents
    assert len(resources) > 20
    with serving(FIXTURES, tmp_path) as url:
        assert main(["load-fhir", "--fhir-url", url, "--fixtures", str(FIXTURES), "--verify", "--wait", "5"]) == 0
    assert f"verified {len(resources)} of {len(resources)} resources" in capsys.readouterr().out


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
