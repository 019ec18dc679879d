"""The client side of the proxy: an asyncio protocol per connection, parsing with httptools.

It owns framing, keep-alive, pipelining order, request limits, head/idle/send timeouts and
read-side flow control; what to do with a request is the handler's business.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final, Protocol, cast

import httptools

from fastgw.http.exchange import BODY_CHUNKED, BODY_LENGTH, ClientSide, Exchange, Handler
from fastgw.http.flow import PAUSE_HELD, PAUSE_PIPELINE, FlowControl
from fastgw.http.responses import build_response, error_parts
from fastgw.http.timers import TICK_SECONDS, Ticker
from fastgw.http.tls import server_name_of
from fastgw.http.vocabulary import connection_tokens, host_without_port
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

# A chunked body may carry non-data bytes (size lines, extensions, CRLFs, trailers) of 16 per
# chunk plus twice its data, and at most this much beyond: Go net/http's rule (CVE-2023-39326).
# llhttp skips extensions without a bound and httptools gives no callback for them, so without
# this a client could stream extension bytes forever, evading the body timeout and size limit
# (Node's CVE-2024-22019; Node and h11 cap a chunk line at 16 KiB too). Counted per read from
# the end of the read that completed the head, so that read (at most uvloop's 256 kB) is not.
CHUNK_OVERHEAD_PER_CHUNK: Final = 16
CHUNK_EXCESS_LIMIT: Final = 16 * 1024

# Bytes a Host header may hold: RFC 3986 reg-name, IP-literal and port characters. RFC 9112 §3.2
# wants 400 for an invalid Host; nginx checks it too. Anything else ("/", "@", spaces, obs-text)
# would reach routing, x-forwarded-host and, with preserve_host, the upstream's Host.
HOST_BYTES: Final = (
    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=%:[]"
)

_SLASH: Final = 0x2F  # b"/"[0]
# b"_"[0]: `_UNDERSCORE in name` is a memchr, while `b"_" in name` first tries the needle as an
# integer and builds (then clears) a TypeError: about 2,000 instructions per header
_UNDERSCORE: Final = 0x5F
_QUESTION_MARK: Final = 0x3F  # b"?"[0]

# httptools cannot read an Upgrade request's body: its on_headers_complete tells llhttp to skip
# the body of every request llhttp flags as an upgrade. Until the upstream agrees to switch, such
# a request is an ordinary one (RFC 9110 §7.8). An Upgrade the gateway does not offer upstream
# (anything but websocket, or a chunked body) is dropped as hop-by-hop and the request's body is
# read by a fresh parser primed with a head that frames the body the same way; llhttp then reads
# it with its usual strictness and goes on to the next request.
_PRIMING_HEAD_CHUNKED: Final = b"PUT / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n"
_PRIMING_HEAD_LENGTH: Final = b"PUT / HTTP/1.1\r\ncontent-length: %d\r\n\r\n"

# A WebSocket upgrade (offered upstream, exchange.upgrade) is different: whether the bytes after
# it are the next request or the tunnel's depends on the upstream's answer. So its body, framed
# by its Content-Length, is counted off the connection without a parser, and what follows is
# held unparsed (reading paused past HELD_LIMIT) until the exchange ends (then it is parsed as
# the next requests) or switches with a 101 (then it is the first of the tunnel's bytes).
# What the connection does with the bytes it reads:
PARSING: Final = 0  # HTTP/1.1 requests, through the parser
UPGRADE_BODY: Final = 1  # the rest of an upgrade request's body (upgrade_left bytes)
HOLDING: Final = 2  # after a complete upgrade request: held until its exchange decides
TUNNELLING: Final = 3  # relayed to the exchange's upstream unparsed
HELD_LIMIT: Final = 64 * 1024

# What a request field name is to the gateway: end-to-end, a name with "_" (forwarded only
# with underscores_in_headers), or one it consumes or re-creates instead of forwarding.
_END_TO_END: Final = 0
_UNDERSCORED: Final = 8
_DROPPED: Final = 9
_HOP: Final = 1
_HOST: Final = 2
_CONTENT_LENGTH: Final = 3
_TRANSFER_ENCODING: Final = 4
_EXPECT: Final = 5
_CONNECTION: Final = 6
_XFF: Final = 7
_UPGRADE: Final = 10
REQUEST_SPECIAL_HEADERS: Final[dict[bytes, int]] = {
    b"connection": _CONNECTION,
    b"keep-alive": _HOP,
    b"proxy-connection": _HOP,
    b"proxy-authorization": _HOP,
    b"te": _HOP,
    b"trailer": _HOP,
    b"upgrade": _UPGRADE,
    b"transfer-encoding": _TRANSFER_ENCODING,
    b"content-length": _CONTENT_LENGTH,
    b"host": _HOST,
    b"expect": _EXPECT,
    b"x-forwarded-for": _XFF,
    b"x-forwarded-proto": _HOP,
    b"x-forwarded-host": _HOP,
    b"x-forwarded-port": _HOP,
    b"x-real-ip": _HOP,
}


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


def aliases_special_header(name: bytes) -> bool:
    """Whether `name` (lower case, with "_") reads as a header the gateway consumes or re-creates
    once "_" is taken for "-", as CGI, WSGI and many frameworks do (HTTP_TRANSFER_ENCODING)."""
    return name.replace(b"_", b"-") in REQUEST_SPECIAL_HEADERS


class _FieldName:
    """A request field name as clients spell it: its lower-case form and what it is to us."""

    __slots__ = ("kind", "name")

    def __init__(self, name: bytes, kind: int) -> None:
        self.name = name
        self.kind = kind


# Field names as clients spelled them (lower-casing one costs more than a dict lookup).
# Bounded in entries and name length, so that made-up names cannot grow it; first come.
_FIELD_NAMES: Final[dict[bytes, _FieldName]] = {}
FIELD_NAMES_CACHED: Final = 512
FIELD_NAME_CACHED_LENGTH: Final = 64


def _field_name(raw: bytes) -> _FieldName:
    name = raw.lower()
    kind = REQUEST_SPECIAL_HEADERS.get(name, _END_TO_END)
    if kind == _END_TO_END and _UNDERSCORE in name:
        # dropped whatever the setting when it aliases a field the gateway owns
        kind = _DROPPED if aliases_special_header(name) else _UNDERSCORED
    known = _FieldName(name, kind)
    if len(_FIELD_NAMES) < FIELD_NAMES_CACHED and len(raw) <= FIELD_NAME_CACHED_LENGTH:
        _FIELD_NAMES[raw] = known
    return known


class _ParsedUrl(Protocol):
    schema: bytes | None
    host: bytes | None
    port: int | None
    path: bytes | None
    query: bytes | None


class _LimitExceeded(Exception):
    def __init__(self, status: int) -> None:
        self.status = status


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
        """Finish what is in flight; idle connections close now, busy ones after their response."""
        self.draining = True
        for conn in tuple(self.connections):
            if not conn.queue and conn.head_started == 0.0:
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
        head, busy with a request, idle between requests. O(connections): for the admin side."""
        reading = writing = 0
        for conn in self.connections:
            if conn.queue:
                writing += 1
            elif conn.head_started:
                reading += 1
        return reading, writing, len(self.connections) - reading - writing


class ServerConnection(asyncio.Protocol, ClientSide):
    """One client connection. Parser callbacks build exchanges; the first queued one is active."""

    # Slots: an idle connection is mostly this object (about 1.5 KiB less than with a __dict__,
    # which CPython stops sharing between instances beyond 30 attributes).
    __slots__ = (
        "chunk_data_mark",
        "chunk_excess",
        "chunk_mark",
        "chunked",
        "chunked_body",
        "chunks",
        "client_ip",
        "client_ip_bytes",
        "closed",
        "connection_value",
        "content_length",
        "error_after",
        "expect_continue",
        "feeding",
        "flow",
        "forwarded_lines",
        "forwarded_tail",
        "framing_seen",
        "fresh",
        "handler",
        "head_after",
        "head_from",
        "head_started",
        "headers",
        "held",
        "held_size",
        "host",
        "idle_since",
        "last_read",
        "limits",
        "lingering_since",
        "max_body_size",
        "max_head_size",
        "max_headers",
        "max_uri_size",
        "memo",
        "mode",
        "out",
        "parser",
        "parsing",
        "priming",
        "queue",
        "read_start",
        "received",
        "server",
        "server_name",
        "special_size",
        "ticker",
        "transfer_encoding",
        "transport",
        "underscores_in_headers",
        "upgrade_body",
        "upgrade_left",
        "upgrade_value",
        "upgrading",
        "url",
        "valid_host",
        "x_forwarded_for",
    )

    def __init__(self, server: Server) -> None:
        self.server = server
        self.handler = server.handler
        self.valid_host = b""  # the last Host that passed the character check
        self.limits = limits = server.limits
        # read per request: copied here to save the attribute hops
        self.max_headers = limits.max_headers
        self.max_uri_size = limits.max_uri_size
        self.max_head_size = limits.max_head_size
        self.max_body_size = limits.max_body_size
        self.underscores_in_headers = limits.underscores_in_headers
        self.ticker = server.ticker
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.client_ip = ""
        self.client_ip_bytes = b""
        self.forwarded_lines = b""
        self.forwarded_tail = b""
        self.closed = False
        self.out: list[bytes] = []  # response bytes gathered during one read, written once
        self.feeding = False
        # In request order; the first is active. A list, not a deque: it rarely holds more than
        # one exchange, and an empty deque costs 700 bytes per idle connection.
        self.queue: list[Exchange] = []
        self.parsing: Exchange | None = None
        self.error_after = 0  # a later pipelined request was malformed: answer it, then close
        self.flow = FlowControl()
        self.memo: dict[object, object] | None = None  # plugins' per-connection values
        self.lingering_since = 0.0  # closing gracefully since then (see LINGERING_TIMEOUT)
        self.idle_since = 0.0
        self.fresh = True
        self.last_read = 0.0
        # Head size without per-header counting: `received` counts every byte read; a head
        # that began in the read starting at `head_from` and ending at `head_after` spans at
        # most received - head_from bytes, and at least received - head_after while incomplete.
        self.received = 0
        self.read_start = 0
        self.head_from = 0
        self.head_after = 0
        # request head being parsed
        self.special_size = 0  # consumed headers other than Host: not in `headers`
        self.head_started = 0.0
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.host = b""
        self.content_length = -1
        self.chunked = False  # a Transfer-Encoding header came; its value is checked later
        self.transfer_encoding = b""
        self.expect_continue = False
        self.connection_value: bytes | None = None
        self.x_forwarded_for: bytes | None = None
        self.framing_seen = False  # one of the six fields above differs from its default
        # a chunked request body being read: its non-data bytes are bounded (see _check_chunks)
        self.chunked_body: Exchange | None = None
        self.chunks = 0
        self.chunk_mark = -1
        self.chunk_data_mark = 0
        self.chunk_excess = 0
        # an Upgrade request whose body the parser skipped, and the primed parser's own head
        # being fed (its callbacks are not a request): see _PRIMING_HEAD_CHUNKED
        self.upgrade_body: Exchange | None = None
        self.priming = False
        self.upgrade_value: bytes | None = None  # the request's Upgrade field
        # a WebSocket upgrade being decided (see HOLDING), the bytes held meanwhile
        self.mode = PARSING
        self.upgrading: Exchange | None = None
        self.upgrade_left = 0
        self.held: list[bytes] = []
        self.held_size = 0
        self.server_name: bytes | None = None  # the SNI over TLS (b"" when none); None: plain

    # -- connection lifecycle --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        server = self.server
        server.accepted_total += 1
        if len(server.connections) >= server.max_connections:
            self.closed = True
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
        self.closed = True
        self.flow.transport = None
        self.server.connections.discard(self)
        for exchange in self.queue:
            exchange.abort()
        self.queue.clear()
        if self.parsing is not None and not self.parsing.finished:
            self.parsing.abort()
        self.parsing = None
        self.chunked_body = None

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.flow.transport = None
            if self.transport is not None:
                self.transport.close()

    def abort(self) -> None:
        self.closed = True
        self.flow.transport = None
        if self.transport is not None:
            self.transport.abort()

    def close_gracefully(self) -> None:
        """Send what is queued, then stop sending; read and drop until the client closes too."""
        self.flush()
        transport = self.transport
        if self.closed or transport is None:
            return
        if self.lingering_since or not transport.can_write_eof():
            self.close()
            return
        transport.write_eof()
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
            if not self.closed:
                self.transport.write(out[0] if len(out) == 1 else b"".join(out))  # type: ignore[union-attr]
            out.clear()

    def forwarded_fields(self, host: bytes) -> bytes:
        if host == self.valid_host:
            return self.forwarded_tail
        if host:
            return b"%bx-forwarded-host: %b\r\n" % (self.forwarded_lines, host_without_port(host))
        return self.forwarded_lines

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
        if self.lingering_since:
            return  # closing: read only to be dropped
        start = self.received
        self.read_start = start
        self.received = start + len(data)
        if self.mode != PARSING:
            if self.mode == TUNNELLING:
                exchange = self.upgrading
                if exchange is not None:
                    exchange.tunnel_from_client(data)
                return
            data = self._upgrade_bytes(data)
        self._parse(data)

    def _parse(self, data: bytes) -> None:
        self.feeding = True
        try:
            while data:
                try:
                    self.parser.feed_data(data)
                    break
                except (httptools.HttpParserError, httptools.HttpParserUpgrade) as error:
                    failure: Exception = error
                # Handled outside the `except` block: a parser fed again there would see its
                # callback's exception chained to the one being handled, not to its own cause.
                data = self._parse_failed(failure, data)
                del failure
                if self.mode != PARSING:
                    data = self._upgrade_bytes(data)
        finally:
            self.feeding = False
        if self.out:
            self.flush()
        if self.head_started and self.received - self.head_after > self.max_head_size:
            self._fail(431)  # httptools keeps buffering an incomplete head: stop it here
        if self.chunked_body is not None:
            self._check_chunks()

    def _check_chunks(self) -> None:
        """Bound the non-data bytes of the chunked body being read (CHUNK_EXCESS_LIMIT).

        Measured between the ends of reads, from the end of the read that completed the head:
        as long as the body is incomplete, every byte read since then belongs to it.
        """
        exchange = self.chunked_body
        assert exchange is not None
        if exchange.request_complete or self.closed:
            self.chunked_body = None
            return
        data = exchange.body_received
        if self.chunk_mark >= 0:
            overhead = self.received - self.chunk_mark - (data - self.chunk_data_mark)
            allowance = CHUNK_OVERHEAD_PER_CHUNK * self.chunks + 2 * (data - self.chunk_data_mark)
            # like Go's, the excess never goes below zero: data earns no credit for later abuse
            self.chunk_excess = max(0, self.chunk_excess + overhead - allowance)
            if self.chunk_excess > CHUNK_EXCESS_LIMIT:
                self.chunked_body = None
                self._fail(400)
                return
        self.chunk_mark = self.received
        self.chunk_data_mark = data
        self.chunks = 0

    def _parse_failed(self, error: Exception, data: bytes) -> bytes:
        """Answer a parse failure of `data`; returns what is left to feed (after an Upgrade)."""
        if isinstance(error, httptools.HttpParserUpgrade):
            # llhttp stops after an upgrade request's head: continue with a fresh parser.
            self.parser = httptools.HttpRequestParser(self)
            rest = data[error.args[0] :] if error.args else b""
            exchange = self.upgrade_body
            self.upgrade_body = None
            upgrading = self.parsing
            if upgrading is not None and upgrading.upgrade and not upgrading.finished:
                # offered upstream: its body is counted off, what follows held (see HOLDING)
                self.upgrading = upgrading
                if exchange is upgrading:
                    self.mode = UPGRADE_BODY
                    self.upgrade_left = upgrading.content_length
                else:
                    self.mode = HOLDING
            elif exchange is not None:
                # not offered upstream: an ordinary request, whose body the fresh parser reads
                self._prime_for_body(exchange)
            return rest
        if isinstance(error, httptools.HttpParserCallbackError):
            cause = error.__context__ or error.__cause__
            if isinstance(cause, _LimitExceeded):
                self._fail(cause.status)
                return b""
            # a bug, but one a client can trigger at will: rate-limited
            _parse_bug_log.emit("request parsing failed: %r", cause, exc_info=cause)
        self._fail(400)
        return b""

    def _upgrade_bytes(self, data: bytes) -> bytes:
        """Bytes read while a WebSocket upgrade is decided; returns what is left to parse."""
        if self.mode == UPGRADE_BODY:
            exchange = self.upgrading
            size = min(self.upgrade_left, len(data))
            body, data = data[:size], data[size:]
            self.upgrade_left -= size
            try:
                if body:
                    self.on_body(body)
            except _LimitExceeded as limit:
                self.mode = PARSING
                self.upgrading = None
                self._fail(limit.status)
                return b""
            if self.upgrade_left:
                return b""
            self.mode = HOLDING
            if exchange is not None:
                exchange.on_request_complete()  # may start the tunnel, or end the exchange
        if self.mode == HOLDING and data:
            self.held.append(data)
            self.held_size += len(data)
            if self.held_size > HELD_LIMIT:
                self.flow.pause_reading(PAUSE_HELD)
            return b""
        if self.mode == TUNNELLING and data:
            exchange = self.upgrading
            if exchange is not None:
                exchange.tunnel_from_client(data)
            return b""
        return data

    def start_tunnel(self, exchange: Exchange) -> None:
        """The upstream switched (101) and the request is complete: the held bytes are the
        first of the tunnel's; from now on every byte read goes upstream unparsed."""
        self.mode = TUNNELLING
        self.upgrading = exchange
        held = self.held
        if held:
            self.held = []
            self.held_size = 0
            exchange.tunnel_from_client(b"".join(held))
        self.flow.resume_reading(PAUSE_HELD)

    def end_tunnel(self) -> None:
        self.flush()
        self.close()

    def _upgrade_declined(self) -> None:
        """The upgrade request ended without a switch: what it held is the next request(s)."""
        self.mode = PARSING
        self.upgrading = None
        held = self.held
        self.held = []
        self.held_size = 0
        if not held or self.closed or self.lingering_since:
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
        if not self.closed and not self.lingering_since:
            self._parse(data)

    def _prime_for_body(self, exchange: Exchange) -> None:
        """Make the fresh parser read `exchange`'s body next, framed as its head announced."""
        if exchange.body_mode == BODY_CHUNKED:
            head = _PRIMING_HEAD_CHUNKED
        else:
            head = _PRIMING_HEAD_LENGTH % exchange.content_length
        self.priming = True
        try:
            self.parser.feed_data(head)
        finally:
            self.priming = False

    def _fail(self, status: int) -> None:
        """The client sent something unusable: answer `status` (in order) and close."""
        if self.closed or self.lingering_since:
            return  # the rest of a read that arrived after we decided to close
        self.flow.pause_reading(PAUSE_PIPELINE)
        parsing = self.parsing
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

    # httptools callbacks, in the order they fire

    def on_message_begin(self) -> None:
        if self.closed or self.lingering_since:
            # Pipelined after a request that closed the connection: never run it.
            raise _LimitExceeded(400)
        if self.priming:
            return  # the primed parser's own head: no request (head_started stays 0)
        self.head_started = self.ticker.now or 1e-9
        self.head_from = self.read_start
        self.head_after = self.received
        self.url = b""
        self.headers = []
        self.host = b""
        if self.framing_seen:
            # Only requests that carried such headers pay for resetting them.
            self.framing_seen = False
            self.special_size = 0
            self.content_length = -1
            self.chunked = False
            self.transfer_encoding = b""
            self.expect_continue = False
            self.connection_value = None
            self.x_forwarded_for = None
            self.upgrade_value = None

    def on_url(self, url: bytes) -> None:
        if self.url:
            url = self.url + url  # the target arrived in pieces
        if len(url) > self.max_uri_size:
            raise _LimitExceeded(414)
        self.url = url

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.head_started:
            # A trailer field of a chunked body. Never merged into the headers (RFC 9110
            # §6.5.2): plugins have already seen them, and the upstream never gets trailers.
            # Their size is bounded with the body's other non-data bytes (_check_chunks).
            return
        known = _FIELD_NAMES.get(name)
        if known is None:
            known = _field_name(name)
        kind = known.kind
        if kind == _END_TO_END:
            headers = self.headers
            if len(headers) >= self.max_headers:
                raise _LimitExceeded(431)
            headers.append((known.name, value))
        elif kind == _UNDERSCORED:
            if len(self.headers) >= self.max_headers:
                raise _LimitExceeded(431)
            if self.underscores_in_headers:
                self.headers.append((known.name, value))
            else:
                self._dropped_header(known.name, value)
        elif kind == _DROPPED:
            self._dropped_header(known.name, value)
        elif kind == _HOST:
            if self.host:
                raise _LimitExceeded(400)  # two Host headers (RFC 9112 §3.2)
            self.host = value  # reset for every request: not a reason to set framing_seen
        else:
            self._special_header(kind, known.name, value)

    def _dropped_header(self, name: bytes, value: bytes) -> None:
        """A name with "_": dropped as nginx does by default (underscores_in_headers off), and
        always when it aliases a header the gateway consumes, such as transfer_encoding
        (_field_name)."""
        self.framing_seen = True  # so that special_size is reset for the next request
        self.special_size += len(name) + len(value) + 4  # still part of the head's size

    def _special_header(self, kind: int, name: bytes, value: bytes) -> None:
        """A header the gateway consumes or re-creates: kept aside, never in `headers`."""
        if len(self.headers) >= self.max_headers:
            raise _LimitExceeded(431)
        self.framing_seen = True
        self.special_size += len(name) + len(value) + 4
        if kind == _CONTENT_LENGTH:
            self.content_length = int(value)
        elif kind == _TRANSFER_ENCODING:
            self.chunked = True  # checked in on_headers_complete, once all of them are in
            self.transfer_encoding = (
                value if not self.transfer_encoding else (self.transfer_encoding + b"," + value)
            )
        elif kind == _EXPECT:
            if value.lower() != b"100-continue":
                raise _LimitExceeded(417)
            self.expect_continue = True
        elif kind == _CONNECTION:
            self.connection_value = (
                value if self.connection_value is None else (self.connection_value + b"," + value)
            )
        elif kind == _UPGRADE:
            self.upgrade_value = (
                value if self.upgrade_value is None else self.upgrade_value + b"," + value
            )
        elif kind == _XFF:
            self.x_forwarded_for = (
                value if self.x_forwarded_for is None else (self.x_forwarded_for + b", " + value)
            )

    def on_headers_complete(self) -> None:
        if self.priming:
            return
        parser = self.parser
        self.head_started = 0.0
        if self.received - self.head_from > self.max_head_size:
            self._check_head_size()  # only when the cheap bound cannot vouch for the head
        method = parser.get_method()
        if method == b"CONNECT":
            # A tunnel is no reverse proxy's business, and llhttp reads whatever follows as
            # tunnel data; nginx answers 405 too. Closing ends the ambiguity.
            raise _LimitExceeded(405)
        url = self.url
        host = self.host
        if url[0] == _SLASH:
            if _QUESTION_MARK in url:  # a memchr; find() would parse its arguments first
                mark = url.find(b"?")
                path, query = url[:mark], url[mark + 1 :]
            else:
                path, query = url, b""
        else:
            path, query, host = self._absolute_target(url, host)
        # Without a Connection or Proxy-Connection header (both set framing_seen), llhttp keeps
        # an HTTP/1.1 request alive and no other (it takes 1.0, 1.1, 0.9 and 2.0): the version
        # string is built only when in doubt.
        keep_alive = parser.should_keep_alive()
        http_10 = False
        if not keep_alive or self.framing_seen:
            version = parser.get_http_version()
            http_10 = version == "1.0"
            if not http_10 and version != "1.1":
                # llhttp also takes 0.9 and 2.0 in a request line; both would need other
                # framing. 505 as nginx answers a major version above 1 (RFC 9110 §15.6.6).
                raise _LimitExceeded(505)
        if not host:
            if not http_10:
                raise _LimitExceeded(400)  # HTTP/1.1 requires Host (RFC 9112 §3.2)
        elif host != self.valid_host:
            # Checked once per connection and Host: keep-alive clients repeat the same one.
            if host.translate(None, HOST_BYTES):
                raise _LimitExceeded(400)  # an invalid Host (RFC 9112 §3.2)
            self.valid_host = host
            self.forwarded_tail = b"%bx-forwarded-host: %b\r\n" % (
                self.forwarded_lines,
                host_without_port(host),
            )
        exchange = Exchange(
            self, method, path, query, host, self.headers, keep_alive and not self.server.draining
        )
        if self.framing_seen or http_10:
            self._request_framing(exchange, http_10)
        self.server.requests_total += 1
        self.parsing = exchange
        queue = self.queue
        queue.append(exchange)
        if len(queue) == 1:
            self.fresh = False
            exchange.begin(self.handler)
        else:
            self.flow.pause_reading(PAUSE_PIPELINE)

    def _request_framing(self, exchange: Exchange, http_10: bool) -> None:
        """What the headers kept aside say about the request: body, version, hop-by-hop."""
        exchange.http_10 = http_10
        exchange.x_forwarded_for = self.x_forwarded_for
        if self.connection_value is not None:
            listed = connection_tokens(self.connection_value)
            if listed:
                exchange.headers = [h for h in exchange.headers if h[0] not in listed]
        content_length = self.content_length
        exchange.content_length = content_length  # -1 when absent; an explicit 0 is forwarded
        upgrade = self.upgrade_value
        if (
            upgrade is not None
            and not self.chunked
            and not http_10
            and upgrade.strip(b" \t").lower() == b"websocket"
            and self.parser.should_upgrade()
        ):
            # Kong proxies Upgrade: websocket (only that); a chunked body is not offered
            # (its end is the parser's to find, and llhttp skips an upgrade's body)
            exchange.upgrade = True
        if self.chunked:
            self._check_transfer_encoding(http_10)
            body_mode = BODY_CHUNKED
            self.chunked_body = exchange
            self.chunk_mark = -1
            self.chunk_excess = 0
        elif content_length > 0:
            body_mode = BODY_LENGTH
        else:
            return
        if self.max_body_size and content_length > self.max_body_size:
            raise _LimitExceeded(413)
        exchange.expect_body(body_mode, self.expect_continue)
        if self.parser.should_upgrade():
            self.upgrade_body = exchange  # the parser will skip this body: see _prime_for_body

    def _check_transfer_encoding(self, http_10: bool) -> None:
        """Only a lone `chunked` is a body framing the gateway forwards (as nginx and h11 do).

        llhttp already rejects CL with TE, a repeated `chunked` and a `chunked` that is not
        last, but lets `gzip` or `identity` through to the body, after the handler would run.
        """
        if http_10:
            # RFC 9112 §6.1: TE in HTTP/1.0 means faulty framing; nginx answers 400
            raise _LimitExceeded(400)
        coding = self.transfer_encoding.strip(b" \t").lower()
        if coding == b"chunked":
            return
        if coding.rpartition(b",")[2].strip(b" \t") == b"chunked":
            # a transfer coding under the chunked one (gzip, chunked): nginx and h11 answer 501;
            # re-chunking it would hand the upstream gzip bytes it has no way to know of
            raise _LimitExceeded(501)
        raise _LimitExceeded(400)  # RFC 9112 §6.3: without a final chunked, no framing

    def _check_head_size(self) -> None:
        size = len(self.url) + len(self.host) + self.special_size
        for name, value in self.headers:
            size += len(name) + len(value) + 4  # ": " and CRLF
        if size > self.max_head_size:
            raise _LimitExceeded(431)

    @staticmethod
    def _absolute_target(url: bytes, host: bytes) -> tuple[bytes, bytes, bytes]:
        """Absolute-form targets (RFC 9112 §3.2.2) are normalised: their authority wins."""
        if url == b"*":
            raise _LimitExceeded(400)
        try:
            # what httptools really gives: any part may be missing (its stub says otherwise)
            parsed = cast(_ParsedUrl, httptools.parse_url(url))
        except httptools.HttpParserInvalidURLError:
            raise _LimitExceeded(400) from None
        if parsed.schema not in (b"http", b"https") or not parsed.host:
            raise _LimitExceeded(400)
        authority = parsed.host if parsed.port is None else b"%b:%d" % (parsed.host, parsed.port)
        return parsed.path or b"/", parsed.query or b"", authority

    def on_body(self, body: bytes) -> None:
        exchange = self.parsing
        if exchange is not None:
            max_body = self.max_body_size
            if max_body and exchange.body_received + len(body) > max_body and not exchange.answered:
                raise _LimitExceeded(413)
            exchange.on_request_body(body)

    def on_chunk_header(self) -> None:
        self.chunks += 1  # for the allowance in _check_chunks

    def on_message_complete(self) -> None:
        exchange = self.parsing
        if exchange is not None and not exchange.request_complete:
            if exchange is self.upgrade_body:
                return  # only its head was read; the primed parser reads the body
            exchange.on_request_complete()

    # -- exchange bookkeeping --------------------------------------------------------------------

    def exchange_done(self, exchange: Exchange) -> None:
        """The active exchange answered in full (its bytes are in `out`): on to the next one."""
        queue = self.queue
        if queue and queue[0] is exchange:
            del queue[0]
        if self.closed or self.lingering_since:
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
        if exchange is self.upgrading and self.mode == HOLDING:
            self._upgrade_declined()

    # -- timeouts (called by the ticker's sweep) -------------------------------------------------

    def check_timeouts(self, now: float) -> None:
        if self.closed:
            return
        if self.lingering_since:
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
        if self.head_started:
            if now - self.head_started > limits.head_timeout:
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
