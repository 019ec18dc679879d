"""Calibration only, not fastgw: the least a uvloop + httptools proxy can do per request.

GET only, no limits, no streaming, no header rewriting, no timeouts: it answers "how fast can
Python on this box proxy at all?", so the gap between it and fastgw is the cost of fastgw's own
work. `bench/compare.py --floor` measures it beside the real targets.
Usage: python bench/floor_proxy.py LISTEN_PORT UPSTREAM_PORT
"""

from __future__ import annotations

import asyncio
import sys

import httptools
import uvloop


class Upstream(asyncio.Protocol):
    def __init__(self, pool: list[Upstream]) -> None:
        self.pool = pool
        self.parser = httptools.HttpResponseParser(self)
        self.client: Client | None = None
        self.chunks: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)
        self.parser.feed_data(data)

    def on_message_complete(self) -> None:
        client, self.client = self.client, None
        client.transport.write(b"".join(self.chunks))  # type: ignore[union-attr]
        self.chunks = []
        self.pool.append(self)


class Client(asyncio.Protocol):
    def __init__(self, pool: list[Upstream], upstream_port: int) -> None:
        self.pool = pool
        self.upstream_port = upstream_port
        self.parser = httptools.HttpRequestParser(self)
        self.head: list[bytes] = []
        self.url = b"/"
        self.connecting: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_message_begin(self) -> None:
        self.head = []

    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head += (name, b": ", value, b"\r\n")

    def on_message_complete(self) -> None:
        request = b"".join((b"GET ", self.url, b" HTTP/1.1\r\n", *self.head, b"\r\n"))
        if self.pool:
            self.send(self.pool.pop(), request)
        else:
            self.connecting = asyncio.ensure_future(self.connect(request))

    async def connect(self, request: bytes) -> None:
        loop = asyncio.get_running_loop()
        _, upstream = await loop.create_connection(
            lambda: Upstream(self.pool), "127.0.0.1", self.upstream_port
        )
        self.send(upstream, request)

    def send(self, upstream: Upstream, request: bytes) -> None:
        upstream.client = self
        upstream.transport.write(request)  # type: ignore[attr-defined]


async def serve(port: int, upstream_port: int) -> None:
    pool: list[Upstream] = []
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Client(pool, upstream_port), "127.0.0.1", port)
    await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(serve(int(sys.argv[1]), int(sys.argv[2])))
