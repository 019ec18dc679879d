"""request-size-limiting through a whole gateway: a Content-Length over the limit (413, 417
with Expect: 100-continue) without reading the body, a chunked body read up to the limit,
require_content_length's 411, Kong's binary units."""

from __future__ import annotations

import json

from tests.support.memory_gateway import MemoryGateway


def config(plugin: str) -> str:
    return f"""
_format_version: "3.0"
services: [{{url: "http://127.0.0.1:9", routes: [{{paths: [/]}}]}}]
plugins: [{{name: request-size-limiting, config: {plugin}}}]
"""


def post(size: int, extra: bytes = b"") -> bytes:
    return b"POST / HTTP/1.1\r\nHost: gw\r\n%bContent-Length: %d\r\n\r\n" % (extra, size)


def chunked(extra: bytes = b"") -> bytes:
    return b"POST / HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n%b\r\n" % extra


async def test_a_length_over_the_limit_is_413_and_never_upstream() -> None:
    gateway = await MemoryGateway.start(config("{allowed_payload_size: 10, size_unit: bytes}"))
    reply = await gateway.request(post(11), body=b"x" * 11)
    assert (reply.status, reply.upstream_request) == (413, b"")
    assert json.loads(reply.body) == {"message": "Request size limit exceeded"}
    exact = await gateway.request(post(10), body=b"y" * 10)
    assert exact.status == 200 and exact.upstream_request.endswith(b"y" * 10)


async def test_a_client_waiting_with_expect_gets_417() -> None:
    gateway = await MemoryGateway.start(config("{allowed_payload_size: 1, size_unit: kilobytes}"))
    reply = await gateway.request(post(1025, b"Expect: 100-continue\r\n"))
    assert reply.status == 417
    assert json.loads(reply.body) == {"message": "Request size limit exceeded"}


async def test_a_chunked_body_is_read_up_to_the_limit() -> None:
    gateway = await MemoryGateway.start(config("{allowed_payload_size: 8, size_unit: bytes}"))
    small = await gateway.request(chunked(), body=b"5\r\nhello\r\n0\r\n\r\n")
    assert small.status == 200 and b"hello" in small.upstream_request
    large = await gateway.request(chunked(), body=b"9\r\nhello you\r\n0\r\n\r\n")
    assert large.status == 413 and large.upstream_request == b""


async def test_require_content_length_answers_411_but_lets_chunked_in() -> None:
    gateway = await MemoryGateway.start(config("{require_content_length: true}"))
    reply = await gateway.request(b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n")
    assert reply.status == 411
    assert json.loads(reply.body) == {"message": "A valid Content-Length header is required"}
    assert (await gateway.request(post(0))).status == 200
    assert (await gateway.request(chunked(), body=b"0\r\n\r\n")).status == 200


async def test_kongs_units_are_binary_and_megabytes_the_default() -> None:
    gateway = await MemoryGateway.start(config("{allowed_payload_size: 1}"))
    assert (await gateway.request(post(1048577))).status == 413
    plugin = gateway.plugin("request-size-limiting")
    assert plugin.allowed == 1048576  # type: ignore[attr-defined]
