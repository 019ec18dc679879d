"""jwt through a real gateway: tokens from the query, cookies and headers (Kong's set), the
secret by `iss`, every algorithm Kong supports, Kong's 401 messages and claim errors."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest
from access_wire import answer, get, upstream_headers, wire
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from fastgw.config import ConfigError, parse_config
from fastgw.plugins import jws
from fastgw.plugins.jwt.handler import bearer_token

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
ED_KEY = ed25519.Ed25519PrivateKey.generate()


def pem(private: Any) -> str:
    return (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def indented(text: str) -> str:
    return "\n".join("          " + line for line in text.strip().splitlines())


CONSUMERS = f"""
consumers:
  - username: alice
    jwt_secrets:
      - {{key: alice-iss, secret: alice-secret}}
      - {{key: std-iss, secret: "c3Rk+w=="}}
      - key: alice-rsa
        algorithm: RS256
        rsa_public_key: |
{indented(pem(RSA_KEY))}
      - key: alice-ps
        algorithm: PS256
        rsa_public_key: |
{indented(pem(RSA_KEY))}
      - key: alice-ec
        algorithm: ES256
        rsa_public_key: |
{indented(pem(EC_KEY))}
      - key: alice-ed
        algorithm: EdDSA
        rsa_public_key: |
{indented(pem(ED_KEY))}
  - username: b64
    jwt_secrets: [{{key: b64-iss, secret: {base64.urlsafe_b64encode(b"raw-bytes").decode()}}}]
  - username: guest
"""


def jwt(config: str = "{}") -> Any:
    return wire(CONSUMERS + f"plugins: [{{name: jwt, config: {config}}}]\n")


def token(claims: dict[str, Any], alg: str = "HS256", key: Any = b"alice-secret") -> str:
    return jws.sign({"typ": "JWT"}, claims, alg, key)


def refused(response: Any) -> Any:
    assert response.status == 401
    return json.loads(response.body)


def test_an_hs256_token_in_the_authorization_header_authenticates() -> None:
    w = jwt()
    bearer = "Authorization: Bearer " + token({"iss": "alice-iss"})
    assert w.exchange(get("/x", bearer), answer()).status == 200
    headers = upstream_headers(w.forwarded[-1])
    assert headers["x-consumer-username"] == ["alice"]
    assert headers["x-credential-identifier"] == ["alice-iss"]  # Kong: the secret's key
    assert headers["authorization"] == [bearer.split(": ", 1)[1]]  # jwt never hides it


@pytest.mark.parametrize(
    ("iss", "alg", "key"),
    [
        ("alice-rsa", "RS256", RSA_KEY),
        ("alice-ps", "PS256", RSA_KEY),
        ("alice-ec", "ES256", EC_KEY),
        ("alice-ed", "EdDSA", ED_KEY),
    ],
)
def test_public_key_algorithms(iss: str, alg: str, key: Any) -> None:
    w = jwt()
    good = token({"iss": iss}, alg, key)
    assert w.exchange(get("/x", f"Authorization: Bearer {good}"), answer()).status == 200
    forged = token({"iss": iss}, "HS256", b"guess")
    assert refused(w.exchange(get("/x", f"Authorization: Bearer {forged}"))) == {
        "message": "Invalid algorithm"
    }
    header, claims, _ = good.split(".")
    other = token({"iss": iss, "x": 1}, alg, key).split(".")[2]
    assert refused(w.exchange(get("/x", f"Authorization: Bearer {header}.{claims}.{other}"))) == {
        "message": "Invalid signature"
    }


def test_kongs_messages_for_bad_tokens() -> None:
    w = jwt()
    none = w.exchange(get("/x"))
    assert refused(none) == {"message": "Unauthorized"}
    assert none.get("www-authenticate") == "Bearer"

    def message(value: str) -> Any:
        response = w.exchange(get("/x", f"Authorization: Bearer {value}"))
        assert response.get("www-authenticate") == 'Bearer error="invalid_token"'
        return refused(response)["message"]

    assert message("not-a-token") == "Bad token; invalid JSON"
    unsigned = jws.b64url_encode(b'{"alg":"none"}') + "." + jws.b64url_encode(b"{}") + "."
    assert message(unsigned) == "Bad token; invalid alg"
    claims_not_object = (
        jws.b64url_encode(b'{"alg":"HS256"}') + "." + jws.b64url_encode(b"[1]") + ".x"
    )
    assert message(claims_not_object) == "Bad token; invalid claims"
    assert message(token({"sub": "x"})) == "No mandatory 'iss' in claims"
    assert message(token({"iss": ""})) == "Invalid 'iss' in claims"
    assert message(token({"iss": "stranger"})) == "No credentials found for given 'iss'"
    assert message(token({"iss": "alice-iss"}, key=b"wrong")) == "Invalid signature"


def test_tokens_from_query_cookie_and_header_form_a_set() -> None:
    w = jwt("{cookie_names: [session], uri_param_names: [jwt, t]}")
    good = token({"iss": "alice-iss"})
    assert w.exchange(get(f"/x?jwt={good}"), answer()).status == 200
    assert w.exchange(get("/x", f"Cookie: a=1; session={good}"), answer()).status == 200
    # the same token twice is one token
    assert w.exchange(get(f"/x?t={good}", f"Authorization: Bearer {good}"), answer()).status == 200
    other = token({"iss": "alice-iss", "n": 2})
    assert refused(w.exchange(get(f"/x?jwt={good}&t={other}"))) == {
        "message": "Multiple tokens provided"
    }
    assert refused(w.exchange(get("/x?jwt"))) == {"message": "Unrecognizable token"}


def test_exp_and_nbf_with_claims_to_verify_and_maximum_expiration() -> None:
    w = jwt("{claims_to_verify: [exp, nbf], maximum_expiration: 600}")
    now = int(time.time())

    def body(claims: dict[str, Any]) -> Any:
        value = token({"iss": "alice-iss", **claims})
        return refused(w.exchange(get("/x", f"Authorization: Bearer {value}")))

    assert body({"exp": now - 1, "nbf": now}) == {"exp": "token expired"}
    assert body({"exp": "soon", "nbf": now + 60}) == {
        "exp": "must be a number",
        "nbf": "token not valid yet",
    }
    assert body({"nbf": now}) == {"exp": "must be a number"}
    assert body({"exp": now + 3600, "nbf": now}) == {"exp": "exceeds maximum allowed expiration"}
    good = token({"iss": "alice-iss", "exp": now + 60, "nbf": now})
    assert w.exchange(get("/x", f"Authorization: Bearer {good}"), answer()).status == 200


def test_maximum_expiration_needs_exp_verified() -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config(
            '_format_version: "3.0"\nplugins: [{name: jwt, config: {maximum_expiration: 60}}]',
            env={},
        )
    assert raised.value.problems == [
        (
            "plugins[0].config.claims_to_verify",
            "expected to contain: exp (maximum_expiration is set)",
        )
    ]


def test_secret_is_base64_decodes_the_hmac_secret() -> None:
    w = jwt("{secret_is_base64: true}")
    good = token({"iss": "b64-iss"}, key=b"raw-bytes")
    assert w.exchange(get("/x", f"Authorization: Bearer {good}"), answer()).status == 200
    # a standard-alphabet secret is not base64url: Kong's "Invalid key/secret"
    alice = token({"iss": "std-iss"}, key=b"c3Rk+w==")
    assert refused(w.exchange(get("/x", f"Authorization: Bearer {alice}"))) == {
        "message": "Invalid key/secret"
    }


def test_key_claim_name_may_come_from_the_header_and_realm() -> None:
    w = jwt("{key_claim_name: kid, realm: api}")
    good = jws.sign({"kid": "alice-iss"}, {"sub": "s"}, "HS256", b"alice-secret")
    assert w.exchange(get("/x", f"Authorization: Bearer {good}"), answer()).status == 200
    response = w.exchange(get("/x", "Authorization: Bearer x.y.z"))
    assert response.get("www-authenticate") == 'Bearer realm="api", error="invalid_token"'
    assert w.exchange(get("/x")).get("www-authenticate") == 'Bearer realm="api"'


def test_anonymous_and_preflight() -> None:
    w = jwt("{anonymous: guest, run_on_preflight: false}")
    assert w.exchange(get("/x", "Authorization: Bearer bad"), answer()).status == 200
    assert upstream_headers(w.forwarded[-1])["x-anonymous-consumer"] == ["true"]
    assert w.exchange(get("/x", method="OPTIONS"), answer()).status == 200
    assert "x-consumer-username" not in upstream_headers(w.forwarded[-1])


def test_an_anonymous_naming_no_consumer_answers_kongs_500() -> None:
    w = jwt("{anonymous: ghost}")
    response = w.exchange(get("/x"))
    assert response.status == 500
    message = "anonymous consumer ghost is configured but doesn't exist"
    assert json.loads(response.body) == {"message": message}


def test_kongs_bearer_pattern() -> None:
    assert bearer_token(b"Bearer abc") == b"abc"
    assert bearer_token(b"  bearer   abc def") == b"abc def"
    assert bearer_token(b"Bearerabc") is None
    assert bearer_token(b"Token x, Bearer y") == b"y"
    assert bearer_token(b"Basic abc") is None


def test_a_public_key_algorithm_needs_a_key_that_parses() -> None:
    def problems(secret: str) -> list[tuple[str, str]]:
        with pytest.raises(ConfigError) as raised:
            parse_config(
                f'_format_version: "3.0"\nconsumers: [{{username: a, jwt_secrets: [{secret}]}}]',
                env={},
            )
        return raised.value.problems

    where = "consumers[0].jwt_secrets[0].rsa_public_key"
    assert problems("{key: k, algorithm: RS256}") == [(where, "is required for RS256")]
    assert problems("{key: k, algorithm: ES256, rsa_public_key: nope}") == [(where, "invalid key")]
    assert problems("{key: k, algorithm: NOPE}")[0][0] == "consumers[0].jwt_secrets[0].algorithm"
