"""Fuzzing the request head path: random and mutated request bytes, fed in random pieces.

Twice: into a `ServerConnection` with a fake transport and a fake clock (hundreds of examples, no
I/O), and over loopback sockets into an embedded `Gateway` whose upstream parses strictly (a few
dozen). Either way the gateway answers (2xx for valid requests, 4xx/5xx with `connection: close`
for bad ones) or closes; it never raises out of `data_received`, never waits past its timeouts,
never forwards what a strict upstream cannot frame, and serves the next client normally.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterator

import httptools
import pytest
import uvloop
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastgw.config import Limits, parse_config
from fastgw.gateway import Gateway
from fastgw.http.exchange import Exchange
from fastgw.http.server import Server, ServerConnection
from fastgw.http.timers import Ticker
from tests.support.wire import FakeTransport

# Small limits, so that random input reaches every one of them.
LIMITS = {
    "max_head_size": 2048,
    "max_headers": 16,
    "max_uri_size": 256,
    "max_body_size": 64,
    "head_timeout": 5.0,
    "keepalive_timeout": 10.0,
}
# What the wire layer may answer: the handler's 200 plus the gateway's own errors.
WIRE_STATUSES = {200, 400, 405, 408, 413, 414, 417, 431, 501, 505}
STATUS_LINE = re.compile(rb"HTTP/1\.1 (\d{3}) [^\r\n]*\r\n")

# -- generating requests --------------------------------------------------------------------------

TOKEN = st.text(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.!#$%&'*+^`|~",
    min_size=1,
    max_size=12,
)
# no "%" or ".": a bad escape or a dot segment above the root is routing's 400, not the wire's
PATH = st.text("abcdefghijklmnopqrstuvwxyz0123456789-_~/?=&", max_size=30).map(lambda p: "/" + p)

METHODS = [b"GET", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH", b"get", b"CONNECT", b"PRI"]
TARGETS = [
    b"/",
    b"/a?b=c",
    b"http://gw.test/x",
    b"http://gw.test",
    b"*",
    b"//x",
    b"/../x",
    b"/%2e%2e/x",
]
VERSIONS = [b"HTTP/1.1"] * 6 + [
    b"HTTP/1.0",
    b"HTTP/2.0",
    b"HTTP/1.2",
    b"HTTP/0.9",
    b"http/1.1",
    b"",
]
NAMES = [
    b"Host",
    b"Content-Length",
    b"Transfer-Encoding",
    b"Connection",
    b"Expect",
    b"X-Forwarded-For",
    b"Upgrade",
    b"Trailer",
    b"TE",
    b"Keep-Alive",
    b"Proxy-Connection",
    b"Authorization",
]
VALUES = [
    b"gw.test",
    b"chunked",
    b"gzip, chunked",
    b"chunked, gzip",
    b"identity",
    b"0",
    b"5",
    b"3, 3",
    b"-1",
    b"100-continue",
    b"close",
    b"keep-alive",
    b"Upgrade, X-A",
    b"websocket",
    b"a\x00b",
    b"a\rb",
    b"\xff\xfe",
    b" padded ",
]
SEPARATORS = [b": "] * 8 + [b":", b" : ", b":\t", b"\t:"]
EOLS = [b"\r\n"] * 12 + [b"\n", b"\r", b"\r\r\n"]
INTERESTING = b'\x00\r\n \t:;,\x7f\xff0aZ/?#%@"\\'


@st.composite
def header(draw: st.DrawFn) -> bytes:
    name = draw(st.one_of(st.sampled_from(NAMES), TOKEN.map(str.encode)))
    value = draw(st.one_of(st.sampled_from(VALUES), st.binary(max_size=20), TOKEN.map(str.encode)))
    return name + draw(st.sampled_from(SEPARATORS)) + value


@st.composite
def chunked_body(draw: st.DrawFn) -> bytes:
    parts = []
    for data in draw(st.lists(st.binary(min_size=1, max_size=20), max_size=4)):
        extension = draw(st.sampled_from([b"", b";a=b", b';q="x y"', b";" + b"e" * 50]))
        parts.append(b"%x%b\r\n%b\r\n" % (len(data), extension, data))
    trailers = draw(st.sampled_from([b"", b"X-T: 1\r\n", b"Content-Length: 5\r\n", b"Host: x\r\n"]))
    return b"".join(parts) + b"0\r\n" + trailers + b"\r\n"


@st.composite
def message(draw: st.DrawFn) -> bytes:
    """One request from mostly-valid parts, some of them hostile."""
    method = draw(st.sampled_from(METHODS))
    target = draw(st.one_of(st.sampled_from(TARGETS), PATH.map(str.encode)))
    version = draw(st.sampled_from(VERSIONS))
    eol = draw(st.sampled_from(EOLS))
    lines = [b" ".join(part for part in (method, target, version) if part)]
    if draw(st.integers(0, 9)):
        lines.append(b"Host: gw.test")
    lines += draw(st.lists(header(), max_size=6))
    body = draw(st.sampled_from([b"", b"hello", b"x" * 100]))
    if draw(st.booleans()) and body:
        lines.append(b"Content-Length: %d" % len(body))
    elif draw(st.integers(0, 3)) == 0:
        lines.append(b"Transfer-Encoding: chunked")
        body = draw(chunked_body())
    return eol.join(lines) + eol + eol + body


@st.composite
def mutated(draw: st.DrawFn, source: st.SearchStrategy[bytes]) -> bytes:
    data = bytearray(draw(source))
    for _ in range(draw(st.integers(0, 3))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        kind = draw(st.integers(0, 4))
        if kind == 0:
            data[at:at] = bytes([draw(st.sampled_from(INTERESTING))])
        elif kind == 1:
            del data[at : at + draw(st.integers(1, 8))]
        elif kind == 2:
            data[at] = draw(st.integers(0, 255))
        elif kind == 3:
            end = min(len(data), at + draw(st.integers(1, 40)))
            data[at:at] = data[at:end]  # a repeated slice: duplicate headers, lines, bodies
        else:
            del data[at:]  # cut short
    return bytes(data)


def pipeline(parts: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    return st.lists(parts, min_size=1, max_size=3).map(b"".join)


HOSTILE = pipeline(st.one_of(mutated(message()), message()))


@st.composite
def valid_request(draw: st.DrawFn) -> bytes:
    """A request every HTTP/1.1 server must take: the oracle for `answered 200`."""
    lines = [
        b"%b %b HTTP/1.1"
        % (draw(st.sampled_from([b"GET", b"POST", b"DELETE"])), draw(PATH).encode())
    ]
    lines.append(b"Host: gw.test")
    for _ in range(draw(st.integers(0, 5))):
        value = draw(st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=30))
        lines.append(b"X-%b: %b" % (draw(TOKEN).encode(), value.encode()))
    body = draw(st.binary(max_size=60))
    if body:
        if draw(st.booleans()):
            lines.append(b"Content-Length: %d" % len(body))
            return b"\r\n".join(lines) + b"\r\n\r\n" + body
        lines.append(b"Transfer-Encoding: chunked")
        return b"\r\n".join(lines) + b"\r\n\r\n" + b"%x\r\n%b\r\n0\r\n\r\n" % (len(body), body)
    return b"\r\n".join(lines) + b"\r\n\r\n"


def split(data: bytes, cuts: list[int]) -> Iterator[bytes]:
    """`data` in pieces at the given (unordered) offsets: one read each."""
    last = 0
    for cut in sorted({c % (len(data) + 1) for c in cuts}):
        yield data[last:cut]
        last = cut
    yield data[last:]


CUTS = st.lists(st.integers(0, 10_000), max_size=6)


def responses(output: bytes) -> list[tuple[int, bool]]:
    """(status, closes) of every response head in `output`. Status lines are found by pattern:
    no body the handlers here send contains one."""
    found = []
    for match in STATUS_LINE.finditer(output):
        head_end = output.find(b"\r\n\r\n", match.start())
        head = output[match.start() : head_end if head_end >= 0 else len(output)]
        found.append((int(match.group(1)), b"\r\nconnection: close" in head))
    return found


def check_answers(
    found: list[tuple[int, bool]], closed: bool, allowed: set[int], kept: set[int]
) -> None:
    """Every status is `allowed`; errors close the connection unless in `kept` (answers from
    routing or plugins, after which the framing is intact)."""
    for index, (status, closes) in enumerate(found):
        assert status in allowed, found
        if closes:
            assert index == len(found) - 1, f"an answer after `connection: close`: {found}"
            assert closed, "`connection: close` but the connection stayed open"
        elif status >= 400 and status not in kept:
            raise AssertionError(f"a wire error that keeps the connection: {found}")


class ErrorLog(logging.Handler):
    """Catches ERROR records of the wire layer: a parser callback raising something unexpected."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def error_log() -> Iterator[ErrorLog]:
    handler = ErrorLog()
    logger = logging.getLogger("fastgw")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


# -- in memory: ServerConnection with a fake transport and clock ---------------------------------


def answer_ok(exchange: Exchange) -> None:
    exchange.respond(200, b"ok", ((b"content-type", b"text/plain"),))


class Conn:
    """One fuzzed connection on a shared Server; time is moved by hand."""

    server = Server(answer_ok, Limits(**LIMITS), Ticker())  # type: ignore[arg-type]
    server.ticker.now = 1000.0

    def __init__(self) -> None:
        self.transport = FakeTransport()
        self.conn: ServerConnection = self.server.protocol_factory()
        self.conn.connection_made(self.transport)  # type: ignore[arg-type]

    def feed(self, pieces: Iterator[bytes]) -> None:
        for piece in pieces:
            if self.transport.closed:
                break  # a closed transport delivers nothing more
            self.conn.data_received(piece)

    def run_out_the_clock(self) -> None:
        """Past every timeout: a connection still open then would hang forever."""
        ticker = self.server.ticker
        for _ in range(3):
            ticker.now += LIMITS["keepalive_timeout"] + LIMITS["head_timeout"] + 1
            self.server.sweep(ticker.now)

    def end(self) -> None:
        self.conn.connection_lost(None)
        assert self.conn not in self.server.connections


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=HOSTILE, cuts=CUTS)
def test_hostile_bytes_in_memory(error_log: ErrorLog, raw: bytes, cuts: list[int]) -> None:
    error_log.records.clear()
    fuzzed = Conn()
    fuzzed.feed(split(raw, cuts))  # must not raise
    output = fuzzed.transport.take()
    check_answers(responses(output), fuzzed.transport.closed, WIRE_STATUSES, set())
    fuzzed.run_out_the_clock()
    assert fuzzed.transport.closed, f"still open past every timeout after {raw!r}"
    fuzzed.end()
    assert not error_log.records, [r.getMessage() for r in error_log.records]
    # the next client is served normally
    fresh = Conn()
    fresh.feed(iter([b"GET /next HTTP/1.1\r\nHost: gw.test\r\n\r\n"]))
    assert fresh.transport.take().startswith(b"HTTP/1.1 200 OK\r\n")
    fresh.end()


@settings(max_examples=150, deadline=None)
@given(requests=st.lists(valid_request(), min_size=1, max_size=4), cuts=CUTS)
def test_valid_requests_in_any_pieces_are_all_answered(
    requests: list[bytes], cuts: list[int]
) -> None:
    conn = Conn()
    conn.feed(split(b"".join(requests), cuts))
    assert responses(conn.transport.take()) == [(200, False)] * len(requests)
    assert not conn.transport.closed
    conn.end()


# -- over sockets: an embedded Gateway in front of a strict in-process upstream ------------------

OK_RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


class StrictUpstream(asyncio.Protocol):
    """Parses what the gateway forwards with httptools' strict defaults; answers 200 `ok`."""

    failures: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.parser = httptools.HttpRequestParser(self)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.failures.append(data)
            self.transport.close()

    def on_message_complete(self) -> None:
        if self.parser.get_method() == b"HEAD":
            self.transport.write(OK_RESPONSE[: -len(b"ok")])
        else:
            self.transport.write(OK_RESPONSE)


GATEWAY_CONFIG = """\
_format_version: "3.0"
_fastgw:
  admin_listen: null
  max_head_size: 2048
  max_headers: 16
  max_uri_size: 256
  max_body_size: 64
  head_timeout: 5
services:
  - url: http://127.0.0.1:{port}
    retries: 0
    routes:
      - paths: [/]
      - paths: [/deny]
        plugins:
          - name: request-termination
            config: {{status_code: 401, message: Unauthorized}}
"""
# The gateway's statuses over a socket: the wire ones, 401 from the plugin, 404 / 400 from
# routing, 100 before a body; 502 would mean the upstream could not frame what it got.
SOCKET_STATUSES = (WIRE_STATUSES - {200}) | {100, 200, 401, 404}
QUIET = 0.1  # seconds without a byte after which a kept-alive connection has said everything


class LiveGateway:
    def __init__(self) -> None:
        self.loop = uvloop.new_event_loop()
        self.loop.run_until_complete(self._start())

    async def _start(self) -> None:
        self.upstream = await asyncio.get_running_loop().create_server(
            StrictUpstream, "127.0.0.1", 0
        )
        port = self.upstream.sockets[0].getsockname()[1]
        config = parse_config(GATEWAY_CONFIG.format(port=port), env={})
        self.gateway = Gateway(config, listen=("127.0.0.1", 0), admin_listen="off")
        await self.gateway.start()
        self.port = self.gateway.addresses[0][1]

    def exchange(self, pieces: list[bytes]) -> tuple[bytes, bool]:
        return self.loop.run_until_complete(asyncio.wait_for(self._exchange(pieces), 10))

    async def _exchange(self, pieces: list[bytes]) -> tuple[bytes, bool]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        output = bytearray()
        closed = False
        try:
            for piece in pieces:
                writer.write(piece)
                await writer.drain()
                await asyncio.sleep(0)
            while True:
                try:
                    data = await asyncio.wait_for(reader.read(65536), QUIET)
                except TimeoutError:
                    break
                if not data:
                    closed = True
                    break
                output += data
        except ConnectionError:
            closed = True
        finally:
            writer.close()
        return bytes(output), closed

    def close(self) -> None:
        async def stop() -> None:
            await self.gateway.stop(drain_timeout=0.5)
            self.upstream.close()
            await self.upstream.wait_closed()

        self.loop.run_until_complete(stop())
        self.loop.close()


@pytest.fixture(scope="module")
def live() -> Iterator[LiveGateway]:
    gateway = LiveGateway()
    yield gateway
    gateway.close()


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(raw=HOSTILE, cuts=st.lists(st.integers(0, 10_000), max_size=3))
def test_hostile_bytes_over_a_socket(
    live: LiveGateway, error_log: ErrorLog, raw: bytes, cuts: list[int]
) -> None:
    error_log.records.clear()
    output, closed = live.exchange(list(split(raw, cuts)))
    # routing answers 400 (a path above the root) and 404, the plugin 401: framing intact
    check_answers(responses(output), closed, SOCKET_STATUSES, {400, 401, 404})
    assert StrictUpstream.failures == [], "the upstream got bytes it could not frame"
    assert not error_log.records, [r.getMessage() for r in error_log.records]
    after, _ = live.exchange([b"GET /after HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n"])
    assert after.startswith(b"HTTP/1.1 200 OK\r\n") and after.endswith(b"\r\n\r\nok")


@settings(
    max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(requests=st.lists(valid_request(), min_size=1, max_size=3))
def test_valid_requests_over_a_socket_are_proxied(live: LiveGateway, requests: list[bytes]) -> None:
    output, closed = live.exchange([b"".join(requests)])
    assert responses(output) == [(200, False)] * len(requests), output
    assert not closed
