"""The ES384 and ES256 signature checks with AWS-LC (service/security/signatures.py), hostile: they must answer as
cryptography (OpenSSL, the check used before) on every signature, pass Wycheproof, refuse keys of another curve,
and work from several threads and after a fork."""
import base64
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import awscrt.crypto
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from hypothesis import given, settings, strategies as st
from jwt import PyJWK
from jwt.algorithms import ECAlgorithm, RSAAlgorithm, get_default_algorithms as jwt_algorithms

from service.security.signatures import KeyDoesNotFitAlg, signature_check
from service.security.tokens import AuthFailed
from tests.security_support import INVOKE, Keys, bearer, claims, hook_request, http, issuer, make_app, token

__all__ = ["http"]      # a fixture used below

VECTORS = Path(__file__).parent / "data" / "wycheproof"
CURVES = {   # alg -> curve, hash, byte size of r and s, order n
    "ES256": (ec.SECP256R1(), hashes.SHA256(), 32,
              0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551),
    "ES384": (ec.SECP384R1(), hashes.SHA384(), 48,
              0xffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973),
}
KEYS = {alg: ec.generate_private_key(curve) for alg, (curve, *_) in CURVES.items()}
OTHER_KEYS = {alg: ec.generate_private_key(curve) for alg, (curve, *_) in CURVES.items()}


def jwk_of(public_key) -> dict:
    return ECAlgorithm.to_jwk(public_key, as_dict=True)


def check_for(alg: str, public_key):
    return signature_check(PyJWK(jwk_of(public_key), algorithm=alg))


CHECKS = {alg: check_for(alg, key.public_key()) for alg, key in KEYS.items()}


def reference(alg: str, message: bytes, signature: bytes) -> bool:
    """The check before AWS-LC: PyJWT's ECAlgorithm with cryptography."""
    return ECAlgorithm(getattr(ECAlgorithm, f"SHA{alg[2:]}")).verify(message, KEYS[alg].public_key(), signature)


def raw(alg: str, der: bytes) -> bytes:
    size = CURVES[alg][2]
    r, s = decode_dss_signature(der)
    return r.to_bytes(size, "big") + s.to_bytes(size, "big")


def sign(alg: str, message: bytes, key=None) -> bytes:
    return raw(alg, (key or KEYS[alg]).sign(message, ec.ECDSA(CURVES[alg][1])))


def with_rs(alg: str, signature: bytes, r: int | None = None, s: int | None = None) -> bytes:
    """signature with r or s replaced (r and s of at most the curve's byte size)."""
    size = CURVES[alg][2]
    old_r, old_s = int.from_bytes(signature[:size], "big"), int.from_bytes(signature[size:], "big")
    return (old_r if r is None else r).to_bytes(size, "big") + (old_s if s is None else s).to_bytes(size, "big")


def bit_flipped(signature: bytes, bit: int) -> bytes:
    return bytes(b ^ (0x80 >> bit % 8) if i == bit // 8 else b for i, b in enumerate(signature))


def other_alg(alg: str) -> str:
    return "ES256" if alg == "ES384" else "ES384"


# kind -> (alg, message, good signature of it, r, s, n, byte size, draw) -> signature; and whether it is good
FORGERIES = {
    "valid": (lambda a, m, good, r, s, n, size, draw: good, True),
    "high S (n - s: ECDSA is malleable, and JWS does not forbid it)":
        (lambda a, m, good, r, s, n, size, draw: with_rs(a, good, s=n - s), True),
    "bit flipped": (lambda a, m, good, r, s, n, size, draw: bit_flipped(good, draw(st.integers(0, 16 * size - 1))),
                    False),
    "r = 0": (lambda a, m, good, r, s, n, size, draw: with_rs(a, good, r=0), False),
    "s = 0": (lambda a, m, good, r, s, n, size, draw: with_rs(a, good, s=0), False),
    "r = n": (lambda a, m, good, r, s, n, size, draw: with_rs(a, good, r=n), False),
    "s = n": (lambda a, m, good, r, s, n, size, draw: with_rs(a, good, s=n), False),
    "r > n": (lambda a, m, good, r, s, n, size, draw: with_rs(a, good, r=draw(st.integers(n + 1, 2 ** (8 * size) - 1))),
              False),
    "s > n": (lambda a, m, good, r, s, n, size, draw: with_rs(a, good, s=draw(st.integers(n + 1, 2 ** (8 * size) - 1))),
              False),
    "r + n (the same r mod n)": (lambda a, m, good, r, s, n, size, draw:
                                 with_rs(a, good, r=r + n) if r + n < 2 ** (8 * size) else bytes(2 * size), False),
    "s + n (the same s mod n)": (lambda a, m, good, r, s, n, size, draw:
                                 with_rs(a, good, s=s + n) if s + n < 2 ** (8 * size) else bytes(2 * size), False),
    "r = n - 1": (lambda a, m, good, r, s, n, size, draw: with_rs(a, good, r=n - 1), False),
    "s = n - 1": (lambda a, m, good, r, s, n, size, draw: with_rs(a, good, s=n - 1), False),
    "r = 1, s = 1": (lambda a, m, good, r, s, n, size, draw: with_rs(a, good, r=1, s=1), False),
    "all zero": (lambda a, m, good, r, s, n, size, draw: bytes(2 * size), False),
    "all 0xFF": (lambda a, m, good, r, s, n, size, draw: b"\xff" * 2 * size, False),
    "one byte short": (lambda a, m, good, r, s, n, size, draw: good[:-1], False),
    "one byte long": (lambda a, m, good, r, s, n, size, draw: good + b"\x00", False),
    "a zero byte in front": (lambda a, m, good, r, s, n, size, draw: b"\x00" + good, False),
    "a zero byte in front of s (r || 0 || s: the same integers)":
        (lambda a, m, good, r, s, n, size, draw: good[:size] + b"\x00" + good[size:], False),
    "empty": (lambda a, m, good, r, s, n, size, draw: b"", False),
    "DER where r || s belongs": (lambda a, m, good, r, s, n, size, draw: KEYS[a].sign(m, ec.ECDSA(CURVES[a][1])),
                                 False),
    "signature of another message": (lambda a, m, good, r, s, n, size, draw: sign(a, m + b"."), False),
    "signed by another key of the curve": (lambda a, m, good, r, s, n, size, draw: sign(a, m, OTHER_KEYS[a]), False),
    "signed by a key of the other curve": (lambda a, m, good, r, s, n, size, draw: sign(other_alg(a), m), False),
    "r and s of the other curve's size": (lambda a, m, good, r, s, n, size, draw:
                                          sign(other_alg(a), m, OTHER_KEYS[other_alg(a)]), False),
    "random bytes of the right length": (lambda a, m, good, r, s, n, size, draw:
                                         draw(st.binary(min_size=2 * size, max_size=2 * size)), False),
    "random bytes": (lambda a, m, good, r, s, n, size, draw: draw(st.binary(max_size=3 * size)), False),
}


@settings(max_examples=600, deadline=None)
@given(alg=st.sampled_from(sorted(CURVES)), message=st.binary(max_size=300), kind=st.sampled_from(sorted(FORGERIES)),
       data=st.data())
def test_aws_lc_answers_as_cryptography_on_every_signature(alg, message, kind, data):
    size, n = CURVES[alg][2], CURVES[alg][3]
    good = sign(alg, message)
    r, s = int.from_bytes(good[:size], "big"), int.from_bytes(good[size:], "big")
    make, is_good = FORGERIES[kind]
    signature = make(alg, message, good, r, s, n, size, data.draw)
    assert CHECKS[alg](message, signature) is is_good
    assert reference(alg, message, signature) is is_good


def wycheproof(name: str) -> list:
    """(alg, JWK, test) of each test of a reduced Wycheproof file (tests/data/wycheproof/README.md)."""
    vectors = json.loads((VECTORS / f"{name}.json").read_text())
    alg = {"secp256r1": "ES256", "secp384r1": "ES384"}[vectors["testGroups"][0]["curve"]]
    cases = []
    for group in vectors["testGroups"]:
        point = bytes.fromhex(group["uncompressed"])
        size = CURVES[alg][2]
        assert point[0] == 4 and len(point) == 1 + 2 * size
        jwk = {"kty": "EC", "crv": {"ES256": "P-256", "ES384": "P-384"}[alg],
               "x": base64.urlsafe_b64encode(point[1:1 + size]).rstrip(b"=").decode(),
               "y": base64.urlsafe_b64encode(point[1 + size:]).rstrip(b"=").decode()}
        cases += [(alg, jwk, test) for test in group["tests"]]
    assert len(cases) == vectors["numberOfTests"]
    return cases


WYCHEPROOF = wycheproof("ecdsa_secp384r1_sha384_p1363_test") + wycheproof("ecdsa_secp256r1_sha256_p1363_test")


@pytest.mark.parametrize("alg, jwk, test", WYCHEPROOF,
                         ids=[f"{alg}-{test['tcId']}-{test['comment']}" for alg, _, test in WYCHEPROOF])
def test_wycheproof_p1363_vectors(alg, jwk, test):
    check = signature_check(PyJWK(jwk, algorithm=alg))
    message, signature = bytes.fromhex(test["msg"]), bytes.fromhex(test["sig"])
    assert check(message, signature) is (test["result"] == "valid")


def test_wycheproof_vectors_hold_both_answers():
    results = {(alg, test["result"]) for alg, _, test in WYCHEPROOF}
    assert results == {("ES256", "valid"), ("ES256", "invalid"), ("ES384", "valid"), ("ES384", "invalid")}


@pytest.mark.parametrize("alg, curve", [("ES384", ec.SECP256R1()), ("ES256", ec.SECP384R1()),
                                        ("ES384", ec.SECP521R1()), ("ES512", ec.SECP384R1())])
def test_an_ec_key_on_another_curve_than_its_alg_is_refused(alg, curve):
    with pytest.raises(KeyDoesNotFitAlg):
        signature_check(PyJWK(jwk_of(ec.generate_private_key(curve).public_key()), algorithm=alg))


def test_es512_and_rsa_keep_pyjwt_and_cryptography():
    key = ec.generate_private_key(ec.SECP521R1())
    check = signature_check(PyJWK(jwk_of(key.public_key()), algorithm="ES512"))
    der = key.sign(b"m", ec.ECDSA(hashes.SHA512()))
    r, s = decode_dss_signature(der)
    assert check(b"m", r.to_bytes(66, "big") + s.to_bytes(66, "big"))
    assert not check(b"n", r.to_bytes(66, "big") + s.to_bytes(66, "big"))


def test_a_jwk_with_its_private_part_checks_with_the_public_key():
    key = KEYS["ES384"]
    check = signature_check(PyJWK(ECAlgorithm.to_jwk(key, as_dict=True), algorithm="ES384"))
    assert check(b"m", sign("ES384", b"m")) and not check(b"m", sign("ES384", b"n"))


@pytest.mark.parametrize("alg", ["ES512", "RS384", "PS384"])
def test_a_jwk_with_its_private_part_checks_with_the_public_key_under_pyjwt_too(alg):
    """PyJWT's RSA and RSA-PSS verify call key.verify, which a private key lacks (AttributeError: a 500)."""
    key = Keys.rsa if alg[0] in "RP" else ec.generate_private_key(ec.SECP521R1())
    check = signature_check(PyJWK(jwt_algorithms()[alg].to_jwk(key, as_dict=True), algorithm=alg))
    signed = jwt_algorithms()[alg].sign(b"m", key)
    assert check(b"m", signed) and not check(b"n", signed)


def test_an_rs384_token_checked_by_a_key_set_holding_the_private_rsa_key_is_answered(tmp_path, http):
    """An issuer whose key set also carries the private part of its RSA key: checked with the public key, as EC keys
    are (was a 500)."""
    jwks = {"keys": [{**RSAAlgorithm.to_jwk(Keys.rsa, as_dict=True), "kid": "rsa-private", "use": "sig"}]}
    client = make_app(tmp_path, [issuer(jwks=jwks)]).test_client()
    assert client.post(INVOKE, json=hook_request(), headers=bearer(token(alg="RS384", kid="rsa-private"))).status_code \
        == 200
    forged = token(alg="RS384", kid="rsa-private", key=rsa.generate_private_key(public_exponent=65537, key_size=2048))
    assert client.post(INVOKE, json=hook_request(), headers=bearer(forged)).status_code == 401


def test_threads_share_one_check():
    """gunicorn gthread: the worker's threads check with the one AWS-LC key KeySet bound."""
    signed = [(m, sign("ES384", m)) for m in (os.urandom(40) for _ in range(20))]
    calls = [(m, sig if i % 2 else bit_flipped(sig, i), bool(i % 2)) for i, (m, sig) in enumerate(signed * 20)]
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda call: CHECKS["ES384"](call[0], call[1]), calls))
    assert answers == [good for _, _, good in calls]


def test_a_check_built_before_a_fork_works_in_the_child():
    """Keys may be bound before gunicorn forks its workers (preload)."""
    good, bad = sign("ES384", b"m"), sign("ES384", b"n")
    pid = os.fork()
    if pid == 0:
        os._exit(0 if CHECKS["ES384"](b"m", good) and not CHECKS["ES384"](b"m", bad) else 1)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0


def test_awscrt_starts_no_thread():
    """Nor at import, nor to build a key and check signatures: a fork copies no half-held lock of a thread."""
    script = """if True:
        import os
        from cryptography.hazmat.primitives.asymmetric import ec, rsa
        from jwt import PyJWK
        from jwt.algorithms import ECAlgorithm, RSAAlgorithm, get_default_algorithms as jwt_algorithms
        import awscrt.crypto
        from service.security.signatures import signature_check
        key = ec.generate_private_key(ec.SECP384R1()).public_key()
        check = signature_check(PyJWK(ECAlgorithm.to_jwk(key, as_dict=True), algorithm="ES384"))
        check(b"m", bytes(96)), check(b"m", b"x" * 96)
        print(len(os.listdir("/proc/self/task")))"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).parent.parent)
    assert out.stdout.strip() == "1"


def test_an_es384_token_is_checked_by_aws_lc_end_to_end(tmp_path, http, monkeypatch):
    digests = []
    verify = awscrt.crypto.EC.verify
    monkeypatch.setattr(awscrt.crypto.EC, "verify", lambda key, digest, der: digests.append(digest) or verify(key, digest, der))
    response = make_app(tmp_path).test_client().post(INVOKE, json=hook_request(), headers=bearer(token()))
    assert response.status_code == 200 and response.json["cards"]
    assert [len(digest) for digest in digests] == [48]       # one SHA-384 digest, checked by AWS-LC


def test_a_tampered_es384_signature_is_refused_as_before(tmp_path, http):
    app = make_app(tmp_path)
    head, payload, signature = token().split(".")
    tampered = f"{head}.{payload}.{'B' if signature[0] == 'A' else 'A'}{signature[1:]}"
    response = app.test_client().post(INVOKE, json=hook_request(), headers=bearer(tampered))
    assert response.status_code == 401 and response.json["reason"] == "bad_signature"
    with pytest.raises(AuthFailed, match="^InvalidSignatureError: Signature verification failed$"):
        app.extensions["avh_security"].verifier.begin(f"Bearer {tampered}", "http://localhost" + INVOKE)
    assert not http.calls


def test_an_es384_token_from_a_p256_key_is_refused(tmp_path, http):
    """ES384 is ECDSA on P-384 (RFC 7518 3.4); PyJWT checked a SHA-384 signature by a P-256 key and passed it."""
    p256 = ec.generate_private_key(ec.SECP256R1())
    jwks = {"keys": [*Keys.jwks()["keys"], {**jwk_of(p256.public_key()), "kid": "p256", "use": "sig"}]}
    app = make_app(tmp_path, [issuer(jwks=jwks)])
    header = {"alg": "ES384", "typ": "JWT", "kid": "p256"}
    signing_input = ".".join(base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=").decode()
                             for part in (header, claims()))
    der = p256.sign(signing_input.encode(), ec.ECDSA(hashes.SHA384()))
    signature = base64.urlsafe_b64encode(raw("ES256", der)).rstrip(b"=").decode()
    with pytest.raises(AuthFailed, match="no key for the token's kid .* for alg ES384"):
        app.extensions["avh_security"].verifier.begin(f"Bearer {signing_input}.{signature}", "http://localhost" + INVOKE)


def test_awscrt_is_imported_only_with_authentication_on(tmp_path):
    """Loading AWS-LC seeds its entropy source (~0.5 G instructions, ~5 MB a process): a process that checks no
    signature (AVH_CDS_AUTH=off, the command-line tools) does not load it; one with authentication on loads it when
    the app is made, not when the first token comes."""
    script = f"""if True:
        import sys
        from service import create_app
        from service.config import Settings
        for auth in ("off", "required"):
            create_app(Settings.from_env({{"AVH_CDS_AUTH": auth}}, sqlite_path={str(tmp_path / "db")!r}))
            print(auth, "awscrt.crypto" in sys.modules)"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).parent.parent, env={**os.environ, "AVH_CDS_LOG_LEVEL": "ERROR"})
    assert out.stdout.split("\n")[:2] == ["off False", "required True"]


def test_a_missing_awscrt_fails_at_start_up_with_authentication_on(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "awscrt.crypto", None)       # as when awscrt is not installed or broken
    with pytest.raises(ImportError, match="awscrt"):
        make_app(tmp_path, issuers=[])              # no issuer: no key is ever bound, it still fails here
    from service import create_app
    from service.config import Settings
    assert create_app(Settings.from_env({"AVH_CDS_AUTH": "off"}, sqlite_path=tmp_path / "db")) is not None
