"""The answers openid-connect makes itself when a request fails: Kong's messages and challenge,
prebuilt at config time except for the realm (the request's host).
"""

from __future__ import annotations

from typing import Final

import orjson

from fastgw.plugins.api import RequestContext

from .errors import AuthError, IdpBusy, IdpTokenRejected
from .schema import OidcConfig

IDP_UNAVAILABLE_MESSAGE: Final = "identity provider unavailable"
IDP_TIMEOUT_MESSAGE: Final = "identity provider timed out"
# the plugin's calls to the IdP are at their bound and the caller's queue is full
IDP_BUSY_MESSAGE: Final = "identity provider busy"
TOO_MANY_WAITING_MESSAGE: Final = "too many requests waiting for the identity provider"
# the IdP answered, but with a token that fails verification: why goes to the log, not here
IDP_TOKEN_REJECTED_MESSAGE: Final = "token from the identity provider rejected"
_TOKEN_REJECTED: Final = 0  # the message key of IdpTokenRejected (statuses are the others)
INTERNAL_ERROR_MESSAGE: Final = "An unexpected error occurred"
BODY_TOO_LARGE_MESSAGE: Final = "Request body too large to read credentials"
# When a busy caller may try again: a slot frees within an IdP round trip, and a second is
# long enough for a queue to drain some without making a retry wait for nothing.
RETRY_AFTER: Final = (b"retry-after", b"1")

_JSON_CONTENT_TYPE: Final = (b"content-type", b"application/json; charset=utf-8")
_DEFAULT_REALM: Final = b"fastgw"
# bytes that may not appear in a quoted realm: anything but host-name characters
_REALM_DELETE: Final = bytes(
    byte
    for byte in range(256)
    if not (chr(byte).isascii() and (chr(byte).isalnum() or chr(byte) in ".-_[]:"))
)


def _realm(host: bytes) -> bytes:
    """The request's host without its port, as nginx's $host (Kong's realm)."""
    host = host[: host.find(b"]") + 1] if host.startswith(b"[") else host.partition(b":")[0]
    host = host.translate(None, _REALM_DELETE).lower()
    return host or _DEFAULT_REALM


def _quoted(text: str) -> bytes:
    # RFC 9110 quoted-string: keep it ASCII without quotes or backslashes
    return text.replace('"', "'").replace("\\", "/").encode("ascii", "replace")


class Answers:
    """Error responses, prebuilt at config time except for the realm (the request's host)."""

    def __init__(self, config: OidcConfig) -> None:
        self._display = config.display_errors
        self._expose = config.expose_error_code
        self._messages = {
            401: config.unauthorized_error_message,
            403: config.forbidden_error_message,
            413: BODY_TOO_LARGE_MESSAGE,
            429: TOO_MANY_WAITING_MESSAGE,
            502: IDP_UNAVAILABLE_MESSAGE,
            503: IDP_BUSY_MESSAGE,
            504: IDP_TIMEOUT_MESSAGE,
            500: INTERNAL_ERROR_MESSAGE,
            _TOKEN_REJECTED: IDP_TOKEN_REJECTED_MESSAGE,
        }
        self._bodies = {
            status: orjson.dumps({"message": message}) for status, message in self._messages.items()
        }

    def respond(self, ctx: RequestContext, error: AuthError) -> None:
        status = error.status if error.status in self._messages else 500
        kind = _TOKEN_REJECTED if isinstance(error, IdpTokenRejected) else status
        if self._display:
            message = f"{self._messages[kind]} ({error.reason})"
            body = orjson.dumps({"message": message})
        else:
            body = self._bodies[kind]
        headers = [_JSON_CONTENT_TYPE]
        if error.error_code is not None:
            # only the client's own problems get a challenge; an IdP outage is not one
            headers.append((b"www-authenticate", self._challenge(ctx.host, error)))
        if isinstance(error, IdpBusy):
            headers.append(RETRY_AFTER)
        ctx.respond(status, body, headers)

    def _challenge(self, host: bytes, error: AuthError) -> bytes:
        challenge = b'Bearer realm="' + _realm(host) + b'"'
        if self._expose and error.error_code is not None:
            challenge += b', error="' + error.error_code.encode() + b'"'
            if self._display:
                challenge += b', error_description="' + _quoted(error.reason) + b'"'
        return challenge
