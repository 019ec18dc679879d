"""Prebuilt response bytes: status lines and the gateway's own JSON error answers.

Everything here is computed at import so answering costs a dict lookup and a join.
"""

from __future__ import annotations

from collections.abc import Sequence
from http import HTTPStatus
from typing import Final

import orjson

STATUS_LINES: Final[dict[int, bytes]] = {
    status.value: b"HTTP/1.1 %d %s\r\n" % (status.value, status.phrase.encode("latin-1"))
    for status in HTTPStatus
}


def status_line(status: int) -> bytes:
    line = STATUS_LINES.get(status)
    if line is None:
        line = b"HTTP/1.1 %d Unknown\r\n" % status
    return line


# Kong's own wording for the errors it generates, so clients see the same answers.
MESSAGES: Final[dict[int, str]] = {
    400: "Bad request",
    404: "Not found",
    405: "Method not allowed",
    408: "Request timeout",
    411: "Length required",
    413: "Request size limit exceeded",
    414: "Request-URI too large",
    417: "Expectation failed",
    431: "Request header fields too large",
    500: "An unexpected error occurred",
    501: "Not implemented",
    502: "An invalid response was received from the upstream server",
    503: "Service unavailable",
    504: "The upstream server is timing out",
    505: "HTTP version not supported",
}
NO_ROUTE_MESSAGE: Final = "no Route matched with those values"

JSON_CONTENT_TYPE: Final = b"application/json; charset=utf-8"


def json_body(message: str) -> bytes:
    return orjson.dumps({"message": message})


def build_response(
    status: int,
    body: bytes,
    headers: Sequence[tuple[bytes, bytes]] = (),
    *,
    keep_alive: bool = True,
    head_only: bool = False,
    http_10: bool = False,
) -> bytes:
    """A complete response message with Content-Length framing.

    An HTTP/1.0 client keeps the connection only when the answer says `keep-alive`.
    """
    parts = [status_line(status)]
    for name, value in headers:
        parts += (name, b": ", value, b"\r\n")
    parts.append(b"content-length: %d\r\n" % len(body))
    if not keep_alive:
        parts.append(b"connection: close\r\n")
    elif http_10:
        parts.append(b"connection: keep-alive\r\n")
    parts.append(b"\r\n")
    if not head_only:
        parts.append(body)
    return b"".join(parts)


def build_prepared(
    status: int,
    body: bytes,
    fields: bytes,
    *,
    keep_alive: bool = True,
    head_only: bool = False,
    http_10: bool = False,
) -> bytes:
    """`build_response` with its field lines already written ("name: value\r\n" each)."""
    connection = b""
    if not keep_alive:
        connection = b"connection: close\r\n"
    elif http_10:
        connection = b"connection: keep-alive\r\n"
    return b"%b%bcontent-length: %d\r\n%b\r\n%b" % (
        status_line(status),
        fields,
        len(body),
        connection,
        b"" if head_only else body,
    )


def error_parts(
    status: int, message: str | None = None
) -> tuple[bytes, tuple[tuple[bytes, bytes]]]:
    """Body and headers of the gateway's JSON error answer for `status`."""
    text = message if message is not None else MESSAGES.get(status, "Error")
    return json_body(text), ((b"content-type", JSON_CONTENT_TYPE),)


CONTINUE_100: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
