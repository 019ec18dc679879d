"""rate-limiting through a whole gateway (real router, chain, exchange): Kong's response fields
with Kong's values, the 429, the windows Kong counts in, what `limit_by` counts, the bounded
counters; time is the test's clock."""

from __future__ import annotations

import json

from fastgw.config.consumers import Consumer
from fastgw.config.schema import Reader, read_schema
from fastgw.plugins.api import Authenticated, Credential
from fastgw.plugins.common.client_address import ClientAddress
from fastgw.plugins.rate_limiting import RateLimiting
from fastgw.plugins.rate_limiting.schema import RATE_LIMITING
from tests.support.memory_gateway import MemoryGateway, Reply
from tests.support.wire import Harness
from tests.unit.traffic.clock_support import T0, FakeTime, clock  # noqa: F401

GET = b"GET /a HTTP/1.1\r\nHost: gw\r\n\r\n"


def gateway_config(plugin_config: str, settings: str = "{}") -> str:
    return f"""
_format_version: "3.0"
_fastgw: {settings}
services:
  - name: orders
    url: http://127.0.0.1:9
    routes: [{{name: r1, paths: [/a]}}]
  - name: users
    url: http://127.0.0.1:9
    routes: [{{name: r2, paths: [/b]}}]
plugins:
  - name: rate-limiting
    config: {plugin_config}
"""


def fields(reply: Reply) -> dict[bytes, bytes]:
    names = (b"ratelimit", b"x-ratelimit", b"retry-after")
    return {name: value for name, value in reply.headers if name.startswith(names)}


async def test_kongs_fields_on_an_allowed_request(clock: FakeTime) -> None:
    gateway = await MemoryGateway.start(gateway_config("{second: 3, minute: 5}"))
    reply = await gateway.request(GET)
    assert reply.status == 200 and reply.body == b"ok"
    assert fields(reply) == {
        b"x-ratelimit-limit-second": b"3",
        b"x-ratelimit-remaining-second": b"2",
        b"x-ratelimit-limit-minute": b"5",
        b"x-ratelimit-remaining-minute": b"4",
        # the period with the least left: the second
        b"ratelimit-limit": b"3",
        b"ratelimit-remaining": b"2",
        b"ratelimit-reset": b"1",
    }
    clock.advance(1)
    reply = await gateway.request(GET)
    assert fields(reply)[b"x-ratelimit-remaining-minute"] == b"3"
    assert fields(reply)[b"ratelimit-remaining"] == b"2"  # a new second: the second again
    await gateway.stop()


async def test_the_429_kongs_body_and_fields_never_upstream(clock: FakeTime) -> None:
    gateway = await MemoryGateway.start(gateway_config("{minute: 2, hour: 10}"))
    assert [(await gateway.request(GET)).status for _ in range(2)] == [200, 200]
    clock.advance(5)  # 15 s into the minute
    reply = await gateway.request(GET)
    assert reply.status == 429 and reply.upstream_request == b""
    assert json.loads(reply.body) == {"message": "API rate limit exceeded"}
    assert reply.header(b"content-type") == b"application/json; charset=utf-8"
    assert fields(reply) == {
        b"x-ratelimit-limit-minute": b"2",
        b"x-ratelimit-remaining-minute": b"0",
        b"x-ratelimit-limit-hour": b"10",
        b"x-ratelimit-remaining-hour": b"8",  # Kong takes no share from a period not used up
        b"ratelimit-limit": b"2",
        b"ratelimit-remaining": b"0",
        b"ratelimit-reset": b"45",
        b"retry-after": b"45",
    }
    assert gateway.plugin("rate-limiting").status()["limited"] == 1
    clock.set(T0 + 60)  # the next minute
    reply = await gateway.request(GET)
    assert reply.status == 200 and fields(reply)[b"x-ratelimit-remaining-hour"] == b"7"
    await gateway.stop()


async def test_hide_client_headers_and_kongs_error_code_and_message(clock: FakeTime) -> None:
    config = "{second: 1, hide_client_headers: true, error_code: 503, error_message: Slow down}"
    gateway = await MemoryGateway.start(gateway_config(config))
    assert fields(await gateway.request(GET)) == {}
    reply = await gateway.request(GET)
    assert reply.status == 503 and json.loads(reply.body) == {"message": "Slow down"}
    assert fields(reply) == {}  # no Retry-After either
    await gateway.stop()


async def test_a_fractional_limit_as_kong_counts_and_prints_it(clock: FakeTime) -> None:
    gateway = await MemoryGateway.start(gateway_config("{second: 1.5}"))
    first, second, third = [await gateway.request(GET) for _ in range(3)]
    assert fields(first)[b"x-ratelimit-limit-second"] == b"1.5"
    assert fields(first)[b"x-ratelimit-remaining-second"] == b"0.5"
    assert second.status == 200 and fields(second)[b"x-ratelimit-remaining-second"] == b"0"
    assert third.status == 429
    await gateway.stop()


async def test_a_tie_reports_the_longer_period(clock: FakeTime) -> None:
    gateway = await MemoryGateway.start(gateway_config("{minute: 5, hour: 5}"))
    reply = await gateway.request(GET)
    assert fields(reply)[b"ratelimit-reset"] == b"3590"  # the hour's: 10 s into it
    await gateway.stop()


async def test_a_long_calendar_month_reports_kongs_30_days() -> None:
    from fastgw.plugins.rate_limiting.windows import Period, window_bounds

    january = window_bounds("month", T0)
    assert january == (T0 - 14 * 86400 - 8 * 3600, T0 - 14 * 86400 - 8 * 3600 + 31 * 86400)
    period = Period("month", 10)
    period.at(january[1] - 5)  # the 31st, 5 s before February
    assert period.reset(january[1] - 5) == 1  # Kong's 30-day month has ended already


async def test_limit_by_header_counts_each_value_and_keeps_only_a_digest(clock: FakeTime) -> None:
    config = "{minute: 1, limit_by: header, header_name: X-Api-Key}"
    gateway = await MemoryGateway.start(gateway_config(config))

    def with_key(key: bytes) -> bytes:
        return b"GET /a HTTP/1.1\r\nHost: gw\r\nX-Api-Key: " + key + b"\r\n\r\n"

    assert (await gateway.request(with_key(b"secret-1"))).status == 200
    assert (await gateway.request(with_key(b"secret-1"))).status == 429
    assert (await gateway.request(with_key(b"secret-2"))).status == 200
    assert (await gateway.request(GET)).status == 200  # no header: counted by address
    plugin = gateway.plugin("rate-limiting")
    assert isinstance(plugin, RateLimiting)
    identifiers = list(plugin.local.counts)
    assert len(identifiers) == 3 and "203.0.113.7" in identifiers
    assert not any("secret" in identifier for identifier in identifiers)
    await gateway.stop()


async def test_limit_by_path_counts_that_path_alone(clock: FakeTime) -> None:
    config = "{minute: 1, limit_by: path, path: /a/x}"
    gateway = await MemoryGateway.start(gateway_config(config))
    at_x = b"GET /a/x HTTP/1.1\r\nHost: gw\r\n\r\n"
    assert [
        (await gateway.request(at_x, peer=peer)).status for peer in ("10.0.0.1", "10.0.0.2")
    ] == [200, 429]
    elsewhere = b"GET /a/y HTTP/1.1\r\nHost: gw\r\n\r\n"
    assert (await gateway.request(elsewhere, peer="10.0.0.1")).status == 200  # by address
    await gateway.stop()


async def test_limit_by_ip_is_kongs_client_address_behind_trusted_proxies(clock: FakeTime) -> None:
    settings = "{trusted_ips: [10.0.0.0/8], real_ip_header: X-Forwarded-For}"
    gateway = await MemoryGateway.start(gateway_config("{minute: 1, limit_by: ip}", settings))

    def behind(client: bytes) -> bytes:
        return b"GET /a HTTP/1.1\r\nHost: gw\r\nX-Forwarded-For: " + client + b"\r\n\r\n"

    balancer = "10.1.2.3"
    assert (await gateway.request(behind(b"198.51.100.1"), peer=balancer)).status == 200
    assert (await gateway.request(behind(b"198.51.100.2"), peer=balancer)).status == 200
    assert (await gateway.request(behind(b"198.51.100.1"), peer=balancer)).status == 429
    # an untrusted peer's header is not believed: it is counted as itself
    assert (await gateway.request(behind(b"198.51.100.3"), peer="192.0.2.9")).status == 200
    assert (await gateway.request(behind(b"198.51.100.4"), peer="192.0.2.9")).status == 429
    await gateway.stop()


async def test_limit_by_service_counts_each_service_of_a_global_plugin(clock: FakeTime) -> None:
    gateway = await MemoryGateway.start(gateway_config("{minute: 1, limit_by: service}"))
    at_b = b"GET /b HTTP/1.1\r\nHost: gw\r\n\r\n"
    assert (await gateway.request(GET, peer="10.0.0.1")).status == 200
    assert (await gateway.request(GET, peer="10.0.0.2")).status == 429  # the same service
    assert (await gateway.request(at_b, peer="10.0.0.1")).status == 200
    plugin = gateway.plugin("rate-limiting")
    assert isinstance(plugin, RateLimiting)
    assert sorted(plugin.local.counts) == ["orders", "users"]
    await gateway.stop()


def _plugin(text: str, capacity: int = 100) -> RateLimiting:
    import yaml

    reader = Reader(yaml.safe_load(text), "config", [])
    return RateLimiting(read_schema(reader, RATE_LIMITING), ClientAddress(), capacity=capacity)


def test_limit_by_consumer_then_credential_then_address() -> None:
    plugin = _plugin("{minute: 5}")
    by_credential = _plugin("{minute: 5, limit_by: credential}")
    harness = Harness()
    harness.feed(b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n")
    (exchange,) = harness.handler.seen
    assert plugin.identify(exchange) == "203.0.113.7"  # nobody authenticated
    credential = Credential("keyauth_credentials", "cred-1")
    exchange.principal = Authenticated(None, credential)
    assert plugin.identify(exchange) == "cred-1"
    exchange.principal = Authenticated(Consumer("consumer-1", "alice", None), credential)
    assert plugin.identify(exchange) == "consumer-1"
    assert by_credential.identify(exchange) == "cred-1"


def test_the_counters_are_bounded_and_say_so(clock: FakeTime) -> None:
    plugin = _plugin("{minute: 100}", capacity=3)
    plugin.instance_name = "plugins[0]"
    for period in plugin.periods:
        period.at(T0)
    for number in range(5):
        plugin.local.slots(f"10.0.0.{number}")
    (store,) = plugin.stores()
    assert (store.name, store.entries, store.capacity_entries) == (
        "rate-limiting counters (plugins[0])",
        3,
        3,
    )
    assert store.used_bytes <= store.capacity_bytes
    assert plugin.local.evicted == 2 and list(plugin.local.counts) == [
        "10.0.0.2",
        "10.0.0.3",
        "10.0.0.4",
    ]
    assert plugin.status()["counters_evicted"] == 2


def test_every_counter_expires_when_the_longest_window_turns() -> None:
    plugin = _plugin("{second: 5, minute: 100}")
    for period in plugin.periods:
        period.at(T0)
    plugin.local.slots("a")[1] = 3
    for period in plugin.periods:
        period.at(T0 + 1)  # a new second, the same minute
    slots = plugin.local.slots("a")
    assert slots[1] == 0 and len(plugin.local.counts) == 1
    for period in plugin.periods:
        period.at(T0 + 60)
    plugin.local.slots("b")
    assert list(plugin.local.counts) == ["b"]  # "a" expired with the minute
