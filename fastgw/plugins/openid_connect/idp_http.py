"""One request to the identity provider over the gateway's HttpClient, failures made typed.

Every way the IdP can fail to answer becomes IdpUnavailable, or IdpTimeout when it was too slow.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from fastgw.http.client import HttpClientError, ProtocolError, RequestTimeout, ResponseTooLarge
from fastgw.plugins.building import HttpClient, HttpResponse

from .errors import IdpTimeout, IdpUnavailable
from .stats import OidcStats


async def call_idp(
    http: HttpClient,
    method: str,
    url: str,
    *,
    what: str,
    timeout: float,
    budget: float | None = None,
    max_body: int,
    headers: Mapping[str, str] | None = None,
    body: bytes = b"",
    stats: OidcStats | None = None,
    endpoint: str = "token",
) -> HttpResponse:
    """`what` names the endpoint in errors ("token endpoint"); the URL's query never appears.
    `timeout` bounds the call (pool wait, connect, request, response); `budget` is what errors
    name as the timeout (a miss's whole deadline, of which `timeout` is what is left).
    `stats` counts the call under `endpoint` ("token", "discovery", "jwks")."""
    named = timeout if budget is None else budget
    if timeout <= 0:  # the deadline passed before the call could start: none is made
        raise IdpTimeout(f"{what} did not answer within {named:g} s")
    started = time.monotonic()
    outcome = "error"
    try:
        response = await http.request(
            method, url, headers=headers, body=body, timeout=timeout, max_body=max_body
        )
        status = response.status
        outcome = "success" if status < 300 else "rejected" if status < 500 else "failed"
        return response
    except (RequestTimeout, TimeoutError):
        outcome = "timeout"
        raise IdpTimeout(f"{what} did not answer within {named:g} s") from None
    except ResponseTooLarge:
        # the client stopped reading at the bound: the IdP answered, but not with a document
        outcome = "failed"
        raise IdpUnavailable(f"{what} answered a body over {max_body} bytes") from None
    except ProtocolError as error:
        outcome = "failed"
        raise IdpUnavailable(f"{what} answered malformed HTTP: {error}") from None
    except (HttpClientError, OSError) as error:
        # the client's messages name the host and the failure, never headers or bodies
        raise IdpUnavailable(f"{what} unreachable: {error}") from None
    finally:
        if stats is not None:
            stats.idp_call(endpoint, outcome, time.monotonic() - started)
