"""Shared by the tests/test_security*.py files: a test issuer with generated keys, tokens, requests."""
from __future__ import annotations

import functools
import json
import socket
import time
import uuid

import jwt
import pytest
import responses
from cryptography.hazmat.primitives.asymmetric import ec as ec_keys, rsa as rsa_keys
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from service import create_app
from service.api.accesslog import log_routes_of
from service.config import Settings
from tests.fhir_records import named_in_pathway_chart, searchset

ISS = "https://ehr.test"
JWKS_URL = "https://ehr.test/.well-known/jwks.json"
FHIR = "https://fhir.ehr.test/r4"
BASE = "http://localhost"
INVOKE = "/cds-services/avh-patient-view"
SERVICE_KEYS = ("patient", "conditions", "observations", "procedures", "medicationRequests", "serviceRequests",
                "diagnosticReports", "medicationAdministrations")


class Keys:
    """Generated once per test session: ES384 (kid ec-1) and RS384 (kid rsa-1) signing keys."""
    ec = ec_keys.generate_private_key(ec_keys.SECP384R1())
    rsa = rsa_keys.generate_private_key(public_exponent=65537, key_size=2048)
    other_ec = ec_keys.generate_private_key(ec_keys.SECP384R1())   # a key nobody trusts

    @classmethod
    def jwks(cls, *, ec_kid="ec-1", rsa_kid="rsa-1") -> dict:
        ec_jwk = {**ECAlgorithm.to_jwk(cls.ec.public_key(), as_dict=True), "kid": ec_kid, "use": "sig"}
        rsa_jwk = {**RSAAlgorithm.to_jwk(cls.rsa.public_key(), as_dict=True), "kid": rsa_kid, "use": "sig"}
        return {"keys": [ec_jwk, rsa_jwk]}


def claims(path: str = INVOKE, **overrides) -> dict:
    now = int(time.time())
    values = {"iss": ISS, "aud": BASE + path, "iat": now, "exp": now + 300, "jti": str(uuid.uuid4())}
    values.update(overrides)
    return {k: v for k, v in values.items() if v is not None}


def token(path: str = INVOKE, *, key=None, alg="ES384", kid="ec-1", jku=None, typ="JWT", **claim_overrides) -> str:
    headers = {"kid": kid, "typ": typ, **({"jku": jku} if jku else {})}
    key = key or (Keys.rsa if alg.startswith(("RS", "PS")) else Keys.ec)
    return jwt.encode(claims(path, **claim_overrides), key, algorithm=alg, headers=headers)


def bearer(tok: str) -> dict:
    return {"Authorization": f"Bearer {tok}"}


def issuer(**overrides) -> dict:
    entry = {"iss": ISS, "jwks": Keys.jwks(), "jku": [JWKS_URL], "fhir_servers": [FHIR]}
    entry.update(overrides)
    return {k: v for k, v in entry.items() if v is not None}


def make_app(tmp_path, issuers: list[dict] | None = None, **env):
    """An app with AVH_CDS_AUTH=required and an issuer file naming the given issuers (default: the test one)."""
    path = tmp_path / "issuers.json"
    path.write_text(json.dumps({"issuers": [issuer()] if issuers is None else issuers}))
    environ = {"AVH_CDS_AUTH": "required", "AVH_CDS_ISSUERS_FILE": str(path), **env}
    return create_app(Settings.from_env(environ))


def hook_request(patient_name=("Ada", "Testpatient"), fhir_server: str | None = None, prefetch_keys=SERVICE_KEYS,
                 **extra) -> dict:
    """A patient-view request whose prefetch shows an AVH compressing the cord (so cards come back)."""
    person, *conditions = named_in_pathway_chart(*patient_name)
    prefetch = {"patient": person, "conditions": searchset(conditions)}
    prefetch = {key: prefetch.get(key) for key in prefetch_keys}
    body = {"hook": "patient-view", "hookInstance": str(uuid.uuid4()),
            "context": {"patientId": person["id"], "userId": "Practitioner/dr-1"}, "prefetch": prefetch, **extra}
    if fhir_server:
        body["fhirServer"] = fhir_server
    return body


@pytest.fixture
def http():
    """Every outgoing HTTP request via requests is intercepted: unregistered URLs fail, calls are recorded."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    """Belt and braces: any socket connection beyond loopback (urllib, raw sockets) fails the test."""
    real_connect = socket.socket.connect

    def connect(self, address):
        host = address[0] if isinstance(address, tuple) else address
        if host not in {"127.0.0.1", "::1", "localhost"}:
            raise AssertionError(f"test tried to reach an outside address: {host}")
        return real_connect(self, address)
    monkeypatch.setattr(socket.socket, "connect", connect)


@functools.cache
def _development_app():
    """`avh-cds serve`'s app (the fixture FHIR endpoint, AVH_CDS_AUTH=off), made once."""
    return create_app(Settings.from_env({"AVH_CDS_AUTH": "off"}, fixture_fhir=True))


def served_by_development_app() -> None:
    """A logger outside an app (gunicorn's, the development server's) names a path by the routes of the app its
    process serves, loaded before any request (service.api.accesslog.log_routes_of): here `avh-cds serve`'s."""
    log_routes_of(_development_app())
