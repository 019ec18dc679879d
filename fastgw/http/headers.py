"""Header rules shared by both sides of the proxy: hop-by-hop names (RFC 9110 §7.6.1), Host.

Names are lower-case bytes, as the parsers' callbacks hand them on after lower-casing.
"""

from __future__ import annotations

# Response headers the gateway re-creates or that only concern the upstream hop.
RESPONSE_HOP_HEADERS = frozenset(
    (
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"content-length",
    )
)

# Connection header values that list no other header: the common case, checked without parsing.
PLAIN_CONNECTION_VALUES = frozenset(
    (b"keep-alive", b"Keep-Alive", b"close", b"Close", b"upgrade", b"Upgrade")
)


def connection_tokens(value: bytes) -> set[bytes]:
    """Header names listed in a Connection header (besides close/keep-alive)."""
    tokens = {token.strip().lower() for token in value.split(b",")}
    tokens.discard(b"close")
    tokens.discard(b"keep-alive")
    tokens.discard(b"")
    return tokens


def host_without_port(host: bytes) -> bytes:
    """`example.com:8000` -> `example.com`; an IP literal (`[::1]:80`) keeps its colons."""
    colon = host.rfind(b":")
    if colon < 0 or host.find(b"]", colon) >= 0:
        return host
    return host[:colon]
