"""docker-compose.yml, as the real `docker-compose config` reads it (docker cannot run here).

CI needs the tool: `apt-get install -y docker-compose` (Debian package). Without it these tests
fail, naming the missing tool: a compose file nobody validated is not a tested deployment.
"""
import os
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from service import create_app
from service.config import Settings

ROOT = Path(__file__).resolve().parent.parent


def compose_config(**env) -> dict:
    tool = shutil.which("docker-compose")
    if tool is None:
        pytest.fail("docker-compose is not installed: `apt-get install -y docker-compose` (Debian package)")
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("AVH_", "COMPOSE_"))}
    done = subprocess.run([tool, "-f", str(ROOT / "docker-compose.yml"), "config"], cwd=ROOT,
                          env={**environ, **env}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"docker-compose config refused the file:\n{done.stderr}"
    return yaml.safe_load(done.stdout)


@pytest.fixture(scope="module")
def config():
    return compose_config()


def test_compose_file_has_the_service_its_fhir_server_loader_and_shared_stores(config):
    services = config["services"]
    assert set(services) == {"proxy", "avh-cds", "hapi", "fhir-loader", "postgres", "redis"}
    assert services["hapi"]["image"].startswith("hapiproject/hapi:")
    assert services["hapi"]["environment"]["hapi.fhir.fhir_version"] == "R4"
    assert services["postgres"]["image"].startswith("postgres:") and services["redis"]["image"].startswith("redis:")


def test_two_replicas_run_behind_the_proxy_with_authentication_required(config):
    avh = config["services"]["avh-cds"]
    assert avh["deploy"]["replicas"] == 2
    assert "ports" not in avh   # replicas cannot share a host port: the proxy is the one entry point
    assert avh["environment"]["AVH_CDS_AUTH"] == "required"
    port = avh["environment"]["AVH_CDS_BIND"].rsplit(":", 1)[1]
    nginx = (ROOT / "deploy" / "nginx.conf").read_text()
    assert f"server avh-cds:{port}" in nginx
    mounted = config["services"]["proxy"]["volumes"][0]
    assert mounted.startswith(str(ROOT / "deploy" / "nginx.conf") + ":")
    assert {"published": 8080, "target": 8080} in [
        {k: int(v) for k, v in p.items() if k in ("published", "target")} for p in config["services"]["proxy"]["ports"]]
    assert avh["stop_grace_period"] == "30s"   # more than gunicorn's graceful timeout (20 s)
    assert avh["depends_on"] == {"postgres": {"condition": "service_healthy"},
                                 "redis": {"condition": "service_healthy"}}


def test_the_entry_point_does_not_pass_metrics_on(config):
    """ui14: deploy/nginx.conf passed every path to a replica, so /metrics (one replica's call volume, refusal
    rates, cache sizes) was open to whoever reaches the port EHRs call, while docs/deployment.md says to give it to
    the monitoring network only; Prometheus scrapes each replica on the compose network instead. nginx is not
    installed here: the block is read as text (an exact-match location answering 404 itself, no proxy_pass)."""
    nginx = (ROOT / "deploy" / "nginx.conf").read_text()
    block = re.search(r"location = /metrics \{(.*?)\n    \}", nginx, re.S)
    assert block is not None
    assert "proxy_pass" not in block.group(1) and re.search(r"^\s*return 404 '\{.*\}';$", block.group(1), re.M)
    assert "location = /healthz" not in nginx and "location = /readyz" not in nginx     # probes still pass


def test_the_environment_ties_the_service_to_postgres_and_redis():
    config = compose_config(AVH_POSTGRES_PASSWORD="s3cret-from-env", AVH_CDS_PUBLIC_URL="https://cds.example.org")
    avh, postgres = config["services"]["avh-cds"]["environment"], config["services"]["postgres"]["environment"]
    database = urlsplit(avh["AVH_CDS_DATABASE_URL"])
    assert database.scheme == "postgresql" and database.hostname == "postgres" and database.port == 5432
    assert (database.username, database.password, database.path) == \
        (postgres["POSTGRES_USER"], postgres["POSTGRES_PASSWORD"], "/" + postgres["POSTGRES_DB"])
    assert postgres["POSTGRES_PASSWORD"] == "s3cret-from-env"
    redis = urlsplit(avh["AVH_CDS_REDIS_URL"])
    assert (redis.scheme, redis.hostname, redis.port) == ("redis", "redis", 6379)
    assert avh["AVH_CDS_PUBLIC_URL"] == "https://cds.example.org"


def test_the_loader_fills_hapi_once_then_verifies_it(config):
    loader, hapi = config["services"]["fhir-loader"], config["services"]["hapi"]
    script = loader["command"][-1]
    load, verify = script.split("&&")
    assert "avh-cds load-fhir --fhir-url http://hapi:8080/fhir" in load and "--verify" not in load
    assert "avh-cds load-fhir --fhir-url http://hapi:8080/fhir --verify" in verify
    assert loader["restart"] == "no" and "hapi" in loader["depends_on"]
    assert loader["image"] == config["services"]["avh-cds"]["image"]
    assert any(int(p["target"]) == 8080 for p in hapi["ports"])


def test_the_replicas_read_the_issuers_file_the_compose_file_mounts(config, tmp_path):
    avh = config["services"]["avh-cds"]
    source, target, mode = avh["volumes"][0].rsplit(":", 2)
    assert target == avh["environment"]["AVH_CDS_ISSUERS_FILE"] and mode == "ro"
    assert Path(source) == ROOT / "deploy" / "issuers.json"
    app = create_app(Settings.from_env({"AVH_CDS_AUTH": "required", "AVH_CDS_ISSUERS_FILE": source},
                                       sqlite_path=tmp_path / "feedback.sqlite3"))
    assert app.extensions["avh_security"].verifier.issuers == {}   # as shipped: trusts nobody
