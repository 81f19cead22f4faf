"""The signature check of one JWK bound to one JWS alg, built once when KeySet binds the key.

ES384 and ES256 are checked with AWS-LC (through awscrt), whose P-384 runs ~2.4x fewer instructions than
OpenSSL's as built into cryptography's wheels (docs/performance.md); every other alg (RS*, PS*, ES512) with
PyJWT's algorithm object, as before. PyJWK still parses and validates the JWK (point on the curve, coordinates
of the curve's size); here an EC key must also be on the curve its alg names (RFC 7518 3.4: ES384 is P-384).

A JWS carries an ECDSA signature as r || s, each exactly the curve's byte size: any other length is refused
before anything is parsed; r and s go to AWS-LC as DER, and AWS-LC refuses r or s outside [1, n-1].

The AWS-LC key is read-only once built: gunicorn's threads share it. awscrt starts no thread at import nor
for these calls (tests/test_security_signatures.py checks both), so keys bound before a fork work after it.

awscrt is imported by `aws_lc_ec`, which TokenVerifier calls when it is made: loading AWS-LC seeds its entropy
source (jitterentropy), ~0.5 G instructions (~0.1 s) and ~5 MB of each process, which one that checks no signature
(AVH_CDS_AUTH=off, the command-line tools) does not pay; with authentication on a missing or broken awscrt still
fails at start-up.
"""
from __future__ import annotations

import hashlib
from typing import Callable

from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey
from cryptography.hazmat.primitives.asymmetric.ed448 import Ed448PrivateKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from jwt import PyJWK

SignatureCheck = Callable[[bytes, bytes], bool]     # (signing input, signature) -> whether the signature is good
PRIVATE_KEYS = (EllipticCurvePrivateKey, RSAPrivateKey, Ed25519PrivateKey, Ed448PrivateKey)

# alg -> the curve it is defined on (cryptography's name) and the byte size of r and of s
EC_CURVES = {"ES256": ("secp256r1", 32), "ES384": ("secp384r1", 48), "ES512": ("secp521r1", 66)}
# the algs AWS-LC checks -> their hash
AWS_LC_HASHES = {"ES256": hashlib.sha256, "ES384": hashlib.sha384}


class KeyDoesNotFitAlg(ValueError):
    """An EC key on another curve than the one its alg is defined on."""


def signature_check(jwk: PyJWK) -> SignatureCheck:
    """The check of signatures made by jwk's key with jwk's alg; KeyDoesNotFitAlg for an EC key on another curve."""
    alg = jwk.algorithm_name
    # A JWK may carry its private part: PyJWK then holds the private key, which PyJWT's RSA verify cannot use.
    key = jwk.key.public_key() if isinstance(jwk.key, PRIVATE_KEYS) else jwk.key
    if alg in EC_CURVES:
        curve, size = EC_CURVES[alg]
        if getattr(getattr(key, "curve", None), "name", None) != curve:
            raise KeyDoesNotFitAlg(f"{alg} needs a {curve} key")
        if alg in AWS_LC_HASHES:
            return aws_lc_ecdsa(key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo),
                                AWS_LC_HASHES[alg], size)
    algorithm = jwk.Algorithm
    return lambda signing_input, signature: algorithm.verify(signing_input, key, signature)


def aws_lc_ec() -> type:
    """awscrt's EC, its module imported by the first call (Python's import lock makes that once, whichever thread
    calls first)."""
    from awscrt.crypto import EC
    return EC


def aws_lc_ecdsa(spki_der: bytes, digest: Callable, size: int) -> SignatureCheck:
    """The check of JWS ECDSA signatures (r || s, `size` bytes each) by the public key spki_der, with AWS-LC."""
    aws_lc_key = aws_lc_ec().new_key_from_der_data(spki_der)
    verify = aws_lc_key.verify

    def check(signing_input: bytes, signature: bytes) -> bool:
        if len(signature) != 2 * size:
            return False
        der = encode_dss_signature(int.from_bytes(signature[:size], "big"), int.from_bytes(signature[size:], "big"))
        return verify(digest(signing_input).digest(), der)
    return check
