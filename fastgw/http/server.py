"""The client side of the proxy: an asyncio protocol per connection, its requests read with
httptools (fastgw/http/request_reader.py).

It owns keep-alive, pipelining order, head/idle/send timeouts, lingering close, read-side flow
control and the wait for an upgrade's answer; what to do with a request is the handler's
business, and after a 101 the transport is a tunnel's (fastgw/http/tunnel.py). Its states and
their moves are one table (_STATE_MOVES).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final, Protocol, cast

import httptools

from fastgw.http.exchange import ClientSide, Exchange, Handler
from fastgw.http.flow import PAUSE_HELD, PAUSE_PIPELINE, FlowControl
from fastgw.http.request_reader import LimitExceeded, RequestReader
from fastgw.http.responses import build_response, error_parts
from fastgw.http.states import illegal, moves
from fastgw.http.timers import TICK_SECONDS, Ticker
from fastgw.http.tls import server_name_of
from fastgw.http.tunnel import Tunnel
from fastgw.http.upstream import UpstreamConnection
from fastgw.http.vocabulary import host_without_port
from fastgw.observability.ratelog import RateLimitedLog

log = logging.getLogger("fastgw.http")

# A client that stops reading its response is dropped after this long (nginx send_timeout).
SEND_TIMEOUT: Final = 60.0

# Closing while the client may still be sending makes the kernel answer its next bytes with a
# reset, which can destroy the response before the client reads it (RFC 9112 §9.6). So the
# gateway shuts down its sending side and reads and drops what comes for a while before it
# closes: nginx's lingering_close, with nginx's lingering_timeout (no byte for this long) and
# lingering_time (at most this long in all).
LINGERING_TIMEOUT: Final = 5.0
LINGERING_TIME: Final = 30.0

# A WebSocket upgrade (offered upstream, exchange.upgrade) waits for the upstream's answer to know
# whether the bytes after it are the next request or the tunnel's. So its body, framed by its
# Content-Length, is counted off the connection without a parser, and what follows is held
# unparsed (reading paused past HELD_LIMIT) until the exchange ends (then it is parsed as the next
# requests) or the upstream switches with a 101 (then it is the first of the tunnel's bytes).
HELD_LIMIT: Final = 64 * 1024

# What the connection does with the bytes it reads, and how it ends.
READING: Final = 0  # requests, through the reader
UPGRADE_BODY: Final = 1  # the rest of an upgrade request's body (upgrade_left bytes)
HOLDING: Final = 2  # after a complete upgrade request: held until its exchange decides
LINGERING: Final = 3  # the last answer is out and sending shut down: reads are dropped
SWITCHED: Final = 4  # after a 101 the transport is a tunnel's: only its timeouts are swept here
CLOSED: Final = 5
STATE_NAMES: Final = ("READING", "UPGRADE_BODY", "HOLDING", "LINGERING", "SWITCHED", "CLOSED")
STATE_COUNT: Final = 6  # len(STATE_NAMES), a literal: the compiled check folds it
# An upgrade goes back to READING when declined (or its body breaks a limit); any state may
# close, and every state before LINGERING may linger.
_STATE_MOVES: Final = moves(
    STATE_NAMES,
    {
        READING: (UPGRADE_BODY, HOLDING, LINGERING, CLOSED),
        UPGRADE_BODY: (READING, HOLDING, SWITCHED, LINGERING, CLOSED),
        HOLDING: (READING, SWITCHED, LINGERING, CLOSED),
        LINGERING: (CLOSED,),
        SWITCHED: (CLOSED,),
    },
)


class Limits(Protocol):
    """The wire limits a listener enforces (fastgw.config.Limits is one)."""

    @property
    def max_head_size(self) -> int: ...
    @property
    def max_headers(self) -> int: ...
    @property
    def max_uri_size(self) -> int: ...
    @property
    def head_timeout(self) -> float: ...
    @property
    def keepalive_timeout(self) -> float: ...
    @property
    def max_body_size(self) -> int: ...
    @property
    def underscores_in_headers(self) -> bool: ...


_refused_log = RateLimitedLog(log, logging.WARNING)
_parse_bug_log = RateLimitedLog(log, logging.ERROR)


class Server:
    """Shared state of one listener: the handler, limits, the clock and live connections."""

    def __init__(self, handler: Handler, limits: Limits, ticker: Ticker, port: int = 0) -> None:
        self.handler = handler
        self.limits = limits
        self.ticker = ticker
        self.port = port
        self.connections: set[ServerConnection] = set()
        self.draining = False
        self.requests_total = 0
        # Open client connections allowed; the gateway derives it from the open-file limit so
        # that accepting never runs into EMFILE (libuv would then drop clients without a word).
        self.max_connections = 1 << 62
        self.refused_total = 0
        self.accepted_total = 0  # refused ones included, as nginx's "accepts"

    def protocol_factory(self) -> ServerConnection:
        return ServerConnection(self)

    def refuse(self, transport: asyncio.BaseTransport) -> None:
        """Over max_connections: close at once (as nginx does when out of worker_connections)."""
        self.refused_total += 1
        _refused_log.emit(
            "connection limit reached: %d client connections open (limit %d, from the open-file "
            "limit); refusing new connections until some close",
            len(self.connections),
            self.max_connections,
        )
        cast(asyncio.Transport, transport).abort()

    def sweep(self, now: float) -> None:
        # Connections stamp times from a clock up to one tick stale, so measured against `now`
        # a timeout could fire a tick early; a tick later it fires late but never early.
        late = now - TICK_SECONDS
        for conn in tuple(self.connections):
            conn.check_timeouts(late)

    def start_draining(self) -> None:
        """Finish what is in flight; idle connections close now, busy ones after their response
        (a tunnel runs on until it ends or the drain's deadline aborts it)."""
        self.draining = True
        for conn in tuple(self.connections):
            if conn.idle:
                conn.close()
                continue
            for exchange in conn.queue:
                if not exchange.response_started:
                    exchange.keep_alive = False  # its answer says `connection: close`

    def abort_all(self) -> None:
        for conn in tuple(self.connections):
            conn.abort()

    def connection_states(self) -> tuple[int, int, int]:
        """(reading, writing, waiting) as nginx's stub_status counts them: reading a request
        head, busy with a request (a tunnel too), idle between requests. O(connections): for
        the admin side."""
        reading = writing = 0
        for conn in self.connections:
            if conn.queue or conn.tunnel is not None:
                writing += 1
            elif conn.reader.head_started:
                reading += 1
        return reading, writing, len(self.connections) - reading - writing


class ServerConnection(asyncio.Protocol, ClientSide):
    """One client connection. The reader's requests queue here; the first queued one is active."""

    # Slots: an idle connection is mostly this object and its reader (CPython stops sharing a
    # __dict__'s keys between instances beyond 30 attributes).
    __slots__ = (
        "client_ip",
        "client_ip_bytes",
        "error_after",
        "feeding",
        "flow",
        "forwarded_lines",
        "forwarded_tail",
        "fresh",
        "handler",
        "held",
        "held_size",
        "idle_since",
        "last_read",
        "limits",
        "lingering_since",
        "memo",
        "out",
        "queue",
        "reader",
        "server",
        "server_name",
        "state",
        "ticker",
        "transport",
        "tunnel",
        "upgrade_left",
        "upgrading",
        "valid_host",
    )

    def __init__(self, server: Server) -> None:
        self.server = server
        self.handler = server.handler
        self.limits = server.limits
        self.ticker = server.ticker
        self.state = READING
        self.reader = RequestReader(self, server.limits, server.ticker)
        self.transport: asyncio.Transport | None = None
        self.client_ip = ""
        self.client_ip_bytes = b""
        self.valid_host = b""  # the last Host that passed the character check
        self.forwarded_lines = b""
        self.forwarded_tail = b""
        self.out: list[bytes] = []  # response bytes gathered during one read, written once
        self.feeding = False
        # In request order; the first is active. A list, not a deque: it rarely holds more than
        # one exchange, and an empty deque costs 700 bytes per idle connection.
        self.queue: list[Exchange] = []
        self.error_after = 0  # a later pipelined request was malformed: answer it, then close
        self.flow = FlowControl()
        self.memo: dict[object, object] | None = None  # plugins' per-connection values
        self.lingering_since = 0.0  # LINGERING since then (see LINGERING_TIMEOUT)
        self.idle_since = 0.0
        self.fresh = True
        self.last_read = 0.0
        # a WebSocket upgrade being decided (see HELD_LIMIT), the bytes held meanwhile
        self.upgrading: Exchange | None = None
        self.upgrade_left = 0
        self.held: list[bytes] = []
        self.held_size = 0
        self.tunnel: Tunnel | None = None  # SWITCHED: the tunnel that has the transport
        self.server_name: bytes | None = None  # the SNI over TLS (b"" when none); None: plain

    def _move(self, state: int) -> None:
        """Every change of state: checked against _STATE_MOVES."""
        if not _STATE_MOVES[self.state * STATE_COUNT + state]:
            raise illegal("client connection", STATE_NAMES, self.state, state)
        self.state = state

    @property
    def ending(self) -> bool:
        """No request is read any more: lingering, switched or closed."""
        return self.state >= LINGERING

    @property
    def idle(self) -> bool:
        """Between requests: no request queued, none being read, no tunnel."""
        return not self.queue and self.reader.head_started == 0.0 and self.tunnel is None

    # -- connection lifecycle --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        server = self.server
        server.accepted_total += 1
        if len(server.connections) >= server.max_connections:
            self._move(CLOSED)
            server.refuse(transport)
            return
        self.transport = transport  # type: ignore[assignment]
        self.flow.transport = self.transport
        peer = transport.get_extra_info("peername")
        self.client_ip = peer[0] if isinstance(peer, tuple) else "127.0.0.1"
        self.client_ip_bytes = self.client_ip.encode()
        sock = transport.get_extra_info("sockname")
        port = sock[1] if isinstance(sock, tuple) else self.server.port
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            self.server_name = server_name_of(ssl_object)
        # the end of X-Forwarded-For and the other X-Forwarded-* lines, the same per request
        self.forwarded_lines = (
            b"%b\r\nx-forwarded-proto: %b\r\nx-forwarded-port: %d\r\nx-real-ip: %b\r\n"
            % (
                self.client_ip_bytes,
                b"http" if ssl_object is None else b"https",
                port,
                self.client_ip_bytes,
            )
        )
        self.forwarded_tail = self.forwarded_lines  # and X-Forwarded-Host for valid_host
        self.idle_since = self.last_read = self.ticker.now
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.state != CLOSED:
            self._move(CLOSED)
        self.flow.transport = None
        self.server.connections.discard(self)
        for exchange in self.queue:
            exchange.abort()
        self.queue.clear()
        reader = self.reader
        parsing = reader.parsing
        if parsing is not None and not parsing.finished:
            parsing.abort()
        reader.parsing = None
        reader.chunked_body = None

    def close(self) -> None:
        state = self.state
        if state == SWITCHED:
            assert self.tunnel is not None
            self.tunnel.end()  # moves to CLOSED (_tunnel_ended)
        elif state != CLOSED:
            self._move(CLOSED)
            self.flow.transport = None
            if self.transport is not None:
                self.transport.close()

    def abort(self) -> None:
        if self.state == SWITCHED:
            assert self.tunnel is not None
            self.tunnel.abort()
            return
        if self.state != CLOSED:
            self._move(CLOSED)
        self.flow.transport = None
        if self.transport is not None:
            self.transport.abort()  # after a close() too: what is still buffered is dropped

    def close_gracefully(self) -> None:
        """Send what is queued, then stop sending; read and drop until the client closes too."""
        self.flush()
        transport = self.transport
        if self.state >= SWITCHED or transport is None:
            return
        if self.state == LINGERING or not transport.can_write_eof():
            self.close()
            return
        transport.write_eof()
        self._move(LINGERING)
        self.lingering_since = self.ticker.now or 1e-9
        # whatever paused reading, the rest is only read to be dropped now
        self.flow.resume_reading(self.flow.read_paused)

    def eof_received(self) -> bool | None:
        self.close()  # the client is done sending: nothing more to read, nothing more to answer
        return None

    # -- writing (ClientSide) ----------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Queued: inside a read the answers go out together when it is handled; else at flush."""
        self.out.append(data)

    def flush(self) -> None:
        out = self.out
        if out:
            if self.state < SWITCHED:
                self.transport.write(out[0] if len(out) == 1 else b"".join(out))  # type: ignore[union-attr]
            out.clear()

    def forwarded_fields(self, host: bytes) -> bytes:
        if host == self.valid_host:
            return self.forwarded_tail
        if host:
            return b"%bx-forwarded-host: %b\r\n" % (self.forwarded_lines, host_without_port(host))
        return self.forwarded_lines

    def accept_host(self, host: bytes) -> None:
        """`host` passed the reader's character check: it is what keep-alive requests repeat."""
        self.valid_host = host
        self.forwarded_tail = b"%bx-forwarded-host: %b\r\n" % (
            self.forwarded_lines,
            host_without_port(host),
        )

    def connection_memo(self) -> dict[object, object]:
        memo = self.memo
        if memo is None:
            memo = self.memo = {}
        return memo

    def pause_writing(self) -> None:
        self.flow.writing_paused(self.ticker.now)
        if self.queue:
            self.queue[0].client_write_paused()

    def resume_writing(self) -> None:
        self.flow.writing_resumed()
        if self.queue:
            self.queue[0].client_write_resumed()

    # -- reading ---------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self.last_read = self.ticker.now
        state = self.state
        if state == LINGERING:
            return  # closing: read only to be dropped
        self.reader.count(len(data))
        if state != READING:
            data = self._upgrade_bytes(data)
        self._parse(data)

    def _parse(self, data: bytes) -> None:
        reader = self.reader
        self.feeding = True
        try:
            while data:
                try:
                    reader.feed(data)
                    break
                except (httptools.HttpParserError, httptools.HttpParserUpgrade) as error:
                    failure: Exception = error
                # Handled outside the `except` block: a parser fed again there would see its
                # callback's exception chained to the one being handled, not to its own cause.
                data = self._parse_failed(failure, data)
                del failure
                if self.state != READING:
                    data = self._upgrade_bytes(data)
        finally:
            self.feeding = False
        if self.out:
            self.flush()
        status = reader.checked_read()
        if status:
            self._fail(status)

    def _parse_failed(self, error: Exception, data: bytes) -> bytes:
        """Answer a parse failure of `data`; returns what is left to feed (after an Upgrade)."""
        if isinstance(error, httptools.HttpParserUpgrade):
            # llhttp stops after an upgrade request's head: continue with a fresh parser.
            rest = data[error.args[0] :] if error.args else b""
            reader = self.reader
            exchange = reader.take_upgrade_body()
            upgrading = reader.parsing
            if upgrading is not None and upgrading.upgrade and not upgrading.finished:
                # offered upstream: its body is counted off, what follows held (see HELD_LIMIT)
                reader.restart(None)
                self.upgrading = upgrading
                if exchange is upgrading:
                    self._move(UPGRADE_BODY)
                    self.upgrade_left = upgrading.content_length
                else:
                    self._move(HOLDING)
            else:
                # not offered upstream: an ordinary request, whose body the fresh parser reads
                reader.restart(exchange)
            return rest
        if isinstance(error, httptools.HttpParserCallbackError):
            cause = error.__context__ or error.__cause__
            if isinstance(cause, LimitExceeded):
                self._fail(cause.status)
                return b""
            # a bug, but one a client can trigger at will: rate-limited
            _parse_bug_log.emit("request parsing failed: %r", cause, exc_info=cause)
        self._fail(400)
        return b""

    def _upgrade_bytes(self, data: bytes) -> bytes:
        """Bytes read while a WebSocket upgrade is decided; returns what is left to parse."""
        if self.state == UPGRADE_BODY:
            exchange = self.upgrading
            size = min(self.upgrade_left, len(data))
            body, data = data[:size], data[size:]
            self.upgrade_left -= size
            try:
                if body:
                    self.reader.on_body(body)
            except LimitExceeded as limit:
                self._move(READING)
                self.upgrading = None
                self._fail(limit.status)
                return b""
            if self.upgrade_left:
                return b""
            self._move(HOLDING)
            if exchange is not None:
                exchange.on_request_complete()  # may end the exchange: then the upgrade's off
        if self.state == HOLDING and data:
            self.held.append(data)
            self.held_size += len(data)
            if self.held_size > HELD_LIMIT:
                self.flow.pause_reading(PAUSE_HELD)
            return b""
        return data

    def start_tunnel(self, exchange: Exchange, upstream: UpstreamConnection) -> None:
        """The upstream switched (101, queued in `out`): both transports go to a tunnel; the
        bytes held (and what is left of the request's body) are the first of the tunnel's."""
        if self.state not in (UPGRADE_BODY, HOLDING) or self.transport is None:
            upstream.abort()  # the client is going: nobody to tunnel to
            return
        self.flush()
        queue = self.queue
        if queue and queue[0] is exchange:
            del queue[0]
        self.upgrading = None
        self.reader.parsing = None
        held = b"".join(self.held)
        self.held = []
        self.held_size = 0
        self._move(SWITCHED)
        upstream_transport = upstream.transport
        assert upstream_transport is not None  # the 101 came through it
        tunnel = Tunnel(
            self.transport,
            upstream_transport,
            self.ticker,
            upstream.read_timeout,
            self._tunnel_ended,
        )
        upstream.hand_over(tunnel.upstream)
        self.transport.set_protocol(tunnel.client)
        self.tunnel = tunnel
        tunnel.start(held, self.flow, upstream.flow)
        self.flow.transport = None

    def _tunnel_ended(self) -> None:
        self._move(CLOSED)
        self.server.connections.discard(self)

    def _upgrade_declined(self) -> None:
        """The upgrade request ended without a switch: what it held is the next request(s)."""
        self._move(READING)
        self.upgrading = None
        held = self.held
        self.held = []
        self.held_size = 0
        if not held or self.ending:
            self.flow.resume_reading(PAUSE_HELD)
            return
        data = b"".join(held)
        if self.feeding:
            # inside a read, the parser is busy: parse right after it, reading paused until then
            # so that no later byte overtakes these
            self.flow.pause_reading(PAUSE_HELD)
            asyncio.get_running_loop().call_soon(self._parse_held, data)
        else:
            self.flow.resume_reading(PAUSE_HELD)
            self._parse(data)

    def _parse_held(self, data: bytes) -> None:
        self.flow.resume_reading(PAUSE_HELD)
        if not self.ending:
            self._parse(data)

    def _fail(self, status: int) -> None:
        """The client sent something unusable: answer `status` (in order) and close."""
        if self.ending:
            return  # the rest of a read that arrived after we decided to close
        self.flow.pause_reading(PAUSE_PIPELINE)
        parsing = self.reader.parsing
        if parsing is not None and not parsing.request_complete and not parsing.finished:
            # Failed inside a request body: that exchange cannot be completed.
            answered = parsing.answered
            if parsing.response_started and not answered:
                self.flush()
                self.abort()  # a response cut short must not look complete
                return
            parsing.abort()
            if self.queue and self.queue[0] is parsing:
                del self.queue[0]
            if answered:
                # The client has its answer; the rest of what it sent cannot be read.
                self.close_gracefully()
                return
        if self.queue:
            self.error_after = status
            return
        self._write_error_and_close(status)

    def _write_error_and_close(self, status: int) -> None:
        body, headers = error_parts(status)
        self.out.append(build_response(status, body, headers, keep_alive=False))
        self.close_gracefully()

    # -- exchange bookkeeping --------------------------------------------------------------------

    def request_parsed(self, exchange: Exchange) -> None:
        """The reader has a request's head: it runs now, or after the ones queued before it."""
        queue = self.queue
        queue.append(exchange)
        if len(queue) == 1:
            self.fresh = False
            exchange.begin(self.handler)
        else:
            self.flow.pause_reading(PAUSE_PIPELINE)

    def exchange_done(self, exchange: Exchange) -> None:
        """The active exchange answered in full (its bytes are in `out`): on to the next one."""
        queue = self.queue
        if queue and queue[0] is exchange:
            del queue[0]
        if self.ending:
            return
        if not exchange.keep_alive:
            self.close_gracefully()
            return
        if queue:
            queue[0].begin(self.handler)
        elif self.error_after:
            self._write_error_and_close(self.error_after)
            return
        else:
            self.idle_since = self.ticker.now
            if self.server.draining:
                self.close_gracefully()
                return
        if self.out and not self.feeding:
            # Inside data_received the read's answers go out together when it returns.
            self.flush()
        if self.flow.read_paused & PAUSE_PIPELINE and len(queue) <= 1:
            self.flow.resume_reading(PAUSE_PIPELINE)
        if exchange is self.upgrading and self.state == HOLDING:
            self._upgrade_declined()

    # -- timeouts (called by the ticker's sweep) -------------------------------------------------

    def check_timeouts(self, now: float) -> None:
        state = self.state
        if state >= SWITCHED:
            if state == SWITCHED:
                assert self.tunnel is not None
                self.tunnel.check_timeouts(now, SEND_TIMEOUT)
            return
        if state == LINGERING:
            if (
                now - self.last_read > LINGERING_TIMEOUT
                or now - self.lingering_since > LINGERING_TIME
            ):
                self.close()
            return
        limits = self.limits
        flow = self.flow
        if flow.write_paused and now - flow.write_paused_since > SEND_TIMEOUT:
            self.abort()
            return
        if self.queue:
            exchange = self.queue[0]
            # A body that stops arriving (nginx client_body_timeout, same value as the head's).
            # A paused read is bounded elsewhere: by the exchange ahead (pipelining), the
            # upstream's connect or write timeout, a plugin's own timeout.
            if (
                not exchange.request_complete
                and not flow.read_paused
                and now - self.last_read > limits.head_timeout
            ):
                self._timeout_active(exchange)
            return
        head_started = self.reader.head_started
        if head_started:
            if now - head_started > limits.head_timeout:
                self._write_error_and_close(408)
            return
        idle_limit = limits.head_timeout if self.fresh else limits.keepalive_timeout
        if now - self.idle_since > idle_limit:
            self.close()

    def _timeout_active(self, exchange: Exchange) -> None:
        if exchange.response_started:
            self.abort()
            return
        for queued in self.queue:
            queued.abort()
        self.queue.clear()
        self._write_error_and_close(408)
