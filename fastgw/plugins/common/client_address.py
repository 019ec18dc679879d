"""The client's address as Kong's plugins see it (kong.client.get_forwarded_ip): nginx's realip
module driven by kong.conf's trusted_ips, real_ip_header and real_ip_recursive.

A peer that is not trusted is the client. A trusted peer (a load balancer) speaks for the
client: the address is read from the header, the last one it lists, or with real_ip_recursive
the last one that is not trusted itself. Kong's default trusts nobody: the peer's address,
with no work per request.
"""

from __future__ import annotations

import ipaddress
from typing import Final

from fastgw.config.model import RealIp
from fastgw.plugins.api import RequestContext

from .networks import Networks, parse_address

# the request's shared values (kong.ctx.shared) keep the address once computed, under this key
_MEMO: Final = "fastgw.forwarded_ip"
_XFF: Final = b"x-forwarded-for"
_XRI: Final = b"x-real-ip"
# how the configured header is read: the wire keeps these two apart from the other headers
_FROM_XFF: Final = 1
_FROM_XRI: Final = 2
_FROM_HEADERS: Final = 3


def forwarded(peer: str, value: str, trusted: Networks, recursive: bool) -> str:
    """The client address behind a trusted `peer` from the header `value` (nginx realip): the
    last address listed; with `recursive`, the last one that is not trusted (the first listed
    when all are). An address that does not parse ends the search: what was found so far
    stands, else the peer does."""
    found = peer
    for item in reversed([part for part in value.replace(" ", ",").split(",") if part]):
        address = parse_address(item)
        if address is None:
            return found
        found = str(address)
        if not recursive or address not in trusted:
            return found
    return found


class ClientAddress:
    """Kong's get_forwarded_ip for the gateway's settings: `of(ctx)` is the peer's address
    unless the peer is trusted (computed once per request, and only for plugins that ask)."""

    __slots__ = ("_from", "_header", "recursive", "trusted")

    def __init__(self, real_ip: RealIp | None = None) -> None:
        settings = real_ip if real_ip is not None else RealIp()
        self.trusted = Networks(settings.trusted_ips)
        self.recursive = settings.real_ip_recursive
        self._header = settings.real_ip_header.lower().encode("latin-1")
        if self._header == _XFF:
            self._from = _FROM_XFF
        elif self._header == _XRI:
            self._from = _FROM_XRI
        else:
            self._from = _FROM_HEADERS

    @property
    def trusts_anyone(self) -> bool:
        """False (Kong's default): the address is always the peer's."""
        return bool(self.trusted)

    def of(self, ctx: RequestContext) -> str:
        peer = ctx.client_ip
        if not self.trusted:
            return peer
        shared = ctx.shared()
        known = shared.get(_MEMO)
        if isinstance(known, str):
            return known
        address = self._resolve(ctx, peer)
        shared[_MEMO] = address
        return address

    def _resolve(self, ctx: RequestContext, peer: str) -> str:
        try:
            peer_address = ipaddress.ip_address(peer)
        except ValueError:
            return peer
        if peer_address not in self.trusted:
            return peer
        if self._from == _FROM_XFF:
            value = ctx.x_forwarded_for
        elif self._from == _FROM_XRI:
            value = ctx.x_real_ip
        else:
            value = ctx.get_header(self._header)
        if value is None:
            return peer
        return forwarded(peer, value.decode("latin-1"), self.trusted, self.recursive)
