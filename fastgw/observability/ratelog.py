"""Log lines that cannot flood the log: at most one per interval, counting what they stood for.

For conditions a hostile or failing peer can repeat at will: refused connections, exhausted file
descriptors, loop errors, IdP failures. Never used on the request path's happy side.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

# One line per condition every 10 s says everything an operator needs while keeping a flood of
# identical events (thousands a second under attack) from costing disk and CPU.
DEFAULT_INTERVAL = 10.0
# Distinct keys a KeyedRateLimitedLog tracks; conditions are few, so many keys means the key
# carries varying details, and the overflow shares one limiter rather than growing without bound.
MAX_KEYS = 64


class RateLimitedLog:
    """`emit()` logs at once, then at most once per `interval`, adding how many were held back."""

    __slots__ = ("_clock", "_held", "_next", "interval", "level", "logger")

    def __init__(
        self,
        logger: logging.Logger,
        level: int,
        interval: float = DEFAULT_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.level = level
        self.interval = interval
        self._clock = clock
        self._next = float("-inf")
        self._held = 0

    def emit(self, message: str, *args: object, exc_info: BaseException | None = None) -> bool:
        """Log `message % args` unless one was logged within the interval; True if logged."""
        now = self._clock()
        if now < self._next:
            self._held += 1
            return False
        self._next = now + self.interval
        if self._held:
            message += " (and %d more since the last report)"
            args = (*args, self._held)
            self._held = 0
        self.logger.log(self.level, message, *args, exc_info=exc_info)
        return True


class KeyedRateLimitedLog:
    """One `RateLimitedLog` per key, so one repeated condition does not hide another."""

    __slots__ = ("_clock", "_interval", "_level", "_limiters", "_logger", "_overflow")

    def __init__(
        self,
        logger: logging.Logger,
        level: int,
        interval: float = DEFAULT_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._level = level
        self._interval = interval
        self._clock = clock
        self._limiters: dict[str, RateLimitedLog] = {}
        self._overflow = RateLimitedLog(logger, level, interval, clock)

    def emit(
        self, key: str, message: str, *args: object, exc_info: BaseException | None = None
    ) -> bool:
        limiter = self._limiters.get(key)
        if limiter is None:
            if len(self._limiters) >= MAX_KEYS:
                limiter = self._overflow
            else:
                limiter = RateLimitedLog(self._logger, self._level, self._interval, self._clock)
                self._limiters[key] = limiter
        return limiter.emit(message, *args, exc_info=exc_info)
