"""The token's unverified first read (header and iss, to choose the key) is a quick one of our own; PyJWT then
reads the token strictly and verifies it. Whatever the two disagree on, or the first cannot read, is a 401."""
import base64
import json

import pytest

from tests.security_support import FHIR, INVOKE, bearer, hook_request, http, make_app, token

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
}


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
