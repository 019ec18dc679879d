"""Connections to upstream servers: the response-side protocol and a keep-alive pool per upstream.

A connection serves one request at a time. It reads the response with httptools and hands its
parts to a `ResponseSink` (the exchange, one layer up), which owns the framing towards the client;
this module knows nothing of clients. After a 101 it hands its transport to a tunnel
(fastgw/http/tunnel.py). Its phases and their moves are one table (_PHASE_MOVES).
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Final

import httptools
from mypy_extensions import trait

from fastgw.http.flow import PAUSE_CLIENT, FlowControl
from fastgw.http.response_head import ForwardedHead, HeadError, forward_head
from fastgw.http.states import illegal, moves
from fastgw.http.timers import TICK_SECONDS, Ticker
from fastgw.http.vocabulary import MAX_RESPONSE_HEAD

# Idle connections beyond the pool's size are closed by the sweep once idle this long, not when
# released (HAProxy purges its idle pools over time too): under bursts of more concurrent requests
# than the size, a bound applied at release closes connections that the next burst, milliseconds
# later, must open again. Measured at 1,000 client connections against a 512 pool: ~2,000 upstream
# connects a second and a p99 of 200-260 ms with the bound at release.
EXCESS_IDLE_GRACE: Final = 1.0

_HEAD_END: Final = b"\r\n\r\n"
_CRLF: Final = b"\r\n"

# What the connection is doing for its current request (one at a time).
IDLE: Final = 0  # no request: any byte from the upstream is a protocol error
HEAD: Final = 1  # request sent, the response head is being read
BODY: Final = 2  # head handed on, the body is being read
DONE: Final = 3  # the response is complete; handed on when the read that completed it is parsed
SWITCHED: Final = 4  # a 101 switched protocols: the transport is a tunnel's now, for good
PHASE_NAMES: Final = ("IDLE", "HEAD", "BODY", "DONE", "SWITCHED")
PHASE_COUNT: Final = 5  # len(PHASE_NAMES), a literal: the compiled check folds it
# A response with a body ends when it is complete (DONE, handed on after the read) or with the
# connection (a body delimited by the close: straight back to IDLE, never reused).
_PHASE_MOVES: Final = moves(
    PHASE_NAMES,
    {IDLE: (HEAD,), HEAD: (BODY, SWITCHED), BODY: (DONE, IDLE), DONE: (IDLE,)},
)

SWITCHING_PROTOCOLS: Final = 101


@trait
class ResponseSink:
    """What a connection hands a response to (the exchange that sent the request)."""

    __slots__ = ()

    def response_head(self, status: int, head: ForwardedHead) -> None:
        """The final response head (1xx heads are not handed on)."""
        raise NotImplementedError

    def response_body(self, data: bytes) -> None:
        raise NotImplementedError

    def response_read(self) -> None:
        """One read of the upstream is handled: what it produced may go out now."""
        raise NotImplementedError

    def response_switching(self, upstream: UpstreamConnection, head: ForwardedHead) -> None:
        """The upstream agreed to the request's Upgrade (101): the sink hands `upstream` over to
        a tunnel (`hand_over`) before it returns."""
        raise NotImplementedError

    def response_complete(self, upstream: UpstreamConnection, reusable: bool) -> None:
        """The response ended; the connection is the sink's to release (or close)."""
        raise NotImplementedError

    def upstream_lost(self, upstream: UpstreamConnection) -> None:
        """The upstream closed or reset the connection before the response completed."""
        raise NotImplementedError

    def upstream_failed(self, status: int) -> None:
        """The upstream timed out (504) or sent what cannot be forwarded (502); already aborted."""
        raise NotImplementedError

    def upstream_write_paused(self) -> None:
        """The upstream's write buffer is full: stop feeding it the request body."""
        raise NotImplementedError

    def upstream_write_resumed(self) -> None:
        raise NotImplementedError


class UpstreamConnection(asyncio.Protocol):
    """One TCP (or TLS) connection to an upstream; reads responses for the attached sink."""

    __slots__ = (
        "closed",
        "deadline",
        "flow",
        "head_data",
        "head_request",
        "head_start",
        "idle_since",
        "parser",
        "phase",
        "pool",
        "read_timeout",
        "requests",
        "reusable",
        "sink",
        "successor",
        "ticker",
        "transport",
        "upgrade",
        "write_timeout",
    )

    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool
        self.ticker = pool.ticker
        self.transport: asyncio.Transport | None = None
        self.flow = FlowControl()
        self.parser = httptools.HttpResponseParser(self)
        self.sink: ResponseSink | None = None
        self.successor: asyncio.Protocol | None = None  # the tunnel's end, once SWITCHED
        self.phase = IDLE
        self.closed = False
        self.requests = 0  # served on this connection, for max_requests
        self.idle_since = 0.0
        self.deadline = 0.0  # read/write deadline while a request is out; 0 = none
        self.read_timeout = 0.0
        self.write_timeout = 0.0
        self.head_request = False
        self.upgrade = False  # the request offered an Upgrade: a 101 is the sink's, not an error
        # The response head is taken from the bytes themselves (response_head.py): the reads of
        # the current response until its head is complete, and where that head begins in them
        # (after any 1xx heads).
        self.head_data = b""
        self.head_start = 0
        self.reusable = False

    def _move(self, phase: int) -> None:
        """Every change of phase: checked against _PHASE_MOVES."""
        if not _PHASE_MOVES[self.phase * PHASE_COUNT + phase]:
            raise illegal("upstream connection", PHASE_NAMES, self.phase, phase)
        self.phase = phase

    @property
    def got_response_bytes(self) -> bool:
        """Whether the current request's response has begun to arrive."""
        return self.phase >= BODY or len(self.head_data) > 0

    # -- connection lifecycle --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.flow.transport = self.transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.flow.transport = None
        self.pool.forget(self)
        sink = self.sink
        if sink is not None:
            self.sink = None
            sink.upstream_lost(self)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.pool.forget(self)
            transport = self.transport
            self.flow.transport = None
            if transport is not None:
                transport.close()

    def abort(self) -> None:
        """Close without flushing and never reuse (after a fault or a cancelled request)."""
        self.sink = None
        if not self.closed:
            self.closed = True
            self.pool.forget(self)
            transport = self.transport
            self.flow.transport = None
            if transport is not None:
                transport.abort()

    # -- flow control: the upstream's write buffer holds back the client's body -------------------

    def pause_writing(self) -> None:
        sink = self.sink
        if sink is not None:
            self.deadline = self.ticker.now + self.write_timeout
            sink.upstream_write_paused()

    def resume_writing(self) -> None:
        sink = self.sink
        if sink is not None:
            self.deadline = self.ticker.now + self.read_timeout
            sink.upstream_write_resumed()

    def hold(self) -> None:
        """Stop reading: the client is not taking the response as fast as it arrives."""
        self.flow.pause_reading(PAUSE_CLIENT)

    def release_hold(self) -> None:
        self.flow.resume_reading(PAUSE_CLIENT)

    # -- sending ----------------------------------------------------------------------------------

    def send(
        self,
        sink: ResponseSink,
        data: bytes,
        read_timeout: float,
        write_timeout: float,
        head_request: bool,
        upgrade: bool = False,
    ) -> None:
        """Attach `sink` and write its request head (and whatever body is ready)."""
        self.sink = sink
        self._move(HEAD)
        self.requests += 1
        self.read_timeout = read_timeout
        self.write_timeout = write_timeout
        self.head_request = head_request
        self.upgrade = upgrade
        self.deadline = self.ticker.now + read_timeout
        self.transport.write(data)  # type: ignore[union-attr]

    def write(self, data: bytes) -> None:
        """More of the request body."""
        if not self.closed:
            self.transport.write(data)  # type: ignore[union-attr]

    def hand_over(self, successor: asyncio.Protocol) -> None:
        """After a 101: the transport is `successor`'s from now on (the pool forgets this
        connection). What the read that brought the 101 held after it goes there too."""
        self._move(SWITCHED)
        self.sink = None
        self.successor = successor
        self.closed = True  # for this object: nothing it does touches the transport again
        self.pool.forget(self)
        self.flow.transport = None
        transport = self.transport
        assert transport is not None  # a 101 came through it
        transport.set_protocol(successor)

    # -- receiving --------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        sink = self.sink
        if sink is None:
            # Bytes nobody asked for: the connection's framing is unknown now.
            self.abort()
            return
        self.deadline = self.ticker.now + self.read_timeout
        phase = self.phase
        if phase == HEAD:
            if self.head_data:
                self.head_data += data  # a head spread over reads (rare)
            else:
                self.head_data = data
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as switched:
            # llhttp stops after a 101's head: the rest of this read is the tunnel's
            successor = self.successor
            if successor is not None:
                offset = switched.args[0] if switched.args else len(data)
                if offset < len(data):
                    successor.data_received(data[offset:])
                return
            self.abort()
            sink.upstream_failed(502)
            return
        except (httptools.HttpParserError, HeadError):
            if self.phase == DONE:
                # The response completed; what followed it was not ours to read. Never reuse.
                self.reusable = False
            else:
                self.abort()
                sink.upstream_failed(502)
                return
        if self.phase == DONE:
            self.phase = IDLE  # DONE's one move (_PHASE_MOVES): nothing to check
            if self.sink is sink:
                self.sink = None
                sink.response_complete(self, self.reusable)
            return
        if self.phase == HEAD and len(self.head_data) > MAX_RESPONSE_HEAD and self.sink is sink:
            self.abort()  # still no complete head, and already too large
            sink.upstream_failed(502)
            return
        sink.response_read()

    def eof_received(self) -> bool | None:
        sink = self.sink
        if sink is not None and self.phase == BODY and not self.parser.should_keep_alive():
            # A body delimited by the close (no length, not chunked) ends here.
            self.sink = None
            self._move(IDLE)
            sink.response_complete(self, False)
        return None

    # httptools callbacks, in the order they fire (no on_header: response_head.py reads them)

    def on_message_begin(self) -> None:
        if self.phase != HEAD:
            # A response after the one we asked for completed, in the same read: the upstream's
            # framing disagrees with ours. Stop here; the connection is not reused.
            raise HeadError("upstream sent more than one response")

    def on_headers_complete(self) -> None:
        data = self.head_data
        start = self.head_start
        end = data.find(_HEAD_END, start)
        if end - start > MAX_RESPONSE_HEAD:
            raise HeadError("upstream response head too large")
        status = self.parser.get_status_code()
        if status < 200 and status != SWITCHING_PROTOCOLS:
            # 1xx (e.g. 103 Early Hints): not forwarded; the final head starts after this one.
            self.head_start = end + 4
            return
        lines = data[start:end].split(_CRLF)
        if status == SWITCHING_PROTOCOLS:
            self._switch(lines)
            return
        self.head_data = b""
        self.head_start = 0
        self._move(BODY)
        sink = self.sink
        assert sink is not None  # phase HEAD: attached
        sink.response_head(status, forward_head(lines))
        if self.head_request:
            # httptools cannot be told a HEAD response has no body; finish it here and give
            # the next response a fresh parser.
            self.parser = httptools.HttpResponseParser(self)
            self._finish(True)

    def _switch(self, lines: list[bytes]) -> None:
        """A 101: the tunnel the request asked for, or an answer nobody asked for (502)."""
        if not self.upgrade or not _upgrades_to_websocket(lines):
            raise HeadError("upstream switched protocols unasked")
        self.head_data = b""
        self.head_start = 0
        self.reusable = False
        sink = self.sink
        assert sink is not None  # phase HEAD: attached
        sink.response_switching(self, forward_head(lines))
        if self.phase != SWITCHED:
            raise HeadError("the 101 was not taken over")  # a sink's bug: never reused

    def on_body(self, body: bytes) -> None:
        if self.phase == BODY:
            sink = self.sink
            if sink is not None:
                sink.response_body(body)
        else:
            self.reusable = False  # bytes after a HEAD response's head: not ours to read

    def on_message_complete(self) -> None:
        if self.phase == BODY:
            self._finish(self.parser.should_keep_alive())

    def _finish(self, reusable: bool) -> None:
        # handed to the sink when feed_data returns (see data_received): bytes after the
        # response in the same read must be seen before the connection may go back to the pool
        self._move(DONE)
        self.deadline = 0.0
        self.reusable = reusable


def _upgrades_to_websocket(lines: list[bytes]) -> bool:
    """Whether a 101 head names websocket in its Upgrade field (the only protocol offered)."""
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"upgrade":
            return value.strip().lower() == b"websocket"
    return False


class UpstreamPool:
    """Keep-alive connections to one upstream address: LIFO reuse, idle timeout, and at most
    `size` idle connections once a burst is over (see EXCESS_IDLE_GRACE)."""

    def __init__(
        self,
        host: str,
        port: int,
        ticker: Ticker,
        *,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        size: int,
        idle_timeout: float,
        max_requests: int,
    ) -> None:
        self.host = host
        self.port = port
        self.ticker = ticker
        self.ssl_context = ssl_context
        self.server_hostname = server_hostname if ssl_context is not None else None
        self.size = size
        self.idle_timeout = idle_timeout
        self.max_requests = max_requests
        self.idle: list[UpstreamConnection] = []
        self.busy: set[UpstreamConnection] = set()
        self.draining = False  # its target was removed: connections close as they come back

    def acquire(self) -> UpstreamConnection | None:
        """The most recently used idle connection, or None (the caller then connects)."""
        idle = self.idle
        if not idle:
            return None
        conn = idle.pop()  # never a closed one: forget() takes those out
        conn.idle_since = 0.0  # not idle
        self.busy.add(conn)
        return conn

    async def connect(self, timeout: float) -> UpstreamConnection:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            _, conn = await loop.create_connection(
                lambda: UpstreamConnection(self),
                self.host,
                self.port,
                ssl=self.ssl_context,
                server_hostname=self.server_hostname,
            )
        self.busy.add(conn)
        return conn

    def release(self, conn: UpstreamConnection) -> None:
        """Return a connection whose request finished cleanly."""
        self.busy.discard(conn)
        if conn.closed:
            return
        if conn.requests >= self.max_requests or not self.size or self.draining:
            conn.close()
            return
        if conn.flow.read_paused:
            conn.release_hold()
        conn.idle_since = self.ticker.now or 1e-9  # non-zero: idle
        self.idle.append(conn)  # beyond `size` too: the sweep trims (EXCESS_IDLE_GRACE)

    def forget(self, conn: UpstreamConnection) -> None:
        """`conn` closed: it is neither busy nor idle any more."""
        self.busy.discard(conn)
        if conn.idle_since:  # idle: the upstream closed it (rare), or sweep() trims it
            conn.idle_since = 0.0
            if conn in self.idle:
                self.idle.remove(conn)

    def sweep(self, now: float) -> None:
        idle = self.idle
        if idle:
            # Oldest first (release order): those idle past the timeout go, and those beyond
            # `size` that stayed idle past EXCESS_IDLE_GRACE.
            expired = now - self.idle_timeout
            grace_over = now - EXCESS_IDLE_GRACE
            excess = len(idle) - self.size
            stale = 0
            for conn in idle:
                if conn.idle_since > expired and (stale >= excess or conn.idle_since > grace_over):
                    break
                stale += 1
            if stale:
                self.idle = idle[stale:]
                for conn in idle[:stale]:
                    conn.idle_since = 0.0  # out of the list already: forget() need not look
                    conn.close()
        # Deadlines were set from a clock up to one tick stale, so they may be a tick early:
        # let one more tick pass, so a timeout fires late (by up to two ticks) but never early.
        late = now - TICK_SECONDS
        for conn in tuple(self.busy):
            sink = conn.sink
            if conn.deadline and late > conn.deadline and sink is not None:
                conn.abort()
                sink.upstream_failed(504)

    def drain(self) -> None:
        """The target is gone: idle connections close now, busy ones once their request ends."""
        self.draining = True
        idle, self.idle = self.idle, []
        for conn in idle:
            conn.idle_since = 0.0
            conn.close()

    def close(self) -> None:
        idle, self.idle = self.idle, []
        for conn in idle:
            conn.close()
        for conn in tuple(self.busy):
            conn.abort()
