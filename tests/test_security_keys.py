"""JWK Sets fetched from the issuer's configured jwks_url: cached, re-fetched on rotation, rate-limited."""
import uuid

import pytest
import responses
from jwt.algorithms import ECAlgorithm

from service.security import keys

from tests.security_support import INVOKE, ISS, JWKS_URL, Keys, bearer, hook_request, http, issuer, loopback_only, make_app, token

__all__ = ["http", "loopback_only"]


def fetching_app(tmp_path, **env):
    return make_app(tmp_path, [issuer(jwks=None, jwks_url=JWKS_URL,
                                      jku=[JWKS_URL, "https://ehr.test/alternate-jwks.json"])], **env).test_client()


def invoke(client, tok):
    return client.post(INVOKE, json=hook_request(), headers=bearer(tok))


def jwks_calls(http):
    return [c for c in http.calls if c.request.url == JWKS_URL]


def test_key_set_is_fetched_once_and_cached(tmp_path, http):
    http.get(JWKS_URL, json=Keys.jwks())
    client = fetching_app(tmp_path)
    for _ in range(3):
        assert invoke(client, token()).status_code == 200
    assert len(http.calls) == 1 and len(jwks_calls(http)) == 1


def test_unknown_kid_refetches_at_most_once_per_interval(tmp_path, http):
    http.get(JWKS_URL, json=Keys.jwks())
    client = fetching_app(tmp_path, AVH_CDS_JWKS_REFRESH_SECONDS="60")
    assert invoke(client, token()).status_code == 200
    for _ in range(20):                                         # an attacker spraying random kids
        assert invoke(client, token(kid=str(uuid.uuid4()))).status_code == 401
    assert len(jwks_calls(http)) == 1


def test_rotated_key_is_found_by_refetching(tmp_path, http):
    http.get(JWKS_URL, json=Keys.jwks())
    client = fetching_app(tmp_path, AVH_CDS_JWKS_REFRESH_SECONDS="0")
    assert invoke(client, token()).status_code == 200
    http.replace(responses.GET, JWKS_URL, json=Keys.jwks(ec_kid="ec-2"))    # the EHR rotated its key
    assert invoke(client, token(kid="ec-2")).status_code == 200
    assert len(jwks_calls(http)) == 2


def test_keys_come_from_jwks_url_even_when_the_token_names_another_allowed_jku(tmp_path, http):
    http.get(JWKS_URL, json=Keys.jwks())
    client = fetching_app(tmp_path)
    assert invoke(client, token(jku="https://ehr.test/alternate-jwks.json")).status_code == 200
    assert [c.request.url for c in http.calls] == [JWKS_URL]


def test_disallowed_jku_is_never_fetched(tmp_path, http):
    client = fetching_app(tmp_path)
    assert invoke(client, token(jku="https://attacker.test/jwks.json")).status_code == 401
    assert not http.calls


@pytest.mark.parametrize("answer", [
    {"status": 302, "headers": {"Location": "https://attacker.test/jwks.json"}},
    {"status": 500, "json": {"error": "down"}},
    {"status": 200, "body": "not json"},
    {"status": 200, "json": {"keys": [{"kty": "oct", "kid": "ec-1", "k": "c2VjcmV0"}]}},   # a shared secret
])
def test_a_bad_jwks_answer_refuses_the_token_and_follows_no_redirect(tmp_path, http, answer):
    http.get(JWKS_URL, **answer)
    client = fetching_app(tmp_path)
    assert invoke(client, token()).status_code == 401
    assert [c.request.url for c in http.calls] == [JWKS_URL]


def test_failed_refresh_keeps_the_keys_already_known(tmp_path, http):
    http.get(JWKS_URL, json=Keys.jwks())
    client = fetching_app(tmp_path, AVH_CDS_JWKS_REFRESH_SECONDS="0", AVH_CDS_JWKS_CACHE_SECONDS="0")
    assert invoke(client, token()).status_code == 200
    http.replace(responses.GET, JWKS_URL, status=503)
    assert invoke(client, token()).status_code == 200
    assert len(jwks_calls(http)) == 2


def rotated_jwks() -> dict:
    """The EHR's key set after it replaced the key of kid ec-1 (Keys.ec, now revoked) with Keys.other_ec."""
    return {"keys": [{**ECAlgorithm.to_jwk(Keys.other_ec.public_key(), as_dict=True), "kid": "ec-1", "use": "sig"}]}


def test_a_kid_whose_key_is_replaced_checks_with_the_new_key(tmp_path, http):
    http.get(JWKS_URL, json=Keys.jwks())
    client = fetching_app(tmp_path, AVH_CDS_JWKS_REFRESH_SECONDS="0", AVH_CDS_JWKS_CACHE_SECONDS="0")
    assert invoke(client, token()).status_code == 200
    http.replace(responses.GET, JWKS_URL, json=rotated_jwks())
    assert invoke(client, token()).status_code == 401                          # the revoked key
    assert invoke(client, token(key=Keys.other_ec)).status_code == 200


def test_a_check_built_across_a_refresh_is_not_kept_for_the_replaced_key(tmp_path, http, monkeypatch):
    """Thread A reads kid ec-1's key and builds its check (~1 ms) while thread B refreshes the key set, in which
    ec-1 now has another key: the check A built of the revoked key must not stay bound after the refresh."""
    http.get(JWKS_URL, json=Keys.jwks())
    app = make_app(tmp_path, [issuer(jwks=None, jwks_url=JWKS_URL)])
    key_set = app.extensions["avh_security"].verifier.keys[ISS]
    now = [0.0]
    key_set.clock = lambda: now[0]
    build = keys.signature_check

    def build_while_b_refreshes(jwk):
        monkeypatch.setattr(keys, "signature_check", build)
        now[0] = key_set.cache_seconds + key_set.refresh_seconds + 1     # the cache is stale: B refreshes
        http.replace(responses.GET, JWKS_URL, json=rotated_jwks())
        assert key_set.key("ec-1", "ES384") is not None                   # B binds the new key...
        return build(jwk)                                                 # ...then A's check of the old one ends
    monkeypatch.setattr(keys, "signature_check", build_while_b_refreshes)
    assert key_set.key("ec-1", "ES384") is not None                       # A
    assert len(jwks_calls(http)) == 2
    client = app.test_client()
    assert invoke(client, token()).status_code == 401                     # the revoked key
    assert invoke(client, token(key=Keys.other_ec)).status_code == 200
