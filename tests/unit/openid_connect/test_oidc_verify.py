"""Token verification: signatures (the algorithm comes from the key) and claims."""

from __future__ import annotations

from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from oidc_fakes import ISSUER, NOW, claims, ec_key, rsa_key

from fastgw.plugins.jws import b64url_encode
from fastgw.plugins.openid_connect.discovery import KeySet, parse_jwk
from fastgw.plugins.openid_connect.errors import InsufficientScope, InvalidCredentials
from fastgw.plugins.openid_connect.schema import from_mapping
from fastgw.plugins.openid_connect.verify import (
    UnknownSigningKey,
    VerifyPolicy,
    parse,
    verify_token,
)

SECRET = "client-secret-that-is-long-enough-for-hs256"
RSA = rsa_key()
EC = ec_key()


def keyset(*keys: Any, with_alg: bool = True) -> KeySet:
    parsed = tuple(parse_jwk(key.public_jwk(with_alg=with_alg)) for key in keys)
    assert all(parsed)
    return KeySet.of(parsed)  # type: ignore[arg-type]


def policy(**raw: Any) -> VerifyPolicy:
    return VerifyPolicy.from_config(from_mapping({"issuer": ISSUER, **raw}))


def verify(token: str, keys: KeySet | None = None, now: float = NOW, **raw: Any) -> dict:
    return verify_token(parse(token), keys or keyset(RSA, EC), policy(**raw), now, SECRET)


def forge(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"") -> str:
    import orjson

    return ".".join(
        (b64url_encode(orjson.dumps(header)), b64url_encode(orjson.dumps(payload)), "")
    ) + b64url_encode(signature)


def test_rs256_and_es256_verify() -> None:
    assert verify(RSA.mint(claims()))["sub"] == "client-1"
    assert verify(EC.mint(claims()))["sub"] == "client-1"


def test_ps256_with_an_rsa_key_that_names_no_alg() -> None:
    token = jwt.encode(claims(), RSA.private_key, algorithm="PS256", headers={"kid": RSA.kid})
    assert verify(token, keyset(RSA, with_alg=False))["iss"] == ISSUER


def test_alg_must_be_one_the_key_allows() -> None:
    # the key says RS256; a PS256 token under its kid is refused even though RSA could check it
    token = jwt.encode(claims(), RSA.private_key, algorithm="PS256", headers={"kid": RSA.kid})
    with pytest.raises(InvalidCredentials, match="does not fit its key"):
        verify(token, keyset(RSA, with_alg=True))


def test_token_claiming_rs256_under_an_ec_kid_is_refused() -> None:
    token = jwt.encode(claims(), RSA.private_key, algorithm="RS256", headers={"kid": EC.kid})
    with pytest.raises(InvalidCredentials, match="does not fit its key"):
        verify(token)


def test_alg_none_is_refused() -> None:
    token = forge({"alg": "none", "kid": RSA.kid}, claims())
    with pytest.raises(InvalidCredentials, match="not accepted"):
        verify(token)


def test_hs256_signed_with_the_rsa_public_key_is_refused() -> None:
    pem = RSA.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    import hashlib
    import hmac

    header = {"alg": "HS256", "kid": RSA.kid}
    unsigned = forge(header, claims()).rstrip(".")
    signature = hmac.new(pem, unsigned.encode(), hashlib.sha256).digest()
    token = f"{unsigned}.{b64url_encode(signature)}"
    with pytest.raises(InvalidCredentials, match="enable_hs_signatures"):
        verify(token)
    with pytest.raises(InvalidCredentials, match="signature is invalid"):
        verify(token, enable_hs_signatures=True)


def test_hs256_with_the_client_secret_when_enabled() -> None:
    token = jwt.encode(claims(), SECRET, algorithm="HS256")
    assert verify(token, enable_hs_signatures=True)["sub"] == "client-1"


def test_unknown_kid() -> None:
    stranger = rsa_key("stranger")
    with pytest.raises(UnknownSigningKey):
        verify(stranger.mint(claims()))


def test_kidless_token_tries_the_keys_that_fit_its_alg() -> None:
    no_kid = ec_key(kid=None)
    token = jwt.encode(claims(), no_kid.private_key, algorithm="ES256")
    assert verify(token, keyset(EC, no_kid))["sub"] == "client-1"


def test_bad_signature() -> None:
    token = RSA.mint(claims())
    head, payload, _ = token.split(".")
    other = RSA.mint(claims(sub="someone-else")).split(".")[2]
    with pytest.raises(InvalidCredentials, match="signature is invalid"):
        verify(f"{head}.{payload}.{other}")


def test_crit_header_is_refused() -> None:
    token = RSA.mint(claims(), headers={"crit": ["exp"]})
    with pytest.raises(InvalidCredentials, match="critical"):
        verify(token)


def test_embedded_jwk_header_is_ignored() -> None:
    attacker = ec_key("attacker")
    token = attacker.mint(claims(), headers={"jwk": attacker.public_jwk(), "kid": EC.kid})
    with pytest.raises(InvalidCredentials, match="signature is invalid"):
        verify(token)


@pytest.mark.parametrize(
    ("changes", "now", "reason"),
    [
        ({"exp": int(NOW) - 1}, NOW, "expired"),
        ({"exp": int(NOW)}, NOW, "expired"),
        ({"nbf": int(NOW) + 60}, NOW, "not valid yet"),
        ({"iat": int(NOW) + 60}, NOW, "issued in the future"),
        ({"iss": "https://evil.example"}, NOW, "issuer"),
        ({"iss": None}, NOW, "issuer"),
        ({"exp": "soon"}, NOW, "not a number"),
    ],
)
def test_claim_checks(changes: dict[str, Any], now: float, reason: str) -> None:
    document = claims()
    document.update(changes)
    document = {key: value for key, value in document.items() if value is not None}
    with pytest.raises(InvalidCredentials, match=reason):
        verify(RSA.mint(document), now=now)


def test_leeway_tolerates_small_skew() -> None:
    document = claims(exp=int(NOW) - 5, nbf=int(NOW) + 5, iat=int(NOW) + 5)
    assert verify(RSA.mint(document), leeway=10)
    with pytest.raises(InvalidCredentials):
        verify(RSA.mint(document), leeway=4)


def test_issuer_trailing_slash_and_issuers_allowed() -> None:
    assert verify(RSA.mint(claims(iss=ISSUER + "/")))
    token = RSA.mint(claims(iss="https://other.example"))
    assert verify(token, issuers_allowed=["https://other.example"])
    with pytest.raises(InvalidCredentials):
        verify(RSA.mint(claims()), issuers_allowed=["https://other.example"])


def test_verify_claims_off_skips_time_and_issuer_checks() -> None:
    token = RSA.mint(claims(exp=int(NOW) - 100, iss="https://evil.example"))
    assert verify(token, verify_claims=False)


def test_verify_signature_off() -> None:
    token = forge({"alg": "RS256", "kid": "whatever"}, claims())
    assert verify(token, verify_signature=False)["sub"] == "client-1"


def test_audience_required_is_an_or() -> None:
    token = RSA.mint(claims(aud=["urn:a", "urn:b"]))
    assert verify(token, audience_required=["urn:x", "urn:b"])
    with pytest.raises(InsufficientScope, match="audience"):
        verify(token, audience_required=["urn:x"])
    assert verify(RSA.mint(claims(aud="urn:x")), audience_required=["urn:x"])


def test_audience_claim_is_a_path() -> None:
    token = RSA.mint(claims(resource_access={"api": {"aud": ["urn:deep"]}}))
    assert verify(
        token, audience_required=["urn:deep"], audience_claim=["resource_access", "api", "aud"]
    )


@pytest.mark.parametrize(
    ("required", "ok"),
    [
        (["read"], True),
        (["read write"], False),  # AND within one item
        (["read openid"], True),
        (["admin", "openid read"], True),  # OR across items
        (["admin", "write"], False),
    ],
)
def test_scopes_required(required: list[str], ok: bool) -> None:
    token = RSA.mint(claims(scope="openid read"))
    if ok:
        assert verify(token, scopes_required=required)
    else:
        with pytest.raises(InsufficientScope, match="scopes"):
            verify(token, scopes_required=required)


def test_scopes_claim_may_be_a_list_elsewhere() -> None:
    token = RSA.mint(claims(scope=None, scp=["read", "write"]))
    assert verify(token, scopes_required=["read write"], scopes_claim=["scp"])
    with pytest.raises(InsufficientScope):
        verify(token, scopes_required=["read"])


def test_opaque_tokens() -> None:
    assert verify("opaque-token.with.dots") == {}
    assert verify("2YotnFZFEjr1zCsicMWpAA") == {}
    with pytest.raises(InsufficientScope, match="opaque"):
        verify("2YotnFZFEjr1zCsicMWpAA", scopes_required=["read"])


def test_broken_jws_is_invalid() -> None:
    import orjson

    header = b64url_encode(orjson.dumps({"alg": "RS256"}))
    with pytest.raises(InvalidCredentials, match="malformed"):
        verify(f"{header}.!!!.sig")
