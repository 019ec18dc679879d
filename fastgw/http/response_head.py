"""An upstream response head rewritten for the client: its hop-by-hop fields out, its framing read.

Sans-IO: raw field lines in (llhttp has already validated them), the forwarded lines and the
framing out, then the head the client gets (client_head). Working on the raw lines instead of
one parser callback per field is what makes a response head cheap: a field the gateway keeps
costs a byte test and a list append.
"""

from __future__ import annotations

from typing import Final

from fastgw.http.request import Request
from fastgw.http.responses import STATUS_LINES, status_line
from fastgw.http.vocabulary import (
    MAX_RESPONSE_HEADERS,
    NO_BODY_STATUSES,
    PLAIN_CONNECTION_VALUES,
    connection_tokens,
)

_COLON: Final = 0x3A  # b":"[0]
_LOWER: Final = 0x20  # or-ing it lower-cases an ASCII letter


class HeadError(Exception):
    """The upstream's head cannot be forwarded (too many fields)."""


class ForwardedHead:
    """What the client gets of an upstream head: field lines (CRLF-terminated) and the framing."""

    __slots__ = ("chunked", "content_length", "fields")

    def __init__(self, fields: bytes, content_length: bytes | None, chunked: bool) -> None:
        self.fields = fields  # the end-to-end field lines, each ending in CRLF, ready to write
        self.content_length = content_length  # the upstream's value, or None
        self.chunked = chunked  # the upstream framed the body with chunked coding


def forward_head(lines: list[bytes]) -> ForwardedHead:
    """`lines`: the head split at CRLF, status line first, without the final empty lines.

    The hop-by-hop fields (vocabulary.RESPONSE_HOP_HEADERS) are told apart by their first byte
    and the position of their colon before any name is compared: a line the gateway keeps costs
    a few byte tests. The tests are written out rather than called, since a call per line is
    what the interpreted build pays most for (llhttp refuses whitespace before the colon, so a
    name ends exactly there). A value's strip() takes off what RFC 9110 §5.6.3 calls its
    whitespace, SP and HTAB: llhttp refuses the other bytes strip() would take.
    """
    if len(lines) > MAX_RESPONSE_HEADERS + 1:
        raise HeadError("upstream response has too many header fields")
    kept: list[bytes] = []
    content_length: bytes | None = None
    chunked = False
    listed: bytes | None = None
    for index in range(1, len(lines)):  # lines[0], the status line, is the parser's
        line = lines[index]  # (indexed: a slice of the list costs the compiled build ~200)
        initial = line[0] | _LOWER
        if initial == 0x63:  # c
            size = len(line)
            if size > 14 and line[14] == _COLON and line[:14].lower() == b"content-length":
                content_length = line[15:].strip()
                continue
            if size > 10 and line[10] == _COLON and line[:10].lower() == b"connection":
                value = line[11:].strip()
                if value not in PLAIN_CONNECTION_VALUES:
                    listed = value if listed is None else listed + b"," + value
                continue
        elif initial == 0x74:  # t
            size = len(line)
            if size > 17 and line[17] == _COLON and line[:17].lower() == b"transfer-encoding":
                chunked = line[18:].lower().find(b"chunked") >= 0
                continue
            if size > 2 and line[2] == _COLON and line[:2].lower() == b"te":
                continue
            if size > 7 and line[7] == _COLON and line[:7].lower() == b"trailer":
                continue
        elif initial == 0x6B:  # k
            if len(line) > 10 and line[10] == _COLON and line[:10].lower() == b"keep-alive":
                continue
        elif initial == 0x70:  # p
            size = len(line)
            if size > 16 and line[16] == _COLON and line[:16].lower() == b"proxy-connection":
                continue
            if size > 18 and line[18] == _COLON and line[:18].lower() == b"proxy-authenticate":
                continue
        elif initial == 0x75:  # u
            size = len(line)
            if size > 7 and line[7] == _COLON and line[:7].lower() == b"upgrade":
                continue
        kept.append(line)
    if listed is not None:
        kept = _without_listed(kept, connection_tokens(listed))
    if not kept:
        return ForwardedHead(b"", content_length, chunked)
    kept.append(b"")
    return ForwardedHead(b"\r\n".join(kept), content_length, chunked)


def _without_listed(lines: list[bytes], listed: set[bytes]) -> list[bytes]:
    """Lines whose field Connection names go too (RFC 9110 §7.6.1)."""
    return [line for line in lines if line.partition(b":")[0].lower() not in listed]


def client_head(
    request: Request, status: int, fields: bytes, head: ForwardedHead
) -> tuple[bytes, bool, bool]:
    """The client's response head for the upstream's `head`, with `fields` its field lines as
    the plugins left them: (its bytes, whether the body is re-chunked for the client, whether the
    upstream's body ends with its connection). `request.keep_alive` turns False when the client
    connection cannot outlive this response."""
    parts = [STATUS_LINES.get(status) or status_line(status), fields]
    if not request.request_complete:
        # Answered before the whole body arrived: the rest of the body will most likely be cut
        # off (Exchange.response_complete), so say now that the connection ends.
        request.keep_alive = False
    chunked = close_delimited = False
    content_length = head.content_length
    if request.head_request or status in NO_BODY_STATUSES:
        if content_length is not None and status != 204:
            parts += (b"content-length: ", content_length, b"\r\n")
    elif content_length is not None:
        parts += (b"content-length: ", content_length, b"\r\n")
    else:
        close_delimited = not head.chunked
        if request.http_10:
            request.keep_alive = False
        else:
            chunked = True
            parts.append(b"transfer-encoding: chunked\r\n")
    if not request.keep_alive:
        parts.append(b"connection: close\r\n\r\n")
    elif request.http_10:
        parts.append(b"connection: keep-alive\r\n\r\n")
    else:
        parts.append(b"\r\n")
    return b"".join(parts), chunked, close_delimited
