"""A tunnel: after an upstream's 101, the client's and the upstream's transports relay raw bytes
to each other until either side ends, with each side's write buffer holding back the other's reads.

Both transports are handed to the tunnel's two ends (`transport.set_protocol`, as uvicorn hands a
WebSocket to its own protocol): no HTTP is parsed any more. The client connection that made it
stays its listener's record of an open connection and sweeps its timeouts (check_timeouts).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from fastgw.http.flow import PAUSE_UPSTREAM, FlowControl
from fastgw.http.timers import Ticker


class TunnelEnd(asyncio.Protocol):
    """One side of a tunnel: what its transport reads goes to the other side's."""

    __slots__ = ("closed", "peer", "reading_paused", "transport", "tunnel", "write_paused_since")

    def __init__(self, tunnel: Tunnel, transport: asyncio.Transport) -> None:
        self.tunnel = tunnel
        self.transport = transport
        self.peer: TunnelEnd = self  # set once both ends exist
        self.closed = False
        self.reading_paused = False
        self.write_paused_since = 0.0  # its write buffer is full since then; 0.0: it is not

    def pause(self) -> None:
        if not self.reading_paused and not self.closed:
            self.reading_paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.reading_paused and not self.closed:
            self.reading_paused = False
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        tunnel = self.tunnel
        tunnel.last_activity = tunnel.ticker.now
        peer = self.peer
        if not peer.closed:
            peer.transport.write(data)

    def eof_received(self) -> bool | None:
        return None  # the transport closes: connection_lost ends the tunnel

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.tunnel.end()

    def pause_writing(self) -> None:
        self.write_paused_since = self.tunnel.ticker.now or 1e-9
        self.peer.pause()

    def resume_writing(self) -> None:
        self.write_paused_since = 0.0
        self.peer.resume()

    def close(self) -> None:
        """Send what is buffered, then close."""
        if not self.closed:
            self.closed = True
            self.transport.close()

    def abort(self) -> None:
        if not self.closed:
            self.closed = True
            self.transport.abort()


class Tunnel:
    """The two ends, the idle timeout (no byte either way for that long: nginx's
    proxy_read_timeout on an upgraded connection) and what to call once it is over."""

    __slots__ = ("client", "ended", "idle_timeout", "last_activity", "on_end", "ticker", "upstream")

    def __init__(
        self,
        client: asyncio.Transport,
        upstream: asyncio.Transport,
        ticker: Ticker,
        idle_timeout: float,
        on_end: Callable[[], None],
    ) -> None:
        self.ticker = ticker
        self.idle_timeout = idle_timeout
        self.on_end = on_end
        self.last_activity = ticker.now
        self.ended = False
        self.client = TunnelEnd(self, client)
        self.upstream = TunnelEnd(self, upstream)
        self.client.peer = self.upstream
        self.upstream.peer = self.client

    def start(self, held: bytes, client_flow: FlowControl, upstream_flow: FlowControl) -> None:
        """Relay from now on: `held` (what the client sent after its request) goes upstream
        first. The flows are the old protocols': whatever paused reading for them is over,
        except a write buffer that is still full."""
        client, upstream = self.client, self.upstream
        client.reading_paused = bool(client_flow.read_paused)
        upstream.reading_paused = bool(upstream_flow.read_paused)
        if client_flow.write_paused:
            client.write_paused_since = client_flow.write_paused_since or 1e-9
        if held:
            upstream.transport.write(held)
        if client_flow.read_paused & PAUSE_UPSTREAM:
            client.pause()  # the upstream's write buffer is still full
        else:
            client.resume()
        if client.write_paused_since:
            upstream.pause()  # the client is not reading
        else:
            upstream.resume()

    def end(self) -> None:
        """One side ended: the other gets what is buffered for it, then closes."""
        if not self.ended:
            self.ended = True
            self.client.close()
            self.upstream.close()
            self.on_end()

    def abort(self) -> None:
        if not self.ended:
            self.ended = True
            self.client.abort()
            self.upstream.abort()
            self.on_end()

    def check_timeouts(self, now: float, send_timeout: float) -> None:
        """Idle too long, or a client that stopped reading for `send_timeout`: dropped."""
        paused = self.client.write_paused_since
        if now - self.last_activity > self.idle_timeout or (paused and now - paused > send_timeout):
            self.abort()
