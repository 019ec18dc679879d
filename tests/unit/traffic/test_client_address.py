"""The client address as Kong computes it (nginx realip under kong.conf's trusted_ips,
real_ip_header, real_ip_recursive): the header's last address, or the last one not trusted,
only from a trusted peer; the `_fastgw` keys that set it."""

from __future__ import annotations

import pytest

from fastgw.config import ConfigError, parse_config
from fastgw.config.model import RealIp
from fastgw.plugins.common.client_address import ClientAddress, forwarded
from fastgw.plugins.common.networks import Networks, parse_address
from tests.support.wire import FakeTransport, Harness

TRUSTED = Networks(("10.0.0.0/8", "::1", "192.0.2.1"))


@pytest.mark.parametrize(
    ("value", "recursive", "expected"),
    [
        ("198.51.100.1", False, "198.51.100.1"),
        ("198.51.100.1, 10.0.0.5", False, "10.0.0.5"),  # the last, trusted or not
        ("198.51.100.1, 10.0.0.5", True, "198.51.100.1"),  # the last not trusted
        ("203.0.113.9, 198.51.100.1, 10.0.0.5, 192.0.2.1", True, "198.51.100.1"),
        ("10.0.0.7, 10.0.0.5", True, "10.0.0.7"),  # all trusted: the first
        ("198.51.100.1:5000", False, "198.51.100.1"),  # a port is dropped
        ("[2001:db8::1]:443", False, "2001:db8::1"),
        ("2001:DB8::1", False, "2001:db8::1"),  # as nginx prints it
        ("not-an-address", False, "10.9.9.9"),  # unreadable: the peer stays
        ("garbage, 10.0.0.5", True, "10.0.0.5"),  # the search ends at what does not parse
        ("", False, "10.9.9.9"),
    ],
)
def test_nginx_realip_on_a_header_value(value: str, recursive: bool, expected: str) -> None:
    assert forwarded("10.9.9.9", value, TRUSTED, recursive) == expected


def test_addresses_as_nginx_reads_them() -> None:
    assert str(parse_address("[::1]")) == "::1"
    assert parse_address("[::1]x") is None
    assert parse_address("1.2.3.4:99999") is None
    assert str(parse_address("1.2.3.4:80")) == "1.2.3.4"


def test_ipv4_blocks_match_ipv4_mapped_peers() -> None:
    assert parse_address("::ffff:10.1.2.3") in TRUSTED
    assert parse_address("2001:db8::1") not in TRUSTED


def request(raw: bytes, peer: str = "203.0.113.7") -> object:
    harness = Harness()
    # a connection of its own from `peer` (a connection reads its peer once, when made)
    harness.transport = FakeTransport()
    harness.transport.get_extra_info = lambda name, default=None: (  # type: ignore[method-assign]
        (peer, 4000) if name == "peername" else ("127.0.0.1", 8000)
    )
    harness.conn = harness.server.protocol_factory()
    harness.conn.connection_made(harness.transport)  # type: ignore[arg-type]
    harness.feed(raw)
    return harness.handler.seen[-1]


def test_kongs_default_trusts_nobody_and_costs_nothing() -> None:
    address = ClientAddress()
    assert not address.trusts_anyone
    exchange = request(b"GET / HTTP/1.1\r\nHost: gw\r\nX-Real-IP: 198.51.100.1\r\n\r\n")
    assert address.of(exchange) == "203.0.113.7"  # type: ignore[arg-type]


def test_x_real_ip_kongs_default_header_from_a_trusted_peer() -> None:
    address = ClientAddress(RealIp(trusted_ips=("203.0.113.0/24",)))
    raw = b"GET / HTTP/1.1\r\nHost: gw\r\nX-Real-IP: 198.51.100.1\r\nX-Real-IP: 1.1.1.1\r\n\r\n"
    assert address.of(request(raw)) == "198.51.100.1"  # type: ignore[arg-type]  # the first
    assert address.of(request(raw, peer="192.0.2.50")) == "192.0.2.50"  # type: ignore[arg-type]


def test_x_forwarded_for_every_field_and_recursion() -> None:
    address = ClientAddress(
        RealIp(("203.0.113.0/24", "10.0.0.0/8"), "X-Forwarded-For", real_ip_recursive=True)
    )
    raw = (
        b"GET / HTTP/1.1\r\nHost: gw\r\nX-Forwarded-For: 198.51.100.1, 10.0.0.1\r\n"
        b"X-Forwarded-For: 10.0.0.2\r\n\r\n"
    )
    assert address.of(request(raw)) == "198.51.100.1"  # type: ignore[arg-type]


def test_another_header_and_the_address_computed_once() -> None:
    address = ClientAddress(RealIp(("203.0.113.7",), "CF-Connecting-IP"))
    exchange = request(b"GET / HTTP/1.1\r\nHost: gw\r\nCF-Connecting-IP: 198.51.100.8\r\n\r\n")
    assert address.of(exchange) == "198.51.100.8"  # type: ignore[arg-type]
    exchange.headers.clear()  # type: ignore[attr-defined]
    assert address.of(exchange) == "198.51.100.8"  # type: ignore[arg-type]  # kept for the request


def settings(body: str) -> RealIp:
    text = f'_format_version: "3.0"\n_fastgw: {body}\n'
    return parse_config(text).settings.real_ip


def test_the_fastgw_keys_named_after_kong_conf() -> None:
    assert settings("{}") == RealIp((), "X-Real-IP", False)
    read = settings(
        "{trusted_ips: '0.0.0.0/0,::/0', real_ip_header: X-Forwarded-For, real_ip_recursive: on}"
    )
    assert read == RealIp(("0.0.0.0/0", "::/0"), "X-Forwarded-For", True)
    assert settings("{trusted_ips: ['unix:', 10.0.0.1]}").trusted_ips == ("10.0.0.1",)


def test_kongs_message_for_a_bad_trusted_ip() -> None:
    with pytest.raises(ConfigError) as caught:
        settings("{trusted_ips: [10.0.0.0/33]}")
    assert caught.value.problems == [
        (
            "_fastgw.trusted_ips",
            "trusted_ips must be a comma separated list in the form of IPv4 or IPv6 address or "
            "CIDR block or 'unix:', got '10.0.0.0/33'",
        )
    ]
