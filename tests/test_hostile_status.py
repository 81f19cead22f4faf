"""Hostile review, wrong status codes (issue 15, items 5 to 7): inputs an anonymous or authenticated caller
chooses that used to give a 500, HTML, or the wrong 4xx. Each test's docstring names the attack."""
import base64
import json
import time
import uuid

import pytest
from jwt.api_jws import PyJWS

from tests.security_support import (BASE, INVOKE, ISS, Keys, bearer, claims, hook_request, issuer, make_app, token)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unsigned(header: dict, payload: dict) -> str:
    return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}.AAAA"


def _signed_raw(payload: str) -> str:
    """A validly signed token whose payload is this exact JSON text (PyJWT refuses to mint some of these)."""
    return PyJWS().encode(payload.encode(), Keys.ec, algorithm="ES384", headers={"kid": "ec-1", "typ": "JWT"})


def _raw_claims(**wrong) -> str:
    values = {**claims(tenant="hosp-a"), **wrong}
    return _signed_raw(json.dumps(values))


HEADER = {"alg": "ES384", "typ": "JWT", "kid": "ec-1"}
WRONG_TYPES = {
    "jku as a list": lambda: _unsigned({**HEADER, "jku": ["x"]}, claims(tenant="hosp-a")),
    "jku as an object": lambda: _unsigned({**HEADER, "jku": {}}, claims(tenant="hosp-a")),
    "kid as a list": lambda: _unsigned({**HEADER, "kid": ["ec-1"]}, claims(tenant="hosp-a")),
    "alg as a list": lambda: _unsigned({**HEADER, "alg": ["ES384"]}, claims(tenant="hosp-a")),
    "typ as an object": lambda: _unsigned({**HEADER, "typ": {}}, claims(tenant="hosp-a")),
    "header is a list": lambda: f"{_b64(b'[1]')}.{_b64(json.dumps(claims()).encode())}.AAAA",
    "payload is a list": lambda: f"{_b64(json.dumps(HEADER).encode())}.{_b64(b'[1]')}.AAAA",
    "signed, tenant as a list": lambda: token(tenant=["hosp-a"]),
    "signed, tenant as an object": lambda: token(tenant={"id": "hosp-a"}),
    "signed, iss as a list": lambda: _raw_claims(iss=[ISS]),
    "signed, aud as a number": lambda: token(aud=5, tenant="hosp-a"),
    "signed, aud as an object": lambda: token(aud={}, tenant="hosp-a"),
    "signed, exp as a string": lambda: token(exp="tomorrow", tenant="hosp-a"),
    "signed, exp as a list": lambda: token(exp=[1], tenant="hosp-a"),
    "signed, exp Infinity": lambda: _signed_raw(json.dumps(claims(tenant="hosp-a")).replace(
        '"exp": ', '"exp": Infinity, "x": ')),
    "signed, iat as a string": lambda: token(iat="now", tenant="hosp-a"),
    "signed, iat 1e308": lambda: token(iat=1e308, exp=1e308, tenant="hosp-a"),
    "signed, jti as a number": lambda: token(jti=5, tenant="hosp-a"),
    "signed, jti as a list": lambda: token(jti=["a"], tenant="hosp-a"),
    "signed, jti empty": lambda: token(jti="", tenant="hosp-a"),
}


@pytest.mark.parametrize("case", WRONG_TYPES)
def test_jwt_header_or_claim_of_the_wrong_type_is_a_json_401(tmp_path, case):
    """Attack: a JWT whose header (jku, kid, alg, typ) or claims (tenant, iss, aud, exp, iat, jti) have the
    wrong JSON type, signed or not; `jku: ["x"]` and `tenant: ["hosp-a"]` used to be a 500 (unhashable)."""
    client = make_app(tmp_path, [issuer(tenants=["hosp-a"])]).test_client()
    response = client.post(INVOKE, json=hook_request(), headers=bearer(WRONG_TYPES[case]()))
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert response.json["error"] == "invalid_token" and response.json["reason"] != "other"
    # the well-typed token still passes: the refusal is about the type, not the issuer set-up
    assert client.post(INVOKE, json=hook_request(), headers=bearer(token(tenant="hosp-a"))).status_code == 200
