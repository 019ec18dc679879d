"""Connections to upstream servers: the response-side protocol and a keep-alive pool per upstream.

A connection serves one exchange at a time; it parses the response with httptools and hands the
pieces to the exchange, which owns framing towards the client.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING

import httptools

from fastgw.http.headers import PLAIN_CONNECTION_VALUES, RESPONSE_HOP_HEADERS, connection_tokens
from fastgw.http.timers import TICK_SECONDS, Ticker

if TYPE_CHECKING:
    from fastgw.http.exchange import Exchange

# Response-head bounds: an upstream is trusted more than a client, but not infinitely.
MAX_RESPONSE_HEAD = 64 * 1024  # bytes; twice nginx's proxy_buffer_size default of 4k pages x 8
MAX_RESPONSE_HEADERS = 200

# Idle connections beyond the pool's size are closed by the sweep once idle this long, not when
# released (HAProxy purges its idle pools over time too): under bursts of more concurrent requests
# than the size, a bound applied at release closes connections that the next burst, milliseconds
# later, must open again. Measured at 1,000 client connections against a 512 pool: ~2,000 upstream
# connects a second and a p99 of 200-260 ms with the bound at release.
EXCESS_IDLE_GRACE = 1.0


class UpstreamTarget:
    """Where a route's requests go: the pool plus per-service timeouts (seconds)."""

    __slots__ = (
        "connect_timeout",
        "host_header",
        "pool",
        "read_timeout",
        "retries",
        "version_and_host",
        "write_timeout",
    )

    def __init__(
        self,
        pool: UpstreamPool,
        host_header: bytes,
        connect_timeout: float,
        read_timeout: float,
        write_timeout: float,
        retries: int,
    ) -> None:
        self.pool = pool
        self.host_header = host_header
        # the end of the request line and the Host line, for requests that do not keep theirs
        self.version_and_host = b" HTTP/1.1\r\nhost: %b\r\n" % host_header
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.write_timeout = write_timeout
        self.retries = retries


class UpstreamConnection(asyncio.Protocol):
    """One TCP (or TLS) connection to an upstream; parses responses for the attached exchange.

    The upstream's hop-by-hop headers are dropped here, while parsing: the exchange gets the
    forwarded header lines ready to write plus the framing the upstream announced.
    """

    __slots__ = (
        "_body_sink",
        "_completed",
        "_head_bytes",
        "_informational",
        "_no_body",
        "_read_timeout",
        "_reset_parser",
        "_reusable",
        "_ticker",
        "closed",
        "connection_listed",
        "content_length",
        "deadline",
        "exchange",
        "head",
        "hop_size",
        "idle_since",
        "in_head",
        "parser",
        "pool",
        "requests",
        "transfer_chunked",
        "transport",
    )

    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.exchange: Exchange | None = None
        self.closed = False
        self.requests = 0  # served on this connection, for max_requests
        self.idle_since = 0.0
        self.deadline = 0.0  # read/write deadline while attached; 0 = none
        self._head_bytes = 0  # response bytes read before the head completed (0: none yet)
        self._informational = False
        self._ticker = pool.ticker
        self._read_timeout = 0.0
        self._reset_parser = False
        # the response head being parsed: forwarded header lines as pieces (name, ": ", value,
        # CRLF), and the hop-by-hop headers that say how the upstream frames the body
        self.head: list[bytes] = []
        self.content_length: bytes | None = None
        self.transfer_chunked = False
        self.connection_listed: bytes | None = None  # a Connection value naming other headers
        self.in_head = False  # header callbacks after the head are a chunked body's trailers
        self.hop_size = 0  # bytes of the hop-by-hop header lines dropped from this head
        # where body bytes go: the exchange's writer, set with the head and dropped with the
        # response (a pooled connection must not keep a finished exchange alive)
        self._no_body: Callable[[bytes], object] = self._unexpected_body
        self._body_sink = self._no_body
        # A response completes inside feed_data but is handed on only after it returns: bytes
        # after it in the same read (a response bigger than announced, a second response nobody
        # asked for) must be seen before the connection may go back to the pool.
        self._completed: Exchange | None = None
        self._reusable = False

    @property
    def got_response_bytes(self) -> bool:
        """Whether the attached exchange's response has begun to arrive."""
        return self._head_bytes > 0

    # -- connection lifecycle --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        exchange = self.exchange
        if exchange is not None:
            self.exchange = None
            exchange.upstream_lost(self)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.pool.forget(self)
            if self.transport is not None:
                self.transport.close()

    def abort(self) -> None:
        """Close without flushing and never reuse (after a fault or a cancelled exchange)."""
        self.exchange = None
        self._body_sink = self._no_body
        if not self.closed:
            self.closed = True
            self.pool.forget(self)
            if self.transport is not None:
                self.transport.abort()

    # -- flow control: the upstream's write buffer holds back the client's body -------------------

    def pause_writing(self) -> None:
        exchange = self.exchange
        if exchange is not None:
            self.deadline = self.pool.ticker.now + exchange.target.write_timeout
            exchange.upstream_write_paused()

    def resume_writing(self) -> None:
        exchange = self.exchange
        if exchange is not None:
            self.deadline = self.pool.ticker.now + exchange.target.read_timeout
            exchange.upstream_write_resumed()

    # -- sending ----------------------------------------------------------------------------------

    def send(self, exchange: Exchange, data: bytes, read_timeout: float) -> None:
        """Attach `exchange` and write its request head (and whatever body is ready)."""
        self.exchange = exchange
        self.requests += 1
        self._head_bytes = 0
        self._read_timeout = read_timeout
        self.deadline = self._ticker.now + read_timeout
        self.transport.write(data)  # type: ignore[union-attr]

    # -- receiving --------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        exchange = self.exchange
        if exchange is None:
            # Bytes nobody asked for: the connection's framing is unknown now.
            self.abort()
            return
        if not exchange.response_started:
            self._head_bytes += len(data)  # bounds the head's size until it is complete
        self.deadline = self._ticker.now + self._read_timeout
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            completed = self._completed
            if completed is None:
                self.abort()
                exchange.upstream_failed(502)
            else:
                # The response completed; what followed it was not ours to read. Never reuse.
                self._completed = None
                self.abort()
                completed.upstream_complete(self, False)
            return
        completed = self._completed
        if completed is not None:
            self._completed = None
            if self._reset_parser:
                self._reset_parser = False
                self.parser = httptools.HttpResponseParser(self)
            completed.upstream_complete(self, self._reusable)
            return
        if (
            self._head_bytes > MAX_RESPONSE_HEAD
            and not exchange.response_started
            and self.exchange is exchange
        ):
            # Still no complete head, so all of it was head (httptools buffers it).
            self.abort()
            exchange.upstream_failed(502)
            return
        conn = exchange.conn
        if conn.out:
            conn.flush()

    def eof_received(self) -> bool | None:
        exchange = self.exchange
        if exchange is not None and exchange.response_close_delimited:
            self.exchange = None
            exchange.upstream_complete(self, False)
        return None

    # httptools callbacks, in the order they fire

    def on_message_begin(self) -> None:
        if self.exchange is None:
            # A response after the one we asked for completed, in the same read: the upstream's
            # framing disagrees with ours. Stop here; the connection is not reused.
            raise ValueError("upstream sent more than one response")
        self.in_head = True

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.in_head:
            return  # a trailer of a chunked body: never forwarded, never kept (RFC 9110 §6.5.2)
        # Counted at on_headers_complete: the head-size bound already caps the list's length.
        name = name.lower()
        if name not in RESPONSE_HOP_HEADERS:
            self.head += (name, b": ", value, b"\r\n")
            return
        self.hop_size += len(name) + len(value) + 4  # not kept, but part of the head's size
        if name == b"content-length":
            self.content_length = value
        elif name == b"transfer-encoding":
            self.transfer_chunked = value.lower().find(b"chunked") >= 0
        elif name == b"connection" and value not in PLAIN_CONNECTION_VALUES:
            listed = self.connection_listed
            self.connection_listed = value if listed is None else listed + b"," + value

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        exchange = self.exchange
        assert exchange is not None  # see on_message_begin
        self.in_head = False
        head = self.head
        content_length = self.content_length
        chunked = self.transfer_chunked
        listed = self.connection_listed
        hop_size = self.hop_size
        # ready for the next head (a final response after a 1xx, or the next request's)
        self.head = []
        self.content_length = None
        self.transfer_chunked = False
        self.connection_listed = None
        self.hop_size = 0
        if len(head) > MAX_RESPONSE_HEADERS * 4:
            raise ValueError("upstream response has too many headers")
        if status < 200:
            # 1xx (e.g. 103 Early Hints): not forwarded; the final response follows.
            self._informational = True
            return
        if (
            self._head_bytes > MAX_RESPONSE_HEAD
            and sum(map(len, head)) + hop_size > MAX_RESPONSE_HEAD
        ):
            # The reads that brought the head also brought body; only now is its size exact.
            raise ValueError("upstream response head too large")
        if listed is not None:
            head = without_listed_headers(head, connection_tokens(listed))
        self._body_sink = exchange.upstream_head(status, head, content_length, chunked)
        if exchange.head_request:
            # httptools cannot be told a HEAD response has no body; finish it here and
            # give the next response a fresh parser.
            self._reset_parser = True
            self._finish()

    def on_body(self, body: bytes) -> None:
        self._body_sink(body)

    def on_message_complete(self) -> None:
        if self._informational:
            self._informational = False
            return
        if self.exchange is not None:  # None after a HEAD response, finished with its head
            self._finish()

    def _finish(self) -> None:
        # handed to the exchange when feed_data returns (see data_received)
        self._completed = self.exchange
        self.exchange = None
        self._body_sink = self._no_body
        self.deadline = 0.0
        self._reusable = self.parser.should_keep_alive()

    def _unexpected_body(self, body: bytes) -> None:
        self._reusable = False  # bytes after a HEAD response's head: not ours to read


def without_listed_headers(head: list[bytes], listed: set[bytes]) -> list[bytes]:
    """The header pieces of `head` (name, ": ", value, CRLF) minus those named in `listed`."""
    kept: list[bytes] = []
    for index in range(0, len(head), 4):
        if head[index] not in listed:
            kept += head[index : index + 4]
    return kept


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
        """Return a connection whose exchange finished cleanly."""
        self.busy.discard(conn)
        if conn.closed:
            return
        if conn.requests >= self.max_requests or not self.size:
            conn.close()
            return
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
            if conn.deadline and late > conn.deadline and conn.exchange is not None:
                exchange = conn.exchange
                conn.abort()
                exchange.upstream_failed(504)

    def close(self) -> None:
        idle, self.idle = self.idle, []
        for conn in idle:
            conn.close()
        for conn in tuple(self.busy):
            conn.abort()
