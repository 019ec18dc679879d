"""An upstream response head rewritten for the client: its hop-by-hop fields out, its framing read.

Sans-IO: raw field lines in (llhttp has already validated them), the forwarded lines and the
framing out. Working on the raw lines instead of one parser callback per field is what makes a
response head cheap: a field the gateway keeps costs a byte test and a list append.
"""

from __future__ import annotations

from fastgw.http.vocabulary import (
    MAX_RESPONSE_HEADERS,
    PLAIN_CONNECTION_VALUES,
    connection_tokens,
)

_COLON = 0x3A  # b":"[0]
_LOWER = 0x20  # or-ing it lower-cases an ASCII letter

# The hop-by-hop fields (vocabulary.RESPONSE_HOP_HEADERS) by the lower-case byte they start with;
# a line starting with any other byte is forwarded without a look at its name.
_CONNECTION = 1
_CONTENT_LENGTH = 2
_TRANSFER_ENCODING = 3
_OTHER_HOP = 4
_HOP_BY_INITIAL: dict[int, tuple[tuple[bytes, int], ...]] = {
    ord("c"): ((b"connection", _CONNECTION), (b"content-length", _CONTENT_LENGTH)),
    ord("k"): ((b"keep-alive", _OTHER_HOP),),
    ord("p"): ((b"proxy-connection", _OTHER_HOP), (b"proxy-authenticate", _OTHER_HOP)),
    ord("t"): (
        (b"te", _OTHER_HOP),
        (b"trailer", _OTHER_HOP),
        (b"transfer-encoding", _TRANSFER_ENCODING),
    ),
    ord("u"): ((b"upgrade", _OTHER_HOP),),
}


class HeadError(Exception):
    """The upstream's head cannot be forwarded (too many fields)."""


class ForwardedHead:
    """What the client gets of an upstream head: field lines (CRLF-terminated) and the framing."""

    __slots__ = ("chunked", "content_length", "fields")

    def __init__(self, fields: bytes, content_length: bytes | None, chunked: bool) -> None:
        self.fields = fields  # the end-to-end field lines, each ending in CRLF, ready to write
        self.content_length = content_length  # the upstream's value, or None
        self.chunked = chunked  # the upstream framed the body with chunked coding


def _hop_kind(line: bytes) -> int:
    """Which hop-by-hop field `line` ("Name: value") is, or 0 for an end-to-end one."""
    candidates = _HOP_BY_INITIAL.get(line[0] | _LOWER)
    if candidates is None:
        return 0
    size = len(line)
    for name, kind in candidates:
        length = len(name)
        # llhttp refuses whitespace before the colon: the name ends exactly there
        if size > length and line[length] == _COLON and line[:length].lower() == name:
            return kind
    return 0


def forward_head(lines: list[bytes]) -> ForwardedHead:
    """`lines`: the head split at CRLF, status line first, without the final empty lines."""
    kept: list[bytes] = []
    content_length: bytes | None = None
    chunked = False
    listed: bytes | None = None
    if len(lines) > MAX_RESPONSE_HEADERS + 1:
        raise HeadError("upstream response has too many header fields")
    for index in range(1, len(lines)):
        line = lines[index]
        kind = _hop_kind(line)
        if kind == 0:
            kept.append(line)
        elif kind == _CONTENT_LENGTH:
            content_length = line[15:].strip()
        elif kind == _TRANSFER_ENCODING:
            chunked = line[18:].lower().find(b"chunked") >= 0
        elif kind == _CONNECTION:
            value = line[11:].strip()
            if value not in PLAIN_CONNECTION_VALUES:
                listed = value if listed is None else listed + b"," + value
    if listed is not None:
        kept = _without_listed(kept, connection_tokens(listed))
    if not kept:
        return ForwardedHead(b"", content_length, chunked)
    kept.append(b"")
    return ForwardedHead(b"\r\n".join(kept), content_length, chunked)


def _without_listed(lines: list[bytes], listed: set[bytes]) -> list[bytes]:
    """Lines whose field Connection names go too (RFC 9110 §7.6.1)."""
    return [line for line in lines if line.partition(b":")[0].lower() not in listed]
