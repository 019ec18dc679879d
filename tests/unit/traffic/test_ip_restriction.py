"""ip-restriction through a whole gateway: deny first, then allow, v4 and v6, CIDR blocks,
Kong's 403 and message, `status` / `message`, and Kong's checks of the config."""

from __future__ import annotations

import json

import pytest

from fastgw.config import ConfigError, parse_config
from tests.support.memory_gateway import MemoryGateway

GET = b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n"


def config(plugin: str, settings: str = "{}") -> str:
    return f"""
_format_version: "3.0"
_fastgw: {settings}
services: [{{url: "http://127.0.0.1:9", routes: [{{paths: [/]}}]}}]
plugins: [{{name: ip-restriction, config: {plugin}}}]
"""


async def statuses(plugin: str, *peers: str) -> list[int]:
    gateway = await MemoryGateway.start(config(plugin))
    return [(await gateway.request(GET, peer=peer)).status for peer in peers]


async def test_kongs_docs_allow_and_deny() -> None:
    plugin = "{allow: [203.0.113.0/24], deny: [203.0.113.5]}"
    assert await statuses(plugin, "203.0.113.1", "203.0.113.5", "198.51.100.1") == [200, 403, 403]


async def test_deny_alone_lets_the_rest_through_allow_alone_keeps_it_out() -> None:
    assert await statuses("{deny: [198.51.100.0/24]}", "198.51.100.9", "192.0.2.1") == [403, 200]
    assert await statuses("{allow: [192.0.2.1]}", "192.0.2.1", "192.0.2.2") == [200, 403]


async def test_ipv6_and_ipv4_blocks_apart() -> None:
    plugin = "{allow: ['2001:db8::/32', 10.0.0.0/8]}"
    peers = ("2001:db8::7", "2001:db9::7", "10.1.1.1", "::ffff:10.1.1.1")
    assert await statuses(plugin, *peers) == [200, 403, 200, 200]


async def test_kongs_answer_and_the_configured_one() -> None:
    gateway = await MemoryGateway.start(config("{deny: [203.0.113.0/24]}"))
    reply = await gateway.request(GET, peer="203.0.113.5")
    assert (reply.status, reply.upstream_request) == (403, b"")
    assert json.loads(reply.body) == {"message": "IP address not allowed: 203.0.113.5"}
    gateway = await MemoryGateway.start(
        config("{deny: [203.0.113.0/24], status: 451, message: Not here}")
    )
    reply = await gateway.request(GET, peer="203.0.113.5")
    assert reply.status == 451 and json.loads(reply.body) == {"message": "Not here"}


async def test_the_address_behind_a_trusted_balancer() -> None:
    settings = "{trusted_ips: [10.0.0.0/8], real_ip_header: X-Forwarded-For}"
    gateway = await MemoryGateway.start(config("{deny: [198.51.100.0/24]}", settings))
    behind = b"GET / HTTP/1.1\r\nHost: gw\r\nX-Forwarded-For: 198.51.100.4\r\n\r\n"
    reply = await gateway.request(behind, peer="10.0.0.2")
    assert reply.status == 403
    assert json.loads(reply.body) == {"message": "IP address not allowed: 198.51.100.4"}
    assert (await gateway.request(behind, peer="192.0.2.1")).status == 200  # not believed


async def test_a_keep_alive_connection_is_decided_once_per_address() -> None:
    gateway = await MemoryGateway.start(config("{allow: [203.0.113.0/24]}"))
    client = gateway.connect("203.0.113.9")
    assert [(await client.request(GET)).status for _ in range(3)] == [200, 200, 200]


def problems(plugin: str) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as caught:
        parse_config(config(plugin))
    return caught.value.problems


def test_kongs_checks_of_the_config() -> None:
    assert problems("{allow: [10.0.0.300]}") == [
        ("plugins[0].config.allow[0]", "invalid ip or cidr range: '10.0.0.300'")
    ]
    assert problems("{}") == [
        (
            "plugins[0].config",
            "at least one of these fields must be non-empty: 'config.allow', 'config.deny'",
        )
    ]
    assert problems("{deny: [10.0.0.1], status: 200}") == [
        ("plugins[0].config.status", "must be an HTTP error status, between 400 and 599")
    ]
    parse_config(config("{deny: null, allow: [0.0.0.0/0]}"))  # Kong's own fixture (burst.yml)
