"""Flow control of one connection: why its reading is paused, and whether its writing is.

Both sides of the proxy own one. Reading resumes only when no reason to pause is left, so that
one party lifting its pause never undoes another's (aiohttp's BaseProtocol owns pause/drain the
same way); pausing or resuming twice for one reason is a no-op.
"""

from __future__ import annotations

import asyncio
from typing import Final

# Why a connection's reading is paused (bits; reading resumes when none is left).
PAUSE_PIPELINE: Final = 1  # client: a pipelined request waits for the one before it
PAUSE_BUFFER: Final = 2  # client: a request body waits for its upstream, or for a plugin's read
PAUSE_UPSTREAM: Final = 4  # client: the upstream's write buffer is full
PAUSE_CLIENT: Final = 8  # upstream: the client's write buffer is full
PAUSE_HELD: Final = 16  # client: bytes after an upgrade request wait for the upstream's answer
# Pauses an exchange puts on its client; none may outlive the exchange.
EXCHANGE_PAUSES: Final = PAUSE_BUFFER | PAUSE_UPSTREAM


class FlowControl:
    """The pause state of one transport; `transport` is None once the connection closed."""

    __slots__ = ("read_paused", "transport", "write_paused", "write_paused_since")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.read_paused = 0  # PAUSE_* bits
        self.write_paused = False  # the transport's write buffer is over its high-water mark
        self.write_paused_since = 0.0

    def pause_reading(self, reason: int) -> None:
        if not self.read_paused:
            transport = self.transport
            if transport is not None:
                transport.pause_reading()
        self.read_paused |= reason

    def resume_reading(self, reason: int) -> None:
        if self.read_paused & reason:
            self.read_paused &= ~reason
            if not self.read_paused:
                transport = self.transport
                if transport is not None:
                    transport.resume_reading()

    def writing_paused(self, now: float) -> None:
        self.write_paused = True
        self.write_paused_since = now

    def writing_resumed(self) -> None:
        self.write_paused = False
