"""The token endpoint exchange: send a token request, classify the answer (RFC 6749 §5).

`parse_token_response` is pure; it decides who is to blame: the client (401/403) or the IdP (502).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import orjson

from fastgw.plugins.building import HttpClient

from .client_auth import TokenRequest
from .errors import IdpUnavailable, InsufficientScope, InvalidCredentials
from .idp_http import call_idp
from .stats import OidcStats

# Token responses are a few KiB (a JWT plus a few fields); a bigger one is not one.
MAX_TOKEN_RESPONSE_BYTES = 256 * 1024

_TOKEN_CHARS = re.compile(r"[\x21-\x7e]+")

# RFC 6749 §5.2 codes that mean "these client credentials do not get a token": the caller's fault
REJECTED_CLIENT_ERRORS = frozenset({"invalid_client", "invalid_grant", "unauthorized_client"})
# The client authenticated but may not have the configured scope / resource: like a missing
# scope on a token, that is the caller's lack of rights, so 403 (insufficient_scope)
REJECTED_SCOPE_ERRORS = frozenset({"invalid_scope", "invalid_target"})


@dataclass(frozen=True, slots=True)
class TokenResponse:
    access_token: str = field(repr=False)
    expires_in: float | None = None
    token_type: str | None = None
    scope: str | None = None


def _json_object(body: bytes) -> dict[str, object] | None:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return document if isinstance(document, dict) else None


def _error_code(document: dict[str, object] | None) -> str:
    code = document.get("error") if document else None
    if not isinstance(code, str):
        return ""
    # an IdP's error code goes into our logs and answers: keep it to RFC 6749's charset
    return "".join(char for char in code[:64] if char.isalnum() or char in "_-.")


def _expires_in(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value)  # some IdPs send it as a string
        except ValueError:
            return None
    # "inf" and "nan" parse as floats: an infinite lifetime would cache an opaque token forever
    if isinstance(value, (int, float)) and value > 0 and math.isfinite(value):
        return float(value)
    return None


def parse_token_response(status: int, body: bytes) -> TokenResponse:
    document = _json_object(body)
    if status == 200:
        if document is None:
            raise IdpUnavailable("token endpoint answered 200 without JSON")
        access_token = document.get("access_token")
        if not isinstance(access_token, str) or not access_token:
            raise IdpUnavailable("token endpoint answered 200 without an access_token")
        if not _TOKEN_CHARS.fullmatch(access_token):
            # it goes into an upstream header as is: no spaces, controls or non-ASCII
            raise IdpUnavailable("token endpoint answered an access_token unfit for a header")
        token_type = document.get("token_type")
        scope = document.get("scope")
        return TokenResponse(
            access_token,
            _expires_in(document.get("expires_in")),
            token_type if isinstance(token_type, str) else None,
            scope if isinstance(scope, str) else None,
        )
    code = _error_code(document)
    if status in (400, 401):
        if code in REJECTED_CLIENT_ERRORS:
            raise InvalidCredentials(f"identity provider rejected the client ({code})")
        if code in REJECTED_SCOPE_ERRORS:
            raise InsufficientScope(f"identity provider refused the scope ({code})")
        if status == 401:
            # RFC 6749 §5.2: 401 from the token endpoint is failed client authentication
            raise InvalidCredentials("identity provider rejected the client (HTTP 401)")
    detail = f" ({code})" if code else ""
    raise IdpUnavailable(f"token endpoint answered HTTP {status}{detail}")


async def request_token(
    http: HttpClient,
    token_endpoint: str,
    request: TokenRequest,
    *,
    timeout: float,
    budget: float | None = None,
    stats: OidcStats | None = None,
) -> TokenResponse:
    """`timeout`: what is left of the miss's deadline; `budget`: the whole of it, as an error
    names it (default: `timeout`)."""
    response = await call_idp(
        http,
        "POST",
        token_endpoint,
        what="token endpoint",
        timeout=timeout,
        budget=budget,
        max_body=MAX_TOKEN_RESPONSE_BYTES,
        headers=request.headers,
        body=request.body,
        stats=stats,
        endpoint="token",
    )
    return parse_token_response(response.status, response.body)
