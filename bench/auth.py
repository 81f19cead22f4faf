"""The benchmark's token issuer: a generated ES384 key, trusted by the service through an issuers file, and
tokens signed as a CDS client signs them (one jti each: the replay cache refuses a second use)."""
from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from .patients import FHIR_SERVER
from .sweep import _scratch_dir

ISS = "https://ehr.bench.invalid"
KID = "bench-1"


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


def issuer_file(key: ec.EllipticCurvePrivateKey) -> Path:
    jwk = {**ECAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": KID, "use": "sig"}
    path = _scratch_dir() / "issuers.json"
    path.write_text(json.dumps({"issuers": [{"iss": ISS, "jwks": {"keys": [jwk]}, "fhir_servers": [FHIR_SERVER]}]}))
    return path


def sign_tokens(key: ec.EllipticCurvePrivateKey, audience: str, count: int) -> list[str]:
    now = int(time.time())
    return [jwt.encode({"iss": ISS, "aud": audience, "iat": now, "exp": now + 600, "jti": str(uuid.uuid4())},
                       key, algorithm="ES384", headers={"kid": KID, "typ": "JWT"}) for _ in range(count)]
