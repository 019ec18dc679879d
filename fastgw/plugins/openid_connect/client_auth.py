"""How a client authenticates at the IdP's endpoints, and the form requests it makes there:
the caller's client at the token endpoint, the plugin's own client at the introspection endpoint.

Pure: the requests are functions of the credentials, the method, the endpoint and `now`.
"""

from __future__ import annotations

import base64
import hmac
import secrets
from dataclasses import dataclass, field
from urllib.parse import quote_plus, urlencode

from jwt import PyJWK

from fastgw.plugins import jws

from .credentials import ClientCredentials
from .errors import InvalidCredentials
from .schema import GATEWAY_CHECKED_AUTH, OidcConfig

# RFC 7523 §3 wants a short-lived assertion; a minute is short and survives modest clock skew.
ASSERTION_LIFETIME_SECONDS = 60
CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
_DEFAULT_ALG_FOR_SECRET = "HS256"


@dataclass(frozen=True, slots=True)
class ClientAuth:
    """The token-endpoint authentication used for one caller."""

    method: str
    alg: str | None = None
    jwk: PyJWK | None = field(default=None, repr=False)
    # for GATEWAY_CHECKED_AUTH: the secret the caller must present, as the IdP never sees it
    gateway_secret: str | None = field(default=None, repr=False)
    configured: bool = False  # the caller is one of the plugin's own clients


@dataclass(frozen=True, slots=True)
class TokenRequest:
    headers: dict[str, str] = field(repr=False)
    body: bytes = field(repr=False)


def client_auth_for(config: OidcConfig, client_id: str) -> ClientAuth:
    """The configured client's settings, or client_auth[0] for a caller not in the list."""
    configured = config.client(client_id)
    if configured is None:
        return ClientAuth(config.default_client_auth, config.default_client_alg)
    alg = configured.client_alg
    if alg is None and configured.client_jwk is not None:
        alg = configured.client_jwk.algorithm_name
    return ClientAuth(
        configured.client_auth, alg, configured.client_jwk, configured.client_secret, True
    )


def check_gateway_secret(credentials: ClientCredentials, auth: ClientAuth) -> None:
    """For methods where the IdP never sees the caller's secret, the gateway checks it."""
    if auth.method not in GATEWAY_CHECKED_AUTH:
        return
    if not auth.configured or auth.gateway_secret is None:
        raise InvalidCredentials(f"client is not configured for {auth.method}")
    if not hmac.compare_digest(credentials.client_secret.encode(), auth.gateway_secret.encode()):
        raise InvalidCredentials("client authentication failed")


def _form_encode(value: str) -> str:
    # RFC 6749 §2.3.1: id and secret are form-urlencoded before Basic encoding
    return quote_plus(value, safe="")


def _assertion(
    credentials: ClientCredentials, auth: ClientAuth, token_endpoint: str, now: float
) -> str:
    issued = int(now)
    claims = {
        "iss": credentials.client_id,
        "sub": credentials.client_id,
        "aud": token_endpoint,
        "jti": secrets.token_urlsafe(16),
        "iat": issued,
        "exp": issued + ASSERTION_LIFETIME_SECONDS,
    }
    if auth.method == "client_secret_jwt":
        alg = auth.alg or _DEFAULT_ALG_FOR_SECRET
        return jws.sign({"typ": "JWT"}, claims, alg, credentials.client_secret.encode())
    assert auth.jwk is not None and auth.alg is not None  # schema guarantees both
    header = {"typ": "JWT"}
    if auth.jwk.key_id:
        header["kid"] = auth.jwk.key_id
    return jws.sign(header, claims, auth.alg, auth.jwk.key)


def build_token_request(
    credentials: ClientCredentials,
    auth: ClientAuth,
    *,
    token_endpoint: str,
    scope: str,
    post_args: tuple[tuple[str, str], ...] = (),
    headers: tuple[tuple[str, str], ...] = (),
    now: float,
) -> TokenRequest:
    form: list[tuple[str, str]] = [("grant_type", "client_credentials")]
    if scope:
        form.append(("scope", scope))
    form.extend(post_args)
    return client_form_request(
        credentials, auth, endpoint=token_endpoint, form=form, headers=headers, now=now
    )


def client_form_request(
    credentials: ClientCredentials,
    auth: ClientAuth,
    *,
    endpoint: str,
    form: list[tuple[str, str]],
    headers: tuple[tuple[str, str], ...] = (),
    now: float,
) -> TokenRequest:
    """A form POST to `endpoint` authenticated as `credentials` with `auth.method`."""
    form = list(form)
    request_headers = dict(headers)
    request_headers["Content-Type"] = "application/x-www-form-urlencoded"
    request_headers.setdefault("Accept", "application/json")
    method = auth.method
    if method == "client_secret_basic":
        pair = f"{_form_encode(credentials.client_id)}:{_form_encode(credentials.client_secret)}"
        request_headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
    elif method == "client_secret_post":
        form.append(("client_id", credentials.client_id))
        form.append(("client_secret", credentials.client_secret))
    elif method in ("client_secret_jwt", "private_key_jwt"):
        form.append(("client_id", credentials.client_id))
        form.append(("client_assertion_type", CLIENT_ASSERTION_TYPE))
        form.append(("client_assertion", _assertion(credentials, auth, endpoint, now)))
    elif method == "none":
        form.append(("client_id", credentials.client_id))
    else:
        raise ValueError(f"unsupported client auth method {method!r}")
    return TokenRequest(request_headers, urlencode(form).encode("ascii"))
