"""A wire harness for unit tests: `ServerConnection` driven with raw request bytes through a
recording transport (uvicorn's style), a fake handler answering through the exchange's plugin
context API, and a real upstream pool over memory transports the test plays the upstream on.

No sockets. Used by the server, dispatch, response-head and fuzz tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from fastgw.config import Limits
from fastgw.http.exchange import Exchange
from fastgw.http.server import Server, ServerConnection
from fastgw.http.timers import Ticker
from fastgw.http.upstream import UpstreamConnection, UpstreamPool
from fastgw.proxy.forwarding import Direct
from fastgw.proxy.targets import UpstreamTarget

JSON = b"content-type: application/json; charset=utf-8\r\n"


class FakeTransport:
    """Records what the protocol does to its transport."""

    def __init__(self) -> None:
        self.written = bytearray()
        self.writes = 0
        self.events: list[str] = []  # "pause" / "resume" / "close" / "abort", in order
        self.closed = False
        self.half_close = False  # whether write_eof is offered (a graceful close)
        self.protocol: object = None  # set by set_protocol (a tunnel taking over)

    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"peername": ("203.0.113.7", 40000), "sockname": ("127.0.0.1", 8000)}.get(
            name, default
        )

    def write(self, data: bytes) -> None:
        assert not self.closed, "write after close"
        self.written += data
        self.writes += 1

    def pause_reading(self) -> None:
        self.events.append("pause")

    def resume_reading(self) -> None:
        self.events.append("resume")

    def close(self) -> None:
        self.events.append("close")
        self.closed = True

    def abort(self) -> None:
        self.events.append("abort")
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def set_protocol(self, protocol: object) -> None:
        self.protocol = protocol

    def can_write_eof(self) -> bool:
        return self.half_close

    def write_eof(self) -> None:
        self.events.append("write_eof")

    def take(self) -> bytes:
        data = bytes(self.written)
        self.written.clear()
        return data


class FakeHandler:
    """Answers locally. `/async...` waits for `release()`; `/deny` answers 401; `/body` echoes
    the request body; `/boom` raises; anything else answers `<METHOD> <path>?<query> @<host>`."""

    def __init__(self) -> None:
        self.seen: list[Exchange] = []
        self.gates: list[asyncio.Future[None]] = []
        self.upstream: Upstream | None = None  # where /proxy... goes (the harness sets it)
        # what a test's "plugin" does first to every request (e.g. edit the response)
        self.before: Callable[[Exchange], None] | None = None

    def __call__(self, exchange: Exchange) -> object:
        self.seen.append(exchange)
        if self.before is not None:
            self.before(exchange)
        path = exchange.path
        if path.startswith(b"/async"):
            return self._later(exchange)
        if path == b"/deny":
            exchange.respond(401, b'{"message":"Unauthorized"}', [(b"www-authenticate", b"Basic")])
            return None
        if path == b"/body":
            return self._echo_body(exchange)
        if path == b"/boom":
            raise RuntimeError("handler bug")
        if path.startswith(b"/proxy"):
            assert self.upstream is not None
            exchange.target = self.upstream.target
            exchange.forwarding = self.upstream.forwarding
            return None
        exchange.respond(200, describe(exchange), [(b"content-type", b"text/plain")])
        return None

    async def _later(self, exchange: Exchange) -> None:
        gate = asyncio.get_running_loop().create_future()
        self.gates.append(gate)
        await gate
        exchange.respond(200, describe(exchange), [(b"content-type", b"text/plain")])

    async def _echo_body(self, exchange: Exchange) -> None:
        body = await exchange.read_body(1 << 20)
        assert body is not None
        exchange.respond(200, body, [(b"content-type", b"text/plain")])

    async def release(self) -> None:
        """Let every waiting `/async` handler answer."""
        await settle()
        for gate in self.gates:
            if not gate.done():
                gate.set_result(None)
        await settle()


class MemoryUpstreamTransport:
    """The upstream side's transport: what the gateway wrote, and whether it is reading."""

    def __init__(self) -> None:
        self.written = bytearray()
        self.reading = True
        self.closed = False
        self.protocol: object = None  # set by set_protocol (a tunnel taking over)

    def set_protocol(self, protocol: object) -> None:
        self.protocol = protocol

    def write(self, data: bytes) -> None:
        self.written += data

    def pause_reading(self) -> None:
        assert self.reading, "paused twice"
        self.reading = False

    def resume_reading(self) -> None:
        assert not self.reading, "resumed twice"
        self.reading = True

    def close(self) -> None:
        self.closed = True

    abort = close


class Upstream:
    """A real upstream target whose pool holds `connections` connected UpstreamConnections over
    memory transports; the test plays the upstream by handing them response bytes."""

    def __init__(self, ticker: Ticker, connections: int = 1) -> None:
        self.pool = UpstreamPool(
            "upstream.test", 80, ticker, size=8, idle_timeout=60.0, max_requests=1000
        )
        self.target = UpstreamTarget(self.pool, b"upstream.test", 5.0, 60.0, 60.0)
        self.forwarding = Direct(self.target, retries=0)
        self.connections: list[UpstreamConnection] = []
        for _ in range(connections):
            conn = UpstreamConnection(self.pool)
            conn.connection_made(MemoryUpstreamTransport())  # type: ignore[arg-type]
            self.connections.append(conn)
            self.pool.release(conn)

    @staticmethod
    def transport(conn: UpstreamConnection) -> MemoryUpstreamTransport:
        transport = conn.transport
        assert isinstance(transport, MemoryUpstreamTransport)
        return transport

    def sent(self, index: int = 0) -> bytes:
        """Everything the gateway wrote to connection `index`."""
        return bytes(self.transport(self.connections[index]).written)

    def answer(self, body: bytes, index: int = 0) -> None:
        self.connections[index].data_received(
            b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%b" % (len(body), body)
        )


def describe(exchange: Exchange) -> bytes:
    target = exchange.path + (b"?" + exchange.query if exchange.query else b"")
    return b"%b %b @%b" % (exchange.method, target, exchange.host)


def ok(body: bytes, *, close: bool = False, keep_alive_10: bool = False) -> bytes:
    """The exact bytes of the fake handler's 200 answer."""
    connection = b"connection: close\r\n" if close else b""
    if keep_alive_10:
        connection = b"connection: keep-alive\r\n"
    return b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n%b\r\n%b" % (
        len(body),
        connection,
        body,
    )


def error(status_line: bytes, message: bytes) -> bytes:
    """The exact bytes of the gateway's own JSON error answer (always closes)."""
    body = b'{"message":"%b"}' % message
    return b"HTTP/1.1 %b\r\n%bcontent-length: %d\r\nconnection: close\r\n\r\n%b" % (
        status_line,
        JSON,
        len(body),
        body,
    )


DENY_CLOSE = (
    b"HTTP/1.1 401 Unauthorized\r\nwww-authenticate: Basic\r\ncontent-length: 26\r\n"
    b'connection: close\r\n\r\n{"message":"Unauthorized"}'
)
DENY = (
    b"HTTP/1.1 401 Unauthorized\r\nwww-authenticate: Basic\r\ncontent-length: 26\r\n\r\n"
    b'{"message":"Unauthorized"}'
)


class Harness:
    def __init__(self, upstream_connections: int = 1, **limits: object) -> None:
        self.handler = FakeHandler()
        self.ticker = Ticker()
        self.ticker.now = 1000.0
        self.server = Server(self.handler, Limits(**limits), self.ticker)  # type: ignore[arg-type]
        self.upstream = self.handler.upstream = Upstream(self.ticker, upstream_connections)
        self.transport = FakeTransport()
        self.conn: ServerConnection = self.server.protocol_factory()
        self.conn.connection_made(self.transport)  # type: ignore[arg-type]

    def feed(self, *chunks: bytes) -> bytes:
        for chunk in chunks:
            self.conn.data_received(chunk)
        return self.transport.take()

    def advance(self, seconds: float) -> None:
        self.ticker.now += seconds
        self.conn.check_timeouts(self.ticker.now)

    @property
    def closed(self) -> bool:
        return self.transport.closed


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)
