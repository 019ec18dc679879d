"""One request to the identity provider over the gateway's HttpClient, failures made typed.

Every way the IdP can fail to answer becomes IdpUnavailable, or IdpTimeout when it was too slow.
"""

from __future__ import annotations

from collections.abc import Mapping

from fastgw.http.client import HttpClientError, ProtocolError, RequestTimeout, ResponseTooLarge
from fastgw.plugins import HttpClient, HttpResponse

from .errors import IdpTimeout, IdpUnavailable


async def call_idp(
    http: HttpClient,
    method: str,
    url: str,
    *,
    what: str,
    timeout: float,
    max_body: int,
    headers: Mapping[str, str] | None = None,
    body: bytes = b"",
) -> HttpResponse:
    """`what` names the endpoint in errors ("token endpoint"); the URL's query never appears."""
    try:
        return await http.request(
            method, url, headers=headers, body=body, timeout=timeout, max_body=max_body
        )
    except (RequestTimeout, TimeoutError):
        raise IdpTimeout(f"{what} did not answer within {timeout:g} s") from None
    except ResponseTooLarge:
        # the client stopped reading at the bound: the IdP answered, but not with a document
        raise IdpUnavailable(f"{what} answered a body over {max_body} bytes") from None
    except ProtocolError as error:
        raise IdpUnavailable(f"{what} answered malformed HTTP: {error}") from None
    except (HttpClientError, OSError) as error:
        # the client's messages name the host and the failure, never headers or bodies
        raise IdpUnavailable(f"{what} unreachable: {error}") from None
