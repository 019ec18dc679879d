"""The wall clock as a request reads it: whole seconds since the epoch (UTC), the precision of
Kong's ngx.time(), read from an attribute and refreshed by the event loop as each second begins.

Reading the system clock costs a request more than the rest of a rate-limiting decision; the
loop refreshes this one once a second instead. Before anything started it (a plugin's start),
or after the last user stopped it, `now()` asks the system clock.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Final

# Past the second's turn, so that the refresh never lands just before it.
_LATE: Final = 0.001


class Clock:
    """`seconds` is the current second while `running`. `source` is the system clock (a test
    sets its own, then `refresh`es)."""

    __slots__ = ("_handle", "_users", "running", "seconds", "source")

    def __init__(self, source: Callable[[], float] = time.time) -> None:
        self.source = source
        self.seconds = int(source())
        self.running = False
        self._users = 0
        self._handle: asyncio.TimerHandle | None = None

    def now(self) -> int:
        return self.seconds if self.running else int(self.source())

    def refresh(self) -> float:
        """Read the source now (the loop does it as each second begins)."""
        now = self.source()
        self.seconds = int(now)
        return now

    def start(self) -> None:
        """One more user (inside the running loop): the refreshing runs while any is left."""
        self._users += 1
        if not self.running:
            self.running = True
            self._tick()

    def stop(self) -> None:
        self._users = max(0, self._users - 1)
        if self._users == 0 and self.running:
            self.running = False
            if self._handle is not None:
                self._handle.cancel()
                self._handle = None

    def _tick(self) -> None:
        now = self.refresh()
        loop = asyncio.get_running_loop()
        self._handle = loop.call_later(1.0 - (now - int(now)) + _LATE, self._tick)


CLOCK: Final = Clock()  # the process's: every plugin reads the same second
