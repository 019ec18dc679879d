"""The client side of the proxy: an asyncio protocol per connection, its requests read with
httptools (fastgw/http/request_reader.py).

It owns keep-alive, pipelining order, head/idle/send timeouts, lingering close, read-side flow
control; what to do with a request is the handler's business, the wait for an upgrade's answer
is fastgw/http/upgrade.py's, and after a 101 the transport is a tunnel's (fastgw/http/tunnel.py).
Its states and their moves are one table (fastgw/http/client_states.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Final, Protocol, cast

import httptools

from fastgw.http.admission import Admission
from fastgw.http.client_states import (
    CLOSED,
    HOLDING,
    LINGERING,
    READING,
    STATE_COUNT,
    STATE_MOVES,
    STATE_NAMES,
    SWITCHED,
)
from fastgw.http.exchange import ClientSide, Exchange, Handler
from fastgw.http.flow import PAUSE_PIPELINE, FlowControl
from fastgw.http.request_reader import LimitExceeded, RequestReader, own_fields
from fastgw.http.responses import build_response, error_parts
from fastgw.http.states import illegal
from fastgw.http.timers import TICK_SECONDS, Ticker
from fastgw.http.tls import server_name_of
from fastgw.http.tunnel import Tunnel
from fastgw.http.upgrade import UpgradeWait
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

# A body's average rate is judged against request_body_min_rate only past this much reading time:
# a slow start or a client's brief pause does not count (Kestrel's MinRequestBodyDataRate grace).
MIN_RATE_GRACE: Final = 5.0


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
    @property
    def drain_grace(self) -> float: ...
    @property
    def request_body_timeout(self) -> float: ...
    @property
    def request_body_min_rate(self) -> int: ...
    @property
    def limit_conn_per_address(self) -> int: ...


_parse_bug_log = RateLimitedLog(log, logging.ERROR)


class Server:
    """Shared state of one listener: the handler, limits, the clock and live connections."""

    def __init__(self, handler: Handler, limits: Limits, ticker: Ticker, port: int = 0) -> None:
        self.handler = handler
        self.limits = limits
        self.ticker = ticker
        self.port = port
        self.connections: set[ServerConnection] = set()
        # which accepted connections stay: the limit (the gateway sets it from the open-file
        # limit), the handshakes' share, the per-address limit
        self.admission = Admission()
        self.admission.per_address = limits.limit_conn_per_address
        self.draining = False  # the whole listener drains (a connection's own: drain_since)
        self.requests_total = 0

    def protocol_factory(self) -> ServerConnection:
        return ServerConnection(self)

    def admitted_connection(self, client_ip: str) -> ServerConnection:
        """A connection admitted at accept (a TLS one: fastgw/http/tls_accept.py), whose
        connection_made does not count it again."""
        conn = ServerConnection(self)
        conn.client_ip = client_ip
        return conn

    @staticmethod
    def own_fields(withheld: Iterable[bytes], owned: Iterable[bytes]) -> None:
        """Request fields the handler owns: the withheld ones a client sends are dropped, and
        the "_" aliases of both (fastgw/http/request_reader.py; process-wide)."""
        own_fields(withheld, owned)

    def set_limits(self, limits: Limits) -> None:
        """A reload's limits: for new connections (open ones keep theirs)."""
        self.limits = limits
        self.admission.per_address = limits.limit_conn_per_address

    def forget(self, conn: ServerConnection) -> None:
        """`conn` closed: it no longer counts."""
        if conn in self.connections:
            self.connections.discard(conn)
            self.admission.release(conn.client_ip)

    def sweep(self, now: float) -> None:
        # Connections stamp times from a clock up to one tick stale, so measured against `now`
        # a timeout could fire a tick early; a tick later it fires late but never early.
        late = now - TICK_SECONDS
        for conn in tuple(self.connections):
            conn.check_timeouts(late)

    def start_draining(self, only: Callable[[ServerConnection], bool] | None = None) -> None:
        """Drain every connection (SIGTERM: new ones are refused by then), or those `only`
        picks (the ones a listener a reload dropped accepted). Each finishes what is in flight
        and answers what still arrives with `connection: close`, and closes once idle past
        limits.drain_grace: a request may be on its way on an idle connection when the drain
        begins, and closing it at once, as nginx does, would lose it. A tunnel runs on until it
        ends or the drain's deadline."""
        if only is None:
            self.draining = True
        now = self.ticker.now or 1e-9
        for conn in tuple(self.connections):
            if only is None or only(conn):
                conn.drain(now)

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
        "drain_since",
        "error_after",
        "feeding",
        "flow",
        "forwarded_lines",
        "forwarded_tail",
        "fresh",
        "handler",
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
        "upgrade",
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
        self.upgrade: UpgradeWait | None = None  # a WebSocket upgrade being decided
        self.tunnel: Tunnel | None = None  # SWITCHED: the tunnel that has the transport
        self.server_name: bytes | None = None  # the SNI over TLS (b"" when none); None: plain
        self.drain_since = 0.0  # draining since then (drain); 0.0: not draining

    def move(self, state: int) -> None:
        """Every change of state: checked against STATE_MOVES."""
        if not STATE_MOVES[self.state * STATE_COUNT + state]:
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
        """Plain: just accepted, admitted now. TLS: handshake done, admitted at accept."""
        client_ip = self.client_ip
        if not client_ip:
            client_ip = peer_address(transport)
            if not self.server.admission.admit(client_ip, False):
                self.move(CLOSED)
                cast(asyncio.Transport, transport).abort()
                return
            self.client_ip = client_ip
        self.transport = transport  # type: ignore[assignment]
        self.flow.transport = self.transport
        self.client_ip_bytes = client_ip.encode()
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
        if self.server.draining:
            self.drain_since = self.ticker.now or 1e-9  # a TLS handshake finishing in a drain
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.state != CLOSED:
            self.move(CLOSED)
        self.flow.transport = None
        self.server.forget(self)
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
            self.move(CLOSED)
            self.flow.transport = None
            if self.transport is not None:
                self.transport.close()

    def abort(self) -> None:
        if self.state == SWITCHED:
            assert self.tunnel is not None
            self.tunnel.abort()
            return
        if self.state != CLOSED:
            self.move(CLOSED)
        self.flow.transport = None
        if self.transport is not None:
            self.transport.abort()  # after a close() too: what is still buffered is dropped

    def drain(self, now: float) -> None:
        """Answer what is in flight and what still arrives with `connection: close`; close once
        idle past limits.drain_grace (Server.start_draining says why)."""
        if not self.drain_since:
            self.drain_since = now
        for exchange in self.queue:
            if not exchange.response_started:
                exchange.keep_alive = False  # its answer says `connection: close`

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
        self.move(LINGERING)
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
            upgrade = self.upgrade
            if upgrade is not None:
                data = upgrade.bytes_read(data)
        self.parse(data)

    def parse(self, data: bytes) -> None:
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
                upgrade = self.upgrade
                if upgrade is not None:
                    data = upgrade.bytes_read(data)
        finally:
            self.feeding = False
        if self.out:
            self.flush()
        status = reader.checked_read()
        if status:
            self.fail(status)

    def _parse_failed(self, error: Exception, data: bytes) -> bytes:
        """Answer a parse failure of `data`; returns what is left to feed (after an Upgrade)."""
        if isinstance(error, httptools.HttpParserUpgrade):
            # llhttp stops after an upgrade request's head: continue with a fresh parser.
            rest = data[error.args[0] :] if error.args else b""
            reader = self.reader
            exchange = reader.take_upgrade_body()
            upgrading = reader.parsing
            if upgrading is not None and upgrading.upgrade and not upgrading.finished:
                # offered upstream: its body is counted off, what follows held
                reader.restart(None)
                self.upgrade = UpgradeWait(self, upgrading)
                self.upgrade.begin(exchange is upgrading)
            else:
                # not offered upstream: an ordinary request, whose body the fresh parser reads
                reader.restart(exchange)
            return rest
        if isinstance(error, httptools.HttpParserCallbackError):
            cause = error.__context__ or error.__cause__
            if isinstance(cause, LimitExceeded):
                self.fail(cause.status)
                return b""
            # a bug, but one a client can trigger at will: rate-limited
            _parse_bug_log.emit("request parsing failed: %r", cause, exc_info=cause)
        self.fail(400)
        return b""

    def start_tunnel(self, exchange: Exchange, upstream: UpstreamConnection) -> None:
        upgrade = self.upgrade
        if upgrade is None or upgrade.exchange is not exchange:
            upstream.abort()  # no upgrade is waiting (the client broke it off): nobody to tunnel to
            return
        upgrade.switch(upstream)

    def upgrade_over(self) -> None:
        self.upgrade = None

    def tunnel_started(self, tunnel: Tunnel) -> None:
        self.tunnel = tunnel

    def tunnel_ended(self) -> None:
        self.move(CLOSED)
        self.server.forget(self)

    def fail(self, status: int) -> None:
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
            # draining too: the next request may be on its way (Server.start_draining)
            self.idle_since = self.ticker.now
        if self.out and not self.feeding:
            # Inside data_received the read's answers go out together when it returns.
            self.flush()
        if self.flow.read_paused & PAUSE_PIPELINE and len(queue) <= 1:
            self.flow.resume_reading(PAUSE_PIPELINE)
        upgrade = self.upgrade
        if upgrade is not None and exchange is upgrade.exchange and self.state == HOLDING:
            upgrade.declined()

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
            if not exchange.request_complete and self._body_late(exchange, now):
                self._timeout_active(exchange)
            return
        head_started = self.reader.head_started
        if head_started:
            if now - head_started > limits.head_timeout:
                self._write_error_and_close(408)
            return
        idle_limit = limits.head_timeout if self.fresh else limits.keepalive_timeout
        idle_since = self.idle_since
        if self.drain_since:
            # idle for the grace since the later of the drain's start and the last answer
            idle_limit = min(idle_limit, limits.drain_grace)
            idle_since = max(idle_since, self.drain_since)
        if now - idle_since > idle_limit:
            self.close()

    def _body_late(self, exchange: Exchange, now: float) -> bool:
        """Whether the body being read is too slow: no byte for head_timeout (nginx's
        client_body_timeout, the head's value), not in full within request_body_timeout of
        reading while a plugin waits for all of it, or slower on average than
        request_body_min_rate past MIN_RATE_GRACE. Only time spent reading counts: a paused
        read is bounded elsewhere (the exchange ahead, the upstream's connect or write timeout,
        a plugin's own timeout), and a client waiting for its 100 Continue is not sending."""
        if self.flow.read_paused or (exchange.expect_continue and not exchange.continue_sent):
            if exchange.body_checked:
                exchange.body_checked = 0.0
            return False
        limits = self.limits
        if now - self.last_read > limits.head_timeout:
            return True
        last = exchange.body_checked
        exchange.body_checked = now
        if not last:
            return False
        seconds = exchange.body_seconds = exchange.body_seconds + now - last
        if exchange.body_waiter is not None and seconds > limits.request_body_timeout:
            return True
        rate = limits.request_body_min_rate
        return rate > 0 and seconds > MIN_RATE_GRACE and exchange.body_received < rate * seconds

    def _timeout_active(self, exchange: Exchange) -> None:
        if exchange.response_started:
            self.abort()
            return
        for queued in self.queue:
            queued.abort()
        self.queue.clear()
        self._write_error_and_close(408)


def peer_address(transport: asyncio.BaseTransport) -> str:
    """The client's address as the socket has it (a Unix socket or a test's: 127.0.0.1)."""
    peer = transport.get_extra_info("peername")
    return peer[0] if isinstance(peer, tuple) else "127.0.0.1"
