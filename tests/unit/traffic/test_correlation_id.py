"""correlation-id through a whole gateway: Kong's generators, the client's id kept, the id
upstream, echoed when asked, and in the request's log values (`correlation_id`)."""

from __future__ import annotations

import re
import uuid

import pytest

from fastgw.config import parse_config
from fastgw.plugins.api import serialize_values
from tests.support.memory_gateway import MemoryGateway
from tests.support.wire import Harness

GET = b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n"


def config(plugin: str) -> str:
    return f"""
_format_version: "3.0"
_fastgw: {{listen: "127.0.0.1:8123"}}
services: [{{url: "http://127.0.0.1:9", routes: [{{paths: [/]}}]}}]
plugins: [{{name: correlation-id, config: {plugin}}}]
"""


async def test_uuid_counter_kongs_default() -> None:
    gateway = await MemoryGateway.start(config("{}"))
    first, second = [await gateway.request(GET) for _ in range(2)]
    one = first.upstream_header(b"kong-request-id")
    two = second.upstream_header(b"kong-request-id")
    assert one is not None and two is not None
    prefix, _, number = one.decode().partition("#")
    assert uuid.UUID(prefix).version == 4 and number == "1"
    assert two.decode() == f"{prefix}#2"
    assert first.header(b"kong-request-id") is None  # echo_downstream is off


async def test_uuid_and_echo_downstream() -> None:
    gateway = await MemoryGateway.start(
        config("{header_name: X-Correlation-ID, generator: uuid, echo_downstream: true}")
    )
    reply = await gateway.request(GET)
    sent = reply.upstream_header(b"x-correlation-id")
    assert sent is not None and uuid.UUID(sent.decode()).version == 4
    assert reply.header(b"x-correlation-id") == sent


async def test_tracker_names_where_the_request_came_in() -> None:
    gateway = await MemoryGateway.start(config("{generator: tracker}"))
    client = gateway.connect()
    first, second = [await client.request(GET) for _ in range(2)]
    pattern = r"127\.0\.0\.1-8123-\d+-(\d+)-(\d)-\d+\.\d{3}"
    one = re.fullmatch(pattern, first.upstream_header(b"kong-request-id").decode())  # type: ignore[union-attr]
    two = re.fullmatch(pattern, second.upstream_header(b"kong-request-id").decode())  # type: ignore[union-attr]
    assert one and two and one.group(1) == two.group(1)  # the same connection
    assert (one.group(2), two.group(2)) == ("1", "2")  # its requests, counted


async def test_the_clients_id_is_kept_and_echoed() -> None:
    gateway = await MemoryGateway.start(config("{echo_downstream: true}"))
    raw = b"GET / HTTP/1.1\r\nHost: gw\r\nKong-Request-ID: from-the-client\r\n\r\n"
    reply = await gateway.request(raw)
    assert reply.upstream_header(b"kong-request-id") == b"from-the-client"
    assert reply.header(b"kong-request-id") == b"from-the-client"


async def test_the_id_is_the_requests_correlation_id_log_value() -> None:
    gateway = await MemoryGateway.start(config("{generator: uuid}"))
    plugin = gateway.plugin("correlation-id")
    harness = Harness()
    harness.feed(b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n")
    (exchange,) = harness.handler.seen
    assert serialize_values(exchange) == []  # nothing logged yet
    plugin.access(exchange)  # type: ignore[attr-defined]
    sent = exchange.get_header(b"kong-request-id")
    assert sent is not None
    assert serialize_values(exchange) == [("correlation_id", sent.decode(), "set")]


@pytest.mark.parametrize("body", ["{header_name: null}", "{}"])
def test_a_null_header_name_is_kongs_default(body: str) -> None:
    (entry,) = parse_config(config(body)).plugins
    assert entry.config.header_name == "Kong-Request-ID"
