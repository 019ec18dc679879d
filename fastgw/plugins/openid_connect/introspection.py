"""Token introspection (RFC 7662): the request the plugin's own client sends, and who is to
blame for each answer. `parse_introspection_response` is pure; `introspect` makes the call.

An inactive token is the caller's problem (401). Every other failure is the IdP's or the
gateway's configuration's (the plugin's own client rejected, a 5xx, a non-JSON answer, a
timeout): 502/504, never 401, and never remembered as the caller's rejection.
"""

from __future__ import annotations

from typing import Any

import orjson

from fastgw.plugins.building import HttpClient

from .client_auth import ClientAuth, TokenRequest, client_form_request
from .credentials import ClientCredentials
from .errors import IdpUnavailable, InvalidCredentials
from .idp_http import call_idp

# An introspection answer is a small JSON object; a bigger one is not one.
MAX_INTROSPECTION_RESPONSE_BYTES = 64 * 1024


def build_introspection_request(
    token: str,
    client: ClientCredentials,
    auth: ClientAuth,
    *,
    endpoint: str,
    token_param: str,
    hint: str | None,
    post_args: tuple[tuple[str, str], ...] = (),
    headers: tuple[tuple[str, str], ...] = (),
    now: float,
) -> TokenRequest:
    form: list[tuple[str, str]] = [(token_param, token)]
    if hint:
        form.append(("token_type_hint", hint))
    form.extend(post_args)
    return client_form_request(client, auth, endpoint=endpoint, form=form, headers=headers, now=now)


def parse_introspection_response(
    status: int, body: bytes, *, check_active: bool = True
) -> dict[str, Any]:
    """The claims of an active token; InvalidCredentials when it is not active."""
    if status != 200:
        if status in (400, 401, 403):
            # RFC 7662 §2.3: the endpoint refused the gateway's own client (or its request)
            raise IdpUnavailable(
                f"introspection endpoint refused the plugin's client (HTTP {status})"
            )
        raise IdpUnavailable(f"introspection endpoint answered HTTP {status}")
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise IdpUnavailable("introspection endpoint answered 200 without JSON") from None
    if not isinstance(document, dict):
        raise IdpUnavailable("introspection endpoint answered a JSON value, not an object")
    if check_active and document.get("active") is not True:
        raise InvalidCredentials("access token is not active")
    return document


async def introspect(
    http: HttpClient,
    endpoint: str,
    request: TokenRequest,
    *,
    timeout: float,
    budget: float | None = None,
    check_active: bool,
) -> dict[str, Any]:
    """`timeout`: what is left of the miss's deadline; `budget`: all of it (named in errors)."""
    response = await call_idp(
        http,
        "POST",
        endpoint,
        what="introspection endpoint",
        timeout=timeout,
        budget=budget,
        max_body=MAX_INTROSPECTION_RESPONSE_BYTES,
        headers=request.headers,
        body=request.body,
    )
    return parse_introspection_response(response.status, response.body, check_active=check_active)
