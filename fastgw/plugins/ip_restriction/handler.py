"""The `ip-restriction` step (Kong's access phase): `deny` first, then `allow`, against the client
address Kong computes (kong.conf's trusted_ips; fastgw/plugins/common/client_address.py).

The answer depends on the address alone: a keep-alive connection pays for the match once, then
on each request compares the address with the one decided last (only a trusted peer's header
changes it between requests).
"""

from __future__ import annotations

import ipaddress
from typing import Final

from fastgw.http.responses import error_parts
from fastgw.plugins.api import Plugin, RequestContext
from fastgw.plugins.common.client_address import ClientAddress
from fastgw.plugins.common.networks import Networks

from .schema import DEFAULT_STATUS, IpRestrictionConfig

PRIORITY: Final = 990  # Kong's


class _Decision:
    """The last address decided on a connection, and whether it may pass."""

    __slots__ = ("address", "allowed")

    def __init__(self, address: str, allowed: bool) -> None:
        self.address = address
        self.allowed = allowed


class IpRestriction(Plugin):
    name = "ip-restriction"
    priority = PRIORITY

    def __init__(self, config: IpRestrictionConfig, client_address: ClientAddress) -> None:
        self.config = config
        self._allow = Networks(config.allow)
        self._deny = Networks(config.deny)
        self._status = config.status if config.status is not None else DEFAULT_STATUS
        self._message = config.message
        self._address = client_address

    def allows(self, address: str) -> bool:
        """Kong's order: an address in `deny` is rejected, then one missing from `allow`."""
        try:
            parsed = ipaddress.ip_address(address)
        except ValueError:
            return False
        if self._deny and parsed in self._deny:
            return False
        return not self._allow or parsed in self._allow

    def access(self, ctx: RequestContext) -> None:
        address = self._address.of(ctx)
        memo = ctx.connection_memo
        decision = memo.get(self)
        if not isinstance(decision, _Decision) or decision.address != address:
            decision = memo[self] = _Decision(address, self.allows(address))
        if not decision.allowed:
            message = self._message
            if message is None:
                message = f"IP address not allowed: {address}"  # Kong's
            body, headers = error_parts(self._status, message)
            ctx.respond(self._status, body, headers)
