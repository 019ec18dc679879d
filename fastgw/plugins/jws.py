"""JWS compact serialization: split and decode a token, sign and check one signature.

Thin over PyJWT's cryptography-backed algorithm objects, shared by openid-connect (its keys and
algs chosen in fastgw/plugins/openid_connect/verify.py) and jwt.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from jwt.algorithms import get_default_algorithms
from jwt.exceptions import InvalidKeyError

# name -> PyJWT algorithm object; built once, shared (the objects are stateless)
ALGORITHMS = get_default_algorithms()
HMAC_ALGS = frozenset({"HS256", "HS384", "HS512"})
RSA_ALGS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
EC_ALG_BY_CURVE = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}
EC_ALGS = frozenset(EC_ALG_BY_CURVE.values())
OKP_ALGS = frozenset({"EdDSA"})
ASYMMETRIC_ALGS = RSA_ALGS | EC_ALGS | OKP_ALGS


class JwsError(ValueError):
    """A token that looks like a JWS but cannot be decoded."""


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(segment: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        raise JwsError("bad base64url") from None


@dataclass(frozen=True, slots=True)
class CompactJws:
    header: Mapping[str, Any]
    claims: Mapping[str, Any]
    signing_input: bytes
    signature: bytes


def split(token: str) -> CompactJws | None:
    """The decoded parts of a JWS access token, or None when `token` is not one (opaque)."""
    if token.count(".") != 2:
        return None  # opaque, or a JWE (five parts) that only the resource server can read
    header_segment, payload_segment, signature_segment = token.split(".")
    try:
        header = orjson.loads(b64url_decode(header_segment))
    except (JwsError, orjson.JSONDecodeError):
        return None  # dots in an opaque token are allowed
    if not isinstance(header, dict) or "alg" not in header:
        return None
    try:
        claims = orjson.loads(b64url_decode(payload_segment))
    except (JwsError, orjson.JSONDecodeError):
        raise JwsError("payload is not base64url JSON") from None
    if not isinstance(claims, dict):
        raise JwsError("payload is not a JSON object")
    signature = b64url_decode(signature_segment)
    signing_input = f"{header_segment}.{payload_segment}".encode("ascii", "replace")
    return CompactJws(header, claims, signing_input, signature)


def check_signature(alg: str, signing_input: bytes, key: Any, signature: bytes) -> bool:
    """True when `signature` is valid for `alg` and `key` (a cryptography key, or HMAC bytes)."""
    algorithm = ALGORITHMS[alg]
    try:
        if alg in HMAC_ALGS:
            key = algorithm.prepare_key(key)
        return bool(algorithm.verify(signing_input, key, signature))
    except (InvalidKeyError, ValueError, TypeError):
        return False


def sign(header: Mapping[str, Any], claims: Mapping[str, Any], alg: str, key: Any) -> str:
    """A compact JWS of `claims`; `key` is a cryptography private key, or the HMAC secret."""
    algorithm = ALGORITHMS[alg]
    if alg in HMAC_ALGS:
        key = algorithm.prepare_key(key)
    signing_input = (
        f"{b64url_encode(orjson.dumps({**header, 'alg': alg}))}."
        f"{b64url_encode(orjson.dumps(claims))}"
    )
    signature = algorithm.sign(signing_input.encode("ascii"), key)
    return f"{signing_input}.{b64url_encode(signature)}"
