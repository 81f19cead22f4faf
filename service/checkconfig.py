"""`avh-cds check-config`: is this configuration one an EHR can call, and what does the EHR register?

Reads the environment as the service does, loads the card library and the issuers file, fetches each
issuer's JWK Set, asks the feedback database and Redis, then prints what an EHR needs to register the
service. Every problem is one line starting "FAIL"; the exit status is 1 when there is any.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import requests

from service.config import Settings


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)
    problems: int = 0

    def ok(self, text: str) -> None:
        self.lines.append(f"ok    {text}")

    def note(self, text: str) -> None:
        self.lines.append(f"note  {text}")

    def fail(self, text: str) -> None:
        self.lines.append(f"FAIL  {text}")
        self.problems += 1


def _issuers(settings: Settings, report: Report, timeout: float) -> None:
    from service.security.issuers import SecurityConfigError, load_issuers
    from service.security.keys import FETCH_ERRORS, KeySet, fetch_keys
    if settings.auth == "off":
        report.fail("AVH_CDS_AUTH=off: calls are not authenticated (development only; an EHR needs 'required')")
    elif settings.auth != "required":
        report.fail(f"AVH_CDS_AUTH={settings.auth!r}: must be 'required' (or 'off' in development)")
    elif not _aws_lc_loads(report):
        return              # the service does not start; the keys could not be read either
    try:
        issuers = load_issuers(settings.issuers_file, settings.trust_sandbox, settings.fhir_servers)
    except SecurityConfigError as exc:
        report.fail(str(exc))
        return
    if settings.auth == "required" and not issuers:
        report.fail("no trusted issuer: set AVH_CDS_ISSUERS_FILE (every CDS call would be refused with 401)")
    if settings.trust_sandbox:
        report.note("AVH_CDS_TRUST_SANDBOX=1: the public sandbox's key is public; never on a service a real EHR calls")
    session = requests.Session()
    for issuer in issuers.values():
        try:
            inline = KeySet(issuer, session, refresh_seconds=0, cache_seconds=0).inline_kids
        except SecurityConfigError as exc:
            report.fail(str(exc))
            continue
        fetched = {}
        if issuer.jwks_url:
            try:
                fetched = fetch_keys(session, issuer.jwks_url, timeout)
            except FETCH_ERRORS as exc:
                report.fail(f"issuer {issuer.iss}: JWK Set {issuer.jwks_url} cannot be fetched ({type(exc).__name__}: "
                            f"{str(exc)[:120]})")
                continue
        if not inline and not fetched:
            report.fail(f"issuer {issuer.iss}: no usable signing key")
            continue
        where = ", ".join(filter(None, [f"{len(inline)} inline" if inline else "",
                                        f"{len(fetched)} from {issuer.jwks_url}" if issuer.jwks_url else ""]))
        report.ok(f"issuer {issuer.iss}: {len(inline) + len(fetched)} signing key(s) ({where}); "
                  f"fhirServer: {issuer.fhir_servers.describe()}")


def _aws_lc_loads(report: Report) -> bool:
    """Whether awscrt loads, as the token verifier loads it at start-up with AVH_CDS_AUTH=required."""
    from service.security.signatures import aws_lc_ec
    try:
        aws_lc_ec()
    except Exception as exc:        # missing, or a native library that does not load: the service does not start
        report.fail(f"awscrt (AWS-LC, ES256/ES384 signatures) cannot be loaded ({type(exc).__name__}: {str(exc)[:120]}):"
                    " the service does not start with AVH_CDS_AUTH=required")
        return False
    return True


def _stores(settings: Settings, report: Report) -> None:
    from service import open_store
    try:
        store = open_store(settings)
    except Exception as exc:        # any driver or URL error: it is the answer to the question asked
        report.fail(f"feedback database cannot be opened ({type(exc).__name__}: {str(exc)[:160]})")
    else:
        try:
            store.ping()
            report.ok(f"feedback database ({store.backend}) answers")
        except Exception as exc:
            report.fail(f"feedback database ({store.backend}) does not answer ({type(exc).__name__})")
        finally:
            store.dispose()
    if settings.redis_url:
        from service.security.replay import RedisReplayCache
        try:
            RedisReplayCache(settings.redis_url).ping()
            report.ok("Redis (jti replay cache) answers")
        except Exception as exc:
            report.fail(f"Redis (AVH_CDS_REDIS_URL) does not answer ({type(exc).__name__})")
    elif settings.auth == "required":
        report.note("jti replay cache per process: set AVH_CDS_REDIS_URL with more than one worker or host")


def _registration(settings: Settings, report: Report, base_url: str) -> list[str]:
    """What the EHR registers: discovery URL, services, hooks, prefetch templates (from the service's own registry)."""
    from service.api.services import build_registry
    from service.clinical.cards import CardLibrary
    from service.clinical.valuesets import load_valuesets
    try:       # what the service loads at start-up
        valuesets = load_valuesets(settings.cards_dir / "valuesets")
        library = CardLibrary.load(settings.cards_dir)
    except Exception as exc:       # a bad card or value set file stops the service at start-up: say which
        report.fail(f"card library {settings.cards_dir}: {type(exc).__name__}: {str(exc)[:200]}")
        return []
    report.ok(f"card library {settings.cards_dir}: {len(library.definitions)} topics")
    if not settings.public_url:
        report.note(f"AVH_CDS_PUBLIC_URL unset: a token's aud is checked against the Host header; shown here as {base_url}")
    elif not settings.public_url.startswith("https://"):
        report.note("AVH_CDS_PUBLIC_URL is not https: EHR calls carry a JWT and patient data")
    lines = ["", "Register with the EHR:", f"  discovery URL  {base_url}/cds-services"]
    for service in build_registry(valuesets):
        lines += [f"  service {service.id}", f"    hook      {service.hook}",
                  f"    endpoint  {base_url}/cds-services/{service.id}", "    prefetch"]
        lines += [f"      {key}: {template}" for key, template in service.prefetch.items()]
    return lines


def check_config(settings: Settings, timeout: float = 5.0) -> tuple[int, str]:
    """(exit status, text to print)."""
    report = Report()
    base_url = settings.public_url.rstrip("/") or "http://127.0.0.1:8080"
    _issuers(settings, report, timeout)
    _stores(settings, report)
    registration = _registration(settings, report, base_url)
    summary = (f"{report.problems} problem(s): an EHR cannot use this configuration as it is" if report.problems
               else "no problem found")
    return (1 if report.problems else 0), "\n".join(report.lines + registration + ["", summary])
