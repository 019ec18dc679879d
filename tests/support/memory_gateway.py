"""A whole Gateway built from a config text, driven with raw request bytes over in-memory
transports: the real router, chains, plugins and exchanges, no sockets to the gateway. The
test plays the upstream: each service's pool holds one connection, answered with `answer`.

    gateway = await MemoryGateway.start(CONFIG)
    reply = await gateway.request(b"GET / HTTP/1.1\\r\\nHost: gw\\r\\n\\r\\n")
    assert reply.status == 200 and reply.header(b"ratelimit-remaining") == b"4"

A plugin that waits for something real (Redis) gets real time: every wait is on a state,
bounded by STATE_TIMEOUT.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from fastgw.config import parse_config
from fastgw.gateway import Gateway
from fastgw.http.upstream import UpstreamConnection
from tests.support.wire import FakeTransport, MemoryUpstreamTransport

OK = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"
STATE_TIMEOUT = 10.0  # seconds: a state a test waits for comes long before this
DEFAULT_PEER = "203.0.113.7"


class PeerTransport(FakeTransport):
    """A client transport whose peer address the test chooses."""

    def __init__(self, peer: str) -> None:
        super().__init__()
        self.peer = peer

    def get_extra_info(self, name: str, default: object = None) -> object:
        if name == "peername":
            return (self.peer, 40000)
        return super().get_extra_info(name, default)


@dataclass
class Reply:
    """One response as the client got it."""

    raw: bytes
    status: int
    headers: list[tuple[bytes, bytes]]  # names lower case, in order
    body: bytes
    upstream_request: bytes  # what the upstream got (b"" for a local answer)

    def header(self, name: bytes) -> bytes | None:
        for field, value in self.headers:
            if field == name:
                return value
        return None

    def all(self, name: bytes) -> list[bytes]:
        return [value for field, value in self.headers if field == name]

    def upstream_header(self, name: bytes) -> bytes | None:
        head = self.upstream_request.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]
        for line in head:
            field, _, value = line.partition(b":")
            if field.lower() == name:
                return value.strip()
        return None


def parse_reply(raw: bytes, upstream_request: bytes) -> Reply:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ")[1])
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers.append((name.lower(), value.strip()))
    return Reply(raw, status, headers, body, upstream_request)


async def wait_for(predicate: object, what: str) -> None:
    """Turn the loop (and let real time pass) until `predicate()` holds."""
    deadline = time.monotonic() + STATE_TIMEOUT
    turns = 0
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"still waiting for {what}")
        turns += 1
        await asyncio.sleep(0 if turns < 50 else 0.001)


class MemoryGateway:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.upstreams: list[UpstreamConnection] = []
        for pool in gateway.pools or gateway.runtime.edge.pools:
            upstream = UpstreamConnection(pool)
            upstream.connection_made(MemoryUpstreamTransport())  # type: ignore[arg-type]
            pool.idle.append(upstream)
            self.upstreams.append(upstream)

    @classmethod
    async def start(cls, text: str) -> MemoryGateway:
        gateway = Gateway(parse_config(text), admin_listen="off")
        for plugin in gateway.plugins:
            await plugin.start()
        return cls(gateway)

    async def stop(self) -> None:
        for plugin in self.gateway.plugins:
            await plugin.stop()

    def plugin(self, name: str) -> object:
        (found,) = [plugin for plugin in self.gateway.plugins if plugin.name == name]
        return found

    def connect(self, peer: str = DEFAULT_PEER) -> Client:
        return Client(self, peer)

    async def request(
        self, raw: bytes, answer: bytes = OK, peer: str = DEFAULT_PEER, *, body: bytes = b""
    ) -> Reply:
        """`raw` on a new client connection (then `body`, once the request is waiting for it)."""
        return await self.connect(peer).request(raw, answer, body=body)


class Client:
    """One client connection to the gateway."""

    def __init__(self, gateway: MemoryGateway, peer: str) -> None:
        self.gateway = gateway
        self.transport = PeerTransport(peer)
        self.connection = gateway.gateway.proxy.protocol_factory()
        self.connection.connection_made(self.transport)  # type: ignore[arg-type]

    async def request(self, raw: bytes, answer: bytes = OK, *, body: bytes = b"") -> Reply:
        upstream_transports = [
            upstream.transport for upstream in self.gateway.upstreams if upstream.transport
        ]
        for transport in upstream_transports:
            transport.written.clear()  # type: ignore[attr-defined]
        self.connection.data_received(raw)
        if body:
            await asyncio.sleep(0)
            self.connection.data_received(body)

        def sent_upstream() -> UpstreamConnection | None:
            for upstream in self.gateway.upstreams:
                transport = upstream.transport
                if transport is not None and transport.written:  # type: ignore[attr-defined]
                    return upstream
            return None

        def progressed() -> bool:
            return bool(self.transport.written) or sent_upstream() is not None

        await wait_for(progressed, "an answer or a request upstream")
        upstream = sent_upstream()
        upstream_request = b""
        if upstream is not None and not self.transport.written:
            upstream_request = bytes(upstream.transport.written)  # type: ignore[attr-defined]
            if body and not upstream_request.endswith(body):
                await wait_for(
                    lambda: bytes(upstream.transport.written).endswith(body),  # type: ignore[attr-defined]
                    "the body upstream",
                )
                upstream_request = bytes(upstream.transport.written)  # type: ignore[attr-defined]
            upstream.data_received(answer)
        await wait_for(lambda: bool(self.transport.written), "the response")
        return parse_reply(self.transport.take(), upstream_request)
