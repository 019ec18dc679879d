"""A client connection's wait for a WebSocket upgrade's answer: the request's body counted off
without a parser, the bytes after it held, then the switch to a tunnel (a 101) or the decline.

An upgrade offered upstream (exchange.upgrade) must wait for the upstream's answer to know
whether the bytes after it are the next request or the tunnel's (RFC 9110 §7.8).
"""

from __future__ import annotations

import asyncio
from typing import Final, Protocol

from fastgw.http.client_states import HOLDING, READING, SWITCHED, UPGRADE_BODY
from fastgw.http.exchange import Exchange
from fastgw.http.flow import PAUSE_HELD, FlowControl
from fastgw.http.request_reader import LimitExceeded, RequestReader
from fastgw.http.timers import Ticker
from fastgw.http.tunnel import Tunnel
from fastgw.http.upstream import UpstreamConnection

# The upgrade's body, framed by its Content-Length, is counted off the connection; what follows
# is held unparsed (reading paused past HELD_LIMIT) until the exchange ends (then it is parsed as
# the next requests) or the upstream switches with a 101 (then it is the tunnel's first bytes).
HELD_LIMIT: Final = 64 * 1024


class WaitingConnection(Protocol):
    """What the wait needs of its client connection (fastgw/http/server.py is one). A protocol,
    not a trait the connection inherits: an upgrade is rare, and a second trait would make every
    trait call the exchange makes on its connection dearer (mypyc searches a class's traits)."""

    flow: FlowControl
    state: int
    reader: RequestReader
    transport: asyncio.Transport | None
    ticker: Ticker
    queue: list[Exchange]
    feeding: bool  # inside a read: the parser is busy

    @property
    def ending(self) -> bool: ...

    def move(self, state: int) -> None: ...

    def flush(self) -> None: ...

    def parse(self, data: bytes) -> None: ...

    def fail(self, status: int) -> None: ...

    def upgrade_over(self) -> None:
        """The wait ended (declined, broken off, or switched)."""
        ...

    def tunnel_started(self, tunnel: Tunnel) -> None: ...

    def tunnel_ended(self) -> None: ...


class UpgradeWait:
    """One upgrade request offered upstream, from its head until its exchange decides."""

    __slots__ = ("body_left", "conn", "exchange", "held", "held_size")

    def __init__(self, conn: WaitingConnection, exchange: Exchange) -> None:
        self.conn = conn
        self.exchange = exchange
        self.body_left = 0
        self.held: list[bytes] = []
        self.held_size = 0

    def begin(self, has_body: bool) -> None:
        """The head is read (llhttp stopped there): count the body off, or hold from now."""
        if has_body:
            self.conn.move(UPGRADE_BODY)
            self.body_left = self.exchange.content_length
        else:
            self.conn.move(HOLDING)

    def bytes_read(self, data: bytes) -> bytes:
        """Bytes read while the upgrade is decided; returns what is left to parse."""
        conn = self.conn
        if conn.state == UPGRADE_BODY:
            size = min(self.body_left, len(data))
            body, data = data[:size], data[size:]
            self.body_left -= size
            try:
                if body:
                    conn.reader.on_body(body)
            except LimitExceeded as limit:
                conn.move(READING)
                conn.upgrade_over()
                conn.fail(limit.status)
                return b""
            if self.body_left:
                return b""
            conn.move(HOLDING)
            self.exchange.on_request_complete()  # may end the exchange: then the upgrade's off
        if conn.state == HOLDING and data:
            self.held.append(data)
            self.held_size += len(data)
            if self.held_size > HELD_LIMIT:
                conn.flow.pause_reading(PAUSE_HELD)
            return b""
        return data

    def switch(self, upstream: UpstreamConnection) -> None:
        """The upstream switched (its 101 is queued in the connection's `out`): both transports
        go to a tunnel; the bytes held (and what is left of the body) are the tunnel's first."""
        conn = self.conn
        transport = conn.transport
        if conn.state not in (UPGRADE_BODY, HOLDING) or transport is None:
            upstream.abort()  # the client is going: nobody to tunnel to
            return
        conn.flush()
        queue = conn.queue
        if queue and queue[0] is self.exchange:
            del queue[0]
        conn.upgrade_over()
        conn.reader.parsing = None
        held = b"".join(self.held)
        self.held = []
        conn.move(SWITCHED)
        upstream_transport = upstream.transport
        assert upstream_transport is not None  # the 101 came through it
        tunnel = Tunnel(
            transport, upstream_transport, conn.ticker, upstream.read_timeout, conn.tunnel_ended
        )
        upstream.hand_over(tunnel.upstream)
        transport.set_protocol(tunnel.client)
        conn.tunnel_started(tunnel)
        tunnel.start(held, conn.flow, upstream.flow)
        conn.flow.transport = None

    def declined(self) -> None:
        """The upgrade request ended without a switch: what it held is the next request(s)."""
        conn = self.conn
        conn.move(READING)
        conn.upgrade_over()
        held = self.held
        self.held = []
        flow = conn.flow
        if not held or conn.ending:
            flow.resume_reading(PAUSE_HELD)
            return
        data = b"".join(held)
        if conn.feeding:
            # inside a read, the parser is busy: parse right after it, reading paused until then
            # so that no later byte overtakes these
            flow.pause_reading(PAUSE_HELD)
            asyncio.get_running_loop().call_soon(self._parse_held, data)
        else:
            flow.resume_reading(PAUSE_HELD)
            conn.parse(data)

    def _parse_held(self, data: bytes) -> None:
        conn = self.conn
        conn.flow.resume_reading(PAUSE_HELD)
        if not conn.ending:
            conn.parse(data)
