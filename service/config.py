"""Configuration from the environment (12-factor): every knob is an AVH_CDS_* variable."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# The deepest AVH_CDS_MAX_JSON_DEPTH accepted. jsonschema-rs checks depth by recursion, one native frame per level
# up to the limit: a limit of 512 fits a 128 KiB thread stack (musl's default) on a 1,020-deep body, 1,024 does not
# (it crashes the worker); 256 keeps a margin. orjson refuses bodies deeper than 1,024 levels whatever this says.
MAX_JSON_DEPTH_CEILING = 256


def _bool(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Settings:
    cards_dir: Path = PROJECT_ROOT / "cards"
    fixtures_dir: Path = PROJECT_ROOT / "fhir_fixtures"
    # Serve the read-only FHIR endpoint over fhir_fixtures/ at /fhir (development, sandbox demos).
    fixture_fhir: bool = False
    public_url: str = ""
    max_body_bytes: int = 16 * 1024 * 1024        # a 10,000-resource chart is about 7 MB
    fetch_timeout_seconds: float = 2.0
    fetch_budget_seconds: float = 1.5             # from `python -m bench.fhir_engine` (docs/data-access.md)
    fetch_page_cap: int = 10
    # Threads (and pooled connections) for fetching, per fhirServer: shared by the requests naming that server.
    fetch_workers: int = 8
    # Largest FHIR answer (one page) read from fhirServer; a larger one counts as a failed fetch.
    fetch_max_bytes: int = 10 * 1024 * 1024
    log_level: str = "INFO"
    # Validated FHIR resources remembered across requests (about 20 KB each; 0 = validate every time).
    model_cache_size: int = 1024
    # ... and at most this many bytes (approximate) in the three caches together, a third each (0: no bound).
    cache_max_bytes: int = 128 * 1024 * 1024
    # Security (docs/security.md): who may call, which FHIR servers we contact, input limits.
    auth: str = "required"                      # required | off (development only)
    issuers_file: str = ""                      # JSON file of trusted issuers
    trust_sandbox: bool = False                 # development preset: the public sandbox's issuer
    algorithms: str = "ES384,RS384,ES256,RS256,ES512,RS512,PS256,PS384,PS512"
    clock_skew_seconds: int = 30
    max_token_lifetime_seconds: int = 3600
    jwks_refresh_seconds: float = 60.0          # at most one JWK Set fetch per issuer in this interval
    jwks_cache_seconds: float = 3600.0
    redis_url: str = ""                         # shared jti replay cache (all hosts)
    replay_db: str = ""                         # SQLite jti replay cache (workers of one host); else in-process
    fhir_servers: str = ""                      # comma-separated fhirServer bases for development trust
    cors_origins: str = ""                      # comma-separated origins, "*" for all; default by auth mode
    max_json_depth: int = 64
    max_prefetch_resources: int = 20000
    # Feedback storage: PostgreSQL (or any SQLAlchemy URL) when set, else the embedded SQLite file.
    database_url: str = ""
    sqlite_path: Path = Path("avh-cds.sqlite3")
    storage_timeout_seconds: float = 5.0
    feedback_retry_after_seconds: int = 2
    # Issued cards are written by a background thread this often (0: before each call answers), and at most
    # this many wait for the store (the oldest beyond it are dropped, logged) while it is unavailable.
    issued_flush_seconds: float = 0.5
    issued_max_pending: int = 10_000
    # Governance page (docs/governance.md): its own bearer credential; the override rate over the last 30 days
    # above which a topic is an alert-fatigue candidate, and the fewest feedback entries that rate may rest on.
    governance_token: str = ""
    governance_override_threshold: float = 0.5
    governance_min_feedback: int = 10
    # Reverse proxies in front of the service that append the client's address to X-Forwarded-For (the compose
    # nginx: 1). The wrong-credential limit counts by that address; 0: by the connection's (X-Forwarded-For unread).
    trusted_proxy_hops: int = 0
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
            elif isinstance(default, (int, float)):
                try:
                    values[f.name] = number = type(default)(raw)
                except ValueError:
                    raise ValueError(f"{key}={raw[:40]!r} is not a {'whole ' if isinstance(default, int) else ''}"
                                     f"number") from None
                if not 0 <= number < math.inf:      # NaN and infinity included: no setting means anything by them
                    raise ValueError(f"{key}={raw[:40]!r} is not a finite number, 0 or more")
            elif isinstance(default, Path):
                values[f.name] = Path(raw)
            else:
                values[f.name] = raw
        return replace(cls(**values), **overrides)

    def __post_init__(self) -> None:
        if not 0 <= self.governance_override_threshold <= 1:
            raise ValueError(f"AVH_CDS_GOVERNANCE_OVERRIDE_THRESHOLD={self.governance_override_threshold} is not a rate "
                             "between 0 and 1")
        if not 1 <= self.max_json_depth <= MAX_JSON_DEPTH_CEILING:
            raise ValueError(f"AVH_CDS_MAX_JSON_DEPTH={self.max_json_depth} is not within 1-{MAX_JSON_DEPTH_CEILING} "
                             "(a deeper check could overflow a worker thread's stack)")
