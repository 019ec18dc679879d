"""HTTP vocabulary shared by every part of the wire: ports, methods, head bounds, hop-by-hop names.

Header names are lower-case bytes, as the parsers hand them on after lower-casing.
"""

from __future__ import annotations

from typing import Final

# -- ports and methods ----------------------------------------------------------------------------

DEFAULT_PORTS: Final[dict[str, int]] = {"http": 80, "https": 443}

# Methods a request may be sent again with when it cannot have been processed (RFC 9110 §9.2.2).
IDEMPOTENT_METHODS: Final = frozenset(("GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"))
IDEMPOTENT_METHOD_BYTES: Final = frozenset(method.encode() for method in IDEMPOTENT_METHODS)

# Final statuses whose response never has a body (RFC 9110 §6.4.1), HEAD aside.
NO_BODY_STATUSES: Final = frozenset((204, 304))

# -- bounds on what other servers send us ---------------------------------------------------------

# A response head (status line and fields) larger than this is refused: an upstream or an IdP is
# trusted more than a client, but not infinitely. Twice nginx's proxy_buffer_size of 4k x 8.
MAX_RESPONSE_HEAD: Final = 64 * 1024
MAX_RESPONSE_HEADERS: Final = 200

# -- hop-by-hop fields (RFC 9110 §7.6.1) ----------------------------------------------------------

# Response fields the gateway re-creates or that only concern the upstream hop.
RESPONSE_HOP_HEADERS: Final = frozenset(
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

# Connection values that list no other field: the common case, checked without parsing.
PLAIN_CONNECTION_VALUES: Final = frozenset(
    (b"keep-alive", b"Keep-Alive", b"close", b"Close", b"upgrade", b"Upgrade")
)


def connection_tokens(value: bytes) -> set[bytes]:
    """Field names listed in a Connection header (besides close/keep-alive)."""
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
