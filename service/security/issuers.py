"""Trusted issuers (who may call us) and the FHIR servers each of them may name.

The issuers file (AVH_CDS_ISSUERS_FILE) is JSON:
    {"issuers": [{"iss": ..., "jwks_url": ..., "jku": [...], "fhir_servers": [...], "tenants": [...],
                  "jwks": {inline JWK Set}}]}
The sandbox preset (AVH_CDS_TRUST_SANDBOX=1) adds https://sandbox.cds-hooks.org with its public keys
shipped in presets/: development only, since that issuer's private key is public.
"""
from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

PRESETS = Path(__file__).parent / "presets"
SANDBOX_ISS = "https://sandbox.cds-hooks.org"
SANDBOX_JKU = "https://sandbox.cds-hooks.org/.well-known/jwks.json"
LOOPBACK_NAMES = {"localhost"}
MAX_ISSUERS_FILE_BYTES = 4 * 1024 * 1024    # far above any real list of issuers and their inline keys


class SecurityConfigError(ValueError):
    """The security configuration cannot be used: raised at start-up, never per request."""


def server_key(url: str) -> tuple[str, str, int, str] | None:
    """A FHIR base URL reduced to what identifies it (scheme, host, port, path); None if unusable.

    URLs with credentials, a query or a fragment are never a FHIR base: they are refused outright.
    Every call names its fhirServer, and there are few: the usual ones are parsed once (the cache holds
    URLs of at most 2 KB, so a caller cannot fill memory with long ones).
    """
    return _known_server_key(url) if len(url) <= 2048 else _server_key(url)


def _server_key(url: str) -> tuple[str, str, int, str] | None:
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme.lower() not in {"http", "https"} or not parts.hostname:
        return None
    if parts.username is not None or parts.password is not None or parts.query or parts.fragment:
        return None
    scheme = parts.scheme.lower()
    return scheme, parts.hostname.lower(), port or (443 if scheme == "https" else 80), parts.path.rstrip("/")


_known_server_key = lru_cache(maxsize=256)(_server_key)


def is_loopback(url: str) -> bool:
    key = server_key(url)
    if key is None:
        return False
    host = key[1]
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class FhirServerPolicy:
    """Which fhirServer values may be contacted: an exact list of bases, or loopback only."""
    allowed: frozenset = frozenset()
    loopback: bool = False

    @classmethod
    def of(cls, urls, loopback_when_empty: bool = False) -> "FhirServerPolicy":
        keys = set()
        for url in urls:
            key = server_key(url) if isinstance(url, str) else None
            if key is None:
                raise SecurityConfigError(f"not a usable FHIR base URL: {url!r}")
            keys.add(key)
        return cls(frozenset(keys), loopback=loopback_when_empty and not keys)

    def allows(self, url: str) -> bool:
        key = server_key(url)
        if key is None:
            return False
        return key in self.allowed or (self.loopback and is_loopback(url))

    def describe(self) -> str:
        return "loopback only" if self.loopback else f"{len(self.allowed)} configured base URL(s)"


@dataclass(frozen=True)
class Issuer:
    iss: str
    fhir_servers: FhirServerPolicy
    jwks_url: str = ""
    jku: frozenset = frozenset()
    tenants: frozenset = frozenset()
    jwks: dict | None = field(default=None, compare=False)


def development_policy(fhir_servers: str) -> FhirServerPolicy:
    """fhirServer policy for development trust (auth off, sandbox preset): the listed bases, else loopback."""
    return FhirServerPolicy.of([u for u in fhir_servers.split(",") if u.strip()], loopback_when_empty=True)


def _strings(entry: dict, name: str, where: str) -> list[str]:
    value = entry.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise SecurityConfigError(f"{where}: {name!r} must be a list of non-empty strings")
    return value


def _issuer(entry, where: str) -> Issuer:
    if not isinstance(entry, dict) or not isinstance(entry.get("iss"), str) or not entry["iss"]:
        raise SecurityConfigError(f"{where}: each issuer needs an 'iss' string")
    jwks_url, jwks = entry.get("jwks_url", ""), entry.get("jwks")
    if not isinstance(jwks_url, str) or (jwks_url and not jwks_url.startswith(("https://", "http://"))):
        raise SecurityConfigError(f"{where}: 'jwks_url' must be an http(s) URL")
    if jwks is not None and not (isinstance(jwks, dict) and isinstance(jwks.get("keys"), list)):
        raise SecurityConfigError(f"{where}: 'jwks' must be a JWK Set ({{\"keys\": [...]}})")
    if not jwks_url and jwks is None:
        raise SecurityConfigError(f"{where}: give 'jwks_url' or an inline 'jwks'")
    return Issuer(iss=entry["iss"], jwks_url=jwks_url, jwks=jwks,
                  jku=frozenset(_strings(entry, "jku", where)),
                  tenants=frozenset(_strings(entry, "tenants", where)),
                  fhir_servers=FhirServerPolicy.of(_strings(entry, "fhir_servers", where)))


def sandbox_issuer(fhir_servers: str) -> Issuer:
    """The public sandbox as an issuer. Its keys come from the shipped file: its jku host is never fetched."""
    jwks = json.loads((PRESETS / "sandbox-jwks.json").read_text())
    return Issuer(iss=SANDBOX_ISS, jwks=jwks, jku=frozenset({SANDBOX_JKU}),
                  fhir_servers=development_policy(fhir_servers))


def load_issuers(issuers_file: str, trust_sandbox: bool, fhir_servers: str) -> dict[str, Issuer]:
    issuers: dict[str, Issuer] = {}
    if issuers_file:
        try:
            with open(issuers_file, "rb") as file:     # read at most the cap: /dev/zero or a FIFO never ends
                text = file.read(MAX_ISSUERS_FILE_BYTES + 1)
            if len(text) > MAX_ISSUERS_FILE_BYTES:
                raise ValueError(f"larger than {MAX_ISSUERS_FILE_BYTES} bytes")
            data = json.loads(text)
        except (OSError, ValueError) as exc:
            raise SecurityConfigError(f"AVH_CDS_ISSUERS_FILE {issuers_file}: cannot read ({exc})") from exc
        entries = data.get("issuers") if isinstance(data, dict) else None
        if not isinstance(entries, list):
            raise SecurityConfigError(f"AVH_CDS_ISSUERS_FILE {issuers_file}: needs {{\"issuers\": [...]}}")
        for n, entry in enumerate(entries):
            issuer = _issuer(entry, f"{issuers_file} issuers[{n}]")
            if issuer.iss in issuers:
                raise SecurityConfigError(f"{issuers_file}: issuer {issuer.iss} is listed twice")
            issuers[issuer.iss] = issuer
    if trust_sandbox:
        issuers[SANDBOX_ISS] = sandbox_issuer(fhir_servers)
    return issuers
