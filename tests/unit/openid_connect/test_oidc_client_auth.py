"""Token requests for every client auth method."""

from __future__ import annotations

import base64
from urllib.parse import parse_qsl, unquote_plus

import jwt
import pytest
from oidc_fakes import ISSUER, NOW, TOKEN_ENDPOINT, ec_key, rsa_key

from fastgw.plugins.openid_connect.client_auth import (
    ASSERTION_LIFETIME_SECONDS,
    CLIENT_ASSERTION_TYPE,
    build_token_request,
    check_gateway_secret,
    client_auth_for,
)
from fastgw.plugins.openid_connect.credentials import ClientCredentials
from fastgw.plugins.openid_connect.errors import InvalidCredentials
from fastgw.plugins.openid_connect.schema import from_mapping

CALLER = ClientCredentials("my client:1", "s3cr%t+/ ü")


def build(method: str, credentials: ClientCredentials = CALLER, **raw: object):
    config = from_mapping({"issuer": ISSUER, "client_auth": [method], **raw})
    auth = client_auth_for(config, credentials.client_id)
    request = build_token_request(
        credentials,
        auth,
        token_endpoint=TOKEN_ENDPOINT,
        scope=config.scope,
        post_args=config.token_post_args,
        headers=config.token_headers,
        now=NOW,
    )
    return request, dict(parse_qsl(request.body.decode(), keep_blank_values=True))


def test_client_secret_basic_form_encodes_before_base64() -> None:
    request, form = build("client_secret_basic")
    scheme, encoded = request.headers["Authorization"].split(" ")
    assert scheme == "Basic"
    decoded = base64.b64decode(encoded).decode("ascii")
    assert decoded == "my+client%3A1:s3cr%25t%2B%2F+%C3%BC"  # RFC 6749 §2.3.1
    client_id, _, secret = decoded.partition(":")
    assert (unquote_plus(client_id), unquote_plus(secret)) == (CALLER.client_id, "s3cr%t+/ ü")
    assert form == {"grant_type": "client_credentials", "scope": "openid"}
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"


def test_client_secret_post() -> None:
    request, form = build("client_secret_post")
    assert "Authorization" not in request.headers
    assert form["client_id"] == CALLER.client_id
    assert form["client_secret"] == CALLER.client_secret
    assert form["grant_type"] == "client_credentials"


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
def test_client_secret_jwt_signs_with_the_callers_secret() -> None:
    _, form = build("client_secret_jwt")
    assert form["client_assertion_type"] == CLIENT_ASSERTION_TYPE
    assert "client_secret" not in form
    assertion = form["client_assertion"]
    assert jwt.get_unverified_header(assertion)["alg"] == "HS256"
    claims = jwt.decode(
        assertion,
        CALLER.client_secret.encode(),
        algorithms=["HS256"],
        audience=TOKEN_ENDPOINT,
        options={"verify_exp": False, "verify_iat": False},
    )
    assert claims["iss"] == claims["sub"] == CALLER.client_id
    assert claims["exp"] - claims["iat"] == ASSERTION_LIFETIME_SECONDS
    assert claims["iat"] == int(NOW)
    assert claims["jti"]
    _, again = build("client_secret_jwt")
    assert (
        jwt.decode(again["client_assertion"], options={"verify_signature": False})["jti"]
        != claims["jti"]
    )


@pytest.mark.parametrize("key_factory", [rsa_key, ec_key])
def test_private_key_jwt_for_a_configured_client(key_factory) -> None:
    key = key_factory("client-key")
    credentials = ClientCredentials("svc", "gateway-side")
    _, form = build(
        "private_key_jwt",
        credentials,
        client_id=["svc"],
        client_secret=["gateway-side"],
        client_jwk=[key.private_jwk()],
    )
    assertion = form["client_assertion"]
    header = jwt.get_unverified_header(assertion)
    assert header["alg"] == key.alg and header["kid"] == "client-key"
    claims = jwt.decode(
        assertion,
        key.private_key.public_key(),
        algorithms=[key.alg],
        audience=TOKEN_ENDPOINT,
        options={"verify_exp": False, "verify_iat": False},
    )
    assert claims["sub"] == "svc"
    assert form["client_id"] == "svc"


def test_none_sends_only_the_client_id() -> None:
    request, form = build("none")
    assert form["client_id"] == CALLER.client_id
    assert "client_secret" not in form and "Authorization" not in request.headers


def test_scope_omitted_when_empty_and_extra_args_and_headers_sent() -> None:
    request, form = build(
        "client_secret_post",
        scopes=[],
        token_post_args_names=["audience", "resource"],
        token_post_args_values=["urn:api", "https://api"],
        token_headers_names=["X-Tenant"],
        token_headers_values=["blue"],
    )
    assert "scope" not in form
    assert (form["audience"], form["resource"]) == ("urn:api", "https://api")
    assert request.headers["X-Tenant"] == "blue"


def test_scopes_joined_with_spaces() -> None:
    _, form = build("client_secret_post", scopes=["read", "write"])
    assert form["scope"] == "read write"


def test_unknown_caller_gets_client_auth_0_and_configured_one_its_own() -> None:
    config = from_mapping(
        {
            "issuer": ISSUER,
            "client_id": ["a", "b"],
            "client_auth": ["client_secret_post", "client_secret_jwt"],
        }
    )
    assert client_auth_for(config, "stranger").method == "client_secret_post"
    assert client_auth_for(config, "b").method == "client_secret_jwt"
    assert client_auth_for(from_mapping({"issuer": ISSUER}), "x").method == "client_secret_basic"


def test_gateway_checks_the_secret_when_the_idp_cannot() -> None:
    config = from_mapping(
        {
            "issuer": ISSUER,
            "client_id": ["svc"],
            "client_secret": ["right"],
            "client_auth": ["private_key_jwt"],
            "client_jwk": [rsa_key("client-key").private_jwk()],
        }
    )
    auth = client_auth_for(config, "svc")
    check_gateway_secret(ClientCredentials("svc", "right"), auth)
    with pytest.raises(InvalidCredentials, match="client authentication failed"):
        check_gateway_secret(ClientCredentials("svc", "wrong"), auth)
    with pytest.raises(InvalidCredentials, match="not configured for private_key_jwt"):
        check_gateway_secret(ClientCredentials("other", "x"), client_auth_for(config, "other"))
    # methods where the IdP checks the secret never short-circuit here
    check_gateway_secret(
        ClientCredentials("x", "y"),
        client_auth_for(from_mapping({"issuer": ISSUER}), "x"),
    )
