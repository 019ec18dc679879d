"""IP addresses and networks as the plugins match them: sets of IPv4 and IPv6 CIDR blocks checked
as integers (resty.ipmatcher's job in Kong), and one address as nginx reads it from a header."""

from __future__ import annotations

import ipaddress

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class Networks:
    """IPs and CIDR blocks (v4 and v6; host bits ignored, as nginx and ipmatcher do). An IPv4
    block never matches an IPv6 address, except an IPv4-mapped one (::ffff:a.b.c.d): the form
    a dual-stack listener reports IPv4 peers in."""

    __slots__ = ("v4", "v6")

    def __init__(self, entries: tuple[str, ...]) -> None:
        self.v4: list[tuple[int, int]] = []
        self.v6: list[tuple[int, int]] = []
        for entry in entries:
            network = ipaddress.ip_network(entry, strict=False)  # validated with the config
            bucket = self.v4 if network.version == 4 else self.v6
            bucket.append((int(network.network_address), int(network.netmask)))

    def __bool__(self) -> bool:
        return bool(self.v4 or self.v6)

    def __contains__(self, address: Address) -> bool:
        if address.version == 6:
            mapped = address.ipv4_mapped  # type: ignore[union-attr]
            if mapped is not None and _within(int(mapped), self.v4):
                return True
            return _within(int(address), self.v6)
        return _within(int(address), self.v4)


def _within(value: int, networks: list[tuple[int, int]]) -> bool:
    return any(value & mask == network for network, mask in networks)


def valid_network(entry: object) -> bool:
    """An IP or CIDR block (Kong's typedefs.ip_or_cidr)."""
    if not isinstance(entry, str):
        return False
    try:
        ipaddress.ip_network(entry, strict=False)
    except ValueError:
        return False
    return True


def parse_address(text: str) -> Address | None:
    """One address as nginx's ngx_parse_addr_port reads it ("1.2.3.4", "1.2.3.4:80", "::1",
    "[::1]", "[::1]:80"); the port is dropped (no plugin reads it). None: not an address."""
    if text.startswith("["):
        end = text.find("]")
        rest = text[end + 1 :] if end >= 0 else ""
        if end < 0 or (rest and not (rest[0] == ":" and _is_port(rest[1:]))):
            return None
        text = text[1:end]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        pass
    host, colon, port = text.rpartition(":")
    if not colon or not _is_port(port) or ":" in host:
        return None
    try:
        return ipaddress.IPv4Address(host)
    except ValueError:
        return None


def _is_port(digits: str) -> bool:
    return digits.isdigit() and 0 < int(digits) <= 65535
