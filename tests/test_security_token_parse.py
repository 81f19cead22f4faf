"""The token is read once, strictly, by our own parser (service/security/tokens.py `_parse`: at least as strict
as PyJWT's, which it replaced), then its signature and claims are checked. Whatever it cannot read, or reads
otherwise than a strict reader would, is a 401; so is every claim PyJWT's jwt.decode refused."""
import base64
import json
import time

import jwt
import pytest

from tests.security_support import FHIR, INVOKE, Keys, bearer, claims, hook_request, http, make_app, token

__all__ = ["http"]      # fixture used by the tests below


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _with_segment(index: int, value: str) -> str:
    parts = token().split(".")
    parts[index] = value
    return ".".join(parts)


def _junk_in(index: int) -> str:
    """A character outside the base64url alphabet: the quick read skips it, PyJWT refuses the token."""
    parts = token().split(".")
    parts[index] = parts[index][:8] + "!" + parts[index][8:]
    return ".".join(parts)


UNREADABLE = {
    "header not JSON": lambda: _with_segment(0, b64(b"{not json")),
    "header a JSON list": lambda: _with_segment(0, b64(b'["ES384"]')),
    "claims a JSON string": lambda: _with_segment(1, b64(json.dumps("iss").encode())),
    "claims not base64": lambda: _with_segment(1, "%%%%"),
    "non-ASCII in the header": lambda: _with_segment(0, "eyJhbGciOiJFUzM4NCJ9é"),
    "two segments": lambda: ".".join(token().split(".")[:2]),
    "four segments": lambda: token() + ".AAAA",
    "junk character in the header": lambda: _junk_in(0),
    "junk character in the claims": lambda: _junk_in(1),
    "junk character in the signature": lambda: _junk_in(2),
    "header padded with '='s in the middle": lambda: _with_segment(0, token().split(".")[0][:4] + "==" + token().split(".")[0][4:]),
    "'+' of standard base64 in the signature": lambda: _replace_in(2, "+"),
    "'/' of standard base64 in the claims": lambda: _replace_in(1, "/"),
    "three '=' of padding": lambda: _with_segment(2, token().split(".")[2] + "==="),
    "'=' padding to a length not a multiple of 4": lambda: _with_segment(2, token().split(".")[2][:-1] + "="),
    "stray bits: not the canonical base64url": lambda: _non_canonical(0),
    "a segment one character too long for base64": lambda: _with_segment(2, token().split(".")[2] + "A"),
    "signature cut short (valid base64url)": lambda: _with_segment(2, b64(base64.urlsafe_b64decode(
        token().split(".")[2] + "==")[:-3])),
    "empty signature": lambda: _with_segment(2, ""),
    "longer than any token a CDS client sends": lambda: token(padding="x" * 20_000),
    "an integer beyond 64 bits in the claims": lambda: _with_segment(1, b64(json.dumps(claims(exp=2**70)).encode())),
    "NaN in the claims": lambda: _with_segment(1, b64(json.dumps(claims()).replace('"exp": ', '"exp": NaN, "x": ').encode())),
}


def _replace_in(index: int, character: str) -> str:
    parts = token().split(".")
    parts[index] = parts[index][:8] + character + parts[index][9:]
    return ".".join(parts)


def _non_canonical(index: int) -> str:
    """The last character changed in a bit the decoder drops: the same bytes, spelt otherwise."""
    parts = token().split(".")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    changed = parts[index][:-1] + alphabet[alphabet.index(parts[index][-1]) ^ 1]
    assert base64.urlsafe_b64decode(_pad(changed)) == base64.urlsafe_b64decode(_pad(parts[index])), "no stray bits"
    parts[index] = changed
    return ".".join(parts)


def _pad(segment: str) -> str:
    return segment + "=" * (-len(segment) % 4)


@pytest.mark.parametrize("case", UNREADABLE)
def test_a_token_either_reader_cannot_read_is_a_json_401_that_echoes_nothing(tmp_path, http, case):
    response = make_app(tmp_path).test_client().post(INVOKE, json=hook_request(fhir_server=FHIR, prefetch_keys=()),
                                                     headers=bearer(bad := UNREADABLE[case]()))
    assert response.status_code == 401 and response.json["error"] == "invalid_token"
    assert all(part not in response.get_data(as_text=True) for part in bad.split(".") if len(part) > 3)
    assert not http.calls


def test_the_same_token_read_quickly_then_verified_passes_once(tmp_path, http):
    client, tok = make_app(tmp_path).test_client(), token()
    assert client.post(INVOKE, json=hook_request(), headers=bearer(tok)).status_code == 200
    assert client.post(INVOKE, json=hook_request(), headers=bearer(tok)).status_code == 401     # jti replayed


def _signed(header_extra: dict | None = None, **claim_overrides) -> str:
    return jwt.encode(claims(**claim_overrides), Keys.ec, algorithm="ES384",
                      headers={"kid": "ec-1", "typ": "JWT", **(header_extra or {})})


NOW = int(time.time())
SIGNED_BUT_REFUSED = {          # a valid signature over claims or headers jwt.decode refused (or we do, stricter)
    "crit header": lambda: _signed({"crit": ["b64"], "b64": True}),
    "b64 header": lambda: _signed({"b64": False}),
    "expired": lambda: _signed(exp=NOW - 3600, iat=NOW - 3700),
    "not yet valid (nbf)": lambda: _signed(nbf=NOW + 3600),
    "issued in the future (iat)": lambda: _signed(iat=NOW + 3600, exp=NOW + 3700),
    "exp a string": lambda: _signed(exp=str(NOW + 300)),
    "exp a boolean": lambda: _signed(exp=True),
    "nbf a string": lambda: _signed(nbf="0"),
    "aud another URL": lambda: _signed(aud="https://elsewhere.example/cds-services/avh-patient-view"),
    "aud a list without this URL": lambda: _signed(aud=["https://elsewhere.example/"]),
    "aud a list with a number": lambda: _signed(aud=[1, claims()["aud"]]),
    "aud an object": lambda: _signed(aud={"x": claims()["aud"]}),
    "aud empty": lambda: _signed(aud=""),
    "sub a number": lambda: _signed(sub=7),
    "jti a number": lambda: _signed(jti=7),
    "jti empty": lambda: _signed(jti=""),
    "no exp": lambda: _signed(exp=None),
    "no jti": lambda: _signed(jti=None),
    "no aud": lambda: _signed(aud=None),
    "iss null": lambda: _signed(iss=None),
}


@pytest.mark.parametrize("case", SIGNED_BUT_REFUSED)
def test_a_signed_token_with_a_claim_or_header_jwt_decode_refused_is_a_401(tmp_path, http, case):
    client = make_app(tmp_path).test_client()
    response = client.post(INVOKE, json=hook_request(), headers=bearer(SIGNED_BUT_REFUSED[case]()))
    assert response.status_code == 401 and response.json["reason"] not in {"other", "replayed_jti"}
    assert client.post(INVOKE, json=hook_request(), headers=bearer(_signed())).status_code == 200


def test_an_audience_list_naming_this_url_and_a_sub_string_pass(tmp_path, http):
    client = make_app(tmp_path).test_client()
    tok = _signed(aud=["https://elsewhere.example/", claims()["aud"]], sub="ehr-client", nbf=NOW - 10)
    assert client.post(INVOKE, json=hook_request(), headers=bearer(tok)).status_code == 200
