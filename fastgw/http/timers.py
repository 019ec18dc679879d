"""A coarse clock and the periodic sweep that enforces every connection timeout.

One timer for the whole process instead of one per request: a request costs no TimerHandle.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Final

# Timeouts fire up to one tick late; 100 ms is far below any timeout worth configuring and a
# sweep over thousands of connections every tick costs well under 1% of a core.
TICK_SECONDS: Final = 0.1


class Ticker:
    """`now` is the loop's monotonic time, refreshed every tick; sweeps run on each tick."""

    def __init__(self) -> None:
        self.now = 0.0
        self._sweeps: list[Callable[[float], None]] = []
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def add(self, sweep: Callable[[float], None]) -> None:
        self._sweeps.append(sweep)

    def remove(self, sweep: Callable[[float], None]) -> None:
        if sweep in self._sweeps:
            self._sweeps.remove(sweep)

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.now = self._loop.time()
        self._handle = self._loop.call_later(TICK_SECONDS, self._tick)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _tick(self) -> None:
        loop = self._loop
        assert loop is not None
        self.now = now = loop.time()
        for sweep in tuple(self._sweeps):
            try:
                sweep(now)
            except Exception:  # a failing sweep must not stop the clock
                import logging

                logging.getLogger("fastgw").exception("timeout sweep failed")
        self._handle = loop.call_later(TICK_SECONDS, self._tick)
