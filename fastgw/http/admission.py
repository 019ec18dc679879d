"""Which accepted connections a listener takes: its client-connection limit, the share of it TLS
handshakes may hold, and the limit per client address (nginx's limit_conn idea).

Counted from accept, as nginx counts worker_connections: a connection in its TLS handshake holds
a descriptor and memory as much as an established one (fastgw/http/tls_accept.py).
"""

from __future__ import annotations

import logging
from typing import Final

from fastgw.observability.ratelog import RateLimitedLog

log = logging.getLogger("fastgw.http")

# Connections in their TLS handshake may hold at most this share of the limit (a half): a flood
# of connects that never finish their handshake leaves the rest to plain clients and to TLS
# clients that completed theirs.
HANDSHAKE_SHARE_DIVISOR: Final = 2
# Without a configured limit_conn_per_address, one client address may hold at most this share of
# the limit (three quarters): one address cannot take every slot, while a load balancer in front,
# one address for every client, still gets most of them.
ADDRESS_SHARE_NUMERATOR: Final = 3
ADDRESS_SHARE_DENOMINATOR: Final = 4

_refused_log = RateLimitedLog(log, logging.WARNING)
_address_log = RateLimitedLog(log, logging.WARNING)
_handshake_log = RateLimitedLog(log, logging.WARNING)


class Admission:
    """The counts a listener admits connections by. Every admitted connection is released once.

    `addresses` holds one entry per client address with a connection open: at most
    `max_connections` entries, so made-up addresses cannot grow it past the limit.
    """

    __slots__ = (
        "accepted_total",
        "addresses",
        "handshakes",
        "max_connections",
        "open",
        "per_address",
        "refused_address_total",
        "refused_total",
    )

    def __init__(self) -> None:
        # Open client connections allowed; the gateway derives it from the open-file limit so
        # that accepting never runs into EMFILE (libuv would then drop clients without a word).
        self.max_connections = 1 << 62
        self.per_address = 0  # limit_conn_per_address; 0: the ADDRESS_SHARE of max_connections
        self.open = 0  # admitted and not released: established connections and handshakes
        self.handshakes = 0  # of which in their TLS handshake
        self.addresses: dict[str, int] = {}  # open connections per client address
        self.accepted_total = 0  # refused ones included, as nginx's "accepts"
        self.refused_total = 0  # every refusal, whichever limit
        self.refused_address_total = 0  # of which over the per-address limit

    @property
    def address_limit(self) -> int:
        if self.per_address:
            return self.per_address
        return max(1, self.max_connections * ADDRESS_SHARE_NUMERATOR // ADDRESS_SHARE_DENOMINATOR)

    def admit(self, client_ip: str, handshake: bool) -> bool:
        """Whether a connection just accepted from `client_ip` may stay (the caller closes it at
        once if not, as nginx does when out of worker_connections)."""
        self.accepted_total += 1
        if self.open >= self.max_connections:
            self.refused_total += 1
            _refused_log.emit(
                "connection limit reached: %d client connections open (limit %d, from the "
                "open-file limit); refusing new connections until some close",
                self.open,
                self.max_connections,
            )
            return False
        if handshake and self.handshakes >= self.max_connections // HANDSHAKE_SHARE_DIVISOR:
            self.refused_total += 1
            _handshake_log.emit(
                "%d TLS handshakes in progress, the most allowed (half the client connection "
                "limit); refusing new TLS connections until some finish",
                self.handshakes,
            )
            return False
        held = self.addresses.get(client_ip, 0)
        if held >= self.address_limit:
            self.refused_total += 1
            self.refused_address_total += 1
            _address_log.emit(
                "connection limit per client address reached: %s holds %d connections (limit "
                "%d, limit_conn_per_address); refusing its new connections",
                client_ip,
                held,
                self.address_limit,
            )
            return False
        self.addresses[client_ip] = held + 1
        self.open += 1
        if handshake:
            self.handshakes += 1
        return True

    def handshake_done(self) -> None:
        """A handshake ended; its connection stays counted until released."""
        self.handshakes -= 1

    def release(self, client_ip: str) -> None:
        """An admitted connection closed."""
        self.open -= 1
        held = self.addresses.get(client_ip, 0)
        if held > 1:
            self.addresses[client_ip] = held - 1
        else:
            self.addresses.pop(client_ip, None)
