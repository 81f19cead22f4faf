"""scripts/test, the README's test command, on a machine that has only what a fresh one has.

The machine running the suite already has chromium, wrk and docker-compose (and they cannot be removed:
other runs use them), so the script is run in its --dry-run mode with a PATH holding only the tools of a
fresh machine: it must plan to install every missing system tool, start the servers that are down, and
run pytest through the project's own virtual environment.
"""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FRESH_MACHINE = ("bash", "dirname", "id", "ls", "sort", "tail", "seq", "sleep", "cat", "env",
                 "python3", "git", "node", "npm", "pg_ctlcluster", "redis-server")


def fresh_path(tmp_path: Path, *, postgres_up: bool, redis_up: bool) -> str:
    """A PATH of a fresh machine's tools; pg_isready and redis-cli report the servers up or down as asked."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in FRESH_MACHINE:
        found = shutil.which(tool)
        if found:
            (bin_dir / tool).symlink_to(found)
    for tool, up in (("pg_isready", postgres_up), ("redis-cli", redis_up)):
        (bin_dir / tool).write_text(f"#!{shutil.which('bash')}\nexit {0 if up else 2}\n")
        (bin_dir / tool).chmod(0o755)
    return str(bin_dir)


def dry_run(path: str, cwd: Path = ROOT, *args: str) -> subprocess.CompletedProcess:
    env = {"PATH": path, "HOME": os.environ.get("HOME", "/tmp"), "CI": "true"}
    return subprocess.run(["bash", str(cwd / "scripts" / "test"), "--dry-run", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def planned(done: subprocess.CompletedProcess) -> list[str]:
    return [line.removeprefix("would run: ") for line in done.stdout.splitlines() if line.startswith("would run: ")]


def test_on_a_fresh_machine_it_installs_the_three_system_tools_and_starts_both_servers(tmp_path):
    done = dry_run(fresh_path(tmp_path, postgres_up=False, redis_up=False))
    assert done.returncode == 0, done.stderr
    steps = planned(done)
    assert any(s.startswith("pg_ctlcluster --skip-systemctl-redirect") and s.endswith("main start") for s in steps)
    assert any(s.startswith("redis-server --daemonize yes --bind 127.0.0.1 --port 6379") for s in steps)
    install = [s for s in steps if "apt-get install" in s]
    assert len(install) == 1 and install[0].split()[-3:] == ["chromium", "wrk", "docker-compose"]
    assert "python -m pip install -q -e .[test]" in steps
    assert steps[-1] == "python -m pytest"
    assert steps.index("python -m pip install -q -e .[test]") < steps.index("python -m pytest")


def test_it_installs_nothing_the_machine_has_and_passes_pytest_its_arguments(tmp_path):
    path = fresh_path(tmp_path, postgres_up=True, redis_up=True)
    for tool in ("chromium", "wrk", "docker-compose"):
        (Path(path) / tool).write_text("#!/bin/sh\n")
        (Path(path) / tool).chmod(0o755)
    steps = planned(dry_run(path, ROOT, "-q", "tests/test_facts.py"))
    assert not any("apt-get" in s or "pg_ctlcluster" in s or "redis-server" in s for s in steps)
    assert steps[-1] == "python -m pytest -q tests/test_facts.py"


def test_the_fhir_engine_is_set_up_when_its_script_exists_and_before_pytest(tmp_path):
    clone = tmp_path / "clone"
    (clone / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "test", clone / "scripts" / "test")
    path = fresh_path(tmp_path, postgres_up=True, redis_up=True)
    assert "bash tests/fhir_engine/setup.sh" not in planned(dry_run(path, clone))
    (clone / "tests" / "fhir_engine").mkdir(parents=True)
    (clone / "tests" / "fhir_engine" / "setup.sh").write_text("")
    steps = planned(dry_run(path, clone))
    assert steps.index("bash tests/fhir_engine/setup.sh") == len(steps) - 2


@pytest.mark.parametrize("path", [".ci/run", "README.md"])
def test_ci_and_the_readme_run_exactly_the_script(path):
    assert "bash scripts/test\n" in (ROOT / path).read_text()
