"""Configuration from the environment (12-factor): every knob is an AVH_CDS_* variable."""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _bool(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Settings:
    cards_dir: Path = PROJECT_ROOT / "cards"
    fixtures_dir: Path = PROJECT_ROOT / "fhir_fixtures"
    # Serve the read-only FHIR endpoint over fhir_fixtures/ at /fhir (development, sandbox demos).
    fixture_fhir: bool = False
    public_url: str = ""
    max_body_bytes: int = 5 * 1024 * 1024
    fetch_timeout_seconds: float = 2.0
    fetch_budget_seconds: float = 0.4
    fetch_page_cap: int = 10
    log_level: str = "INFO"
    # Validated FHIR resources remembered across requests (about 20 KB each; 0 = validate every time).
    model_cache_size: int = 1024
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_env(cls, environ: dict | None = None, **overrides) -> "Settings":
        env = os.environ if environ is None else environ
        values = {}
        for f in fields(cls):
            key = "AVH_CDS_" + f.name.upper()
            if f.name == "extra" or key not in env:
                continue
            raw = env[key]
            default = f.default
            if isinstance(default, bool):
                values[f.name] = _bool(raw)
            elif isinstance(default, int):
                values[f.name] = int(raw)
            elif isinstance(default, float):
                values[f.name] = float(raw)
            elif isinstance(default, Path):
                values[f.name] = Path(raw)
            else:
                values[f.name] = raw
        return replace(cls(**values), **overrides)
