"""A log line that cannot flood the log: at most one per interval, counting what it stood for.

For conditions a hostile or overloaded peer can repeat at will: refused connections, exhausted
file descriptors, loop errors. Never used on the request path.
"""

from __future__ import annotations

import logging
import time

# One line per condition every 10 s says everything an operator needs while keeping a flood of
# identical events (thousands a second under attack) from costing disk and CPU.
DEFAULT_INTERVAL = 10.0


class RateLimitedLog:
    """`emit()` logs at once, then at most once per `interval`, adding how many were held back."""

    __slots__ = ("_held", "_next", "interval", "level", "logger")

    def __init__(
        self, logger: logging.Logger, level: int, interval: float = DEFAULT_INTERVAL
    ) -> None:
        self.logger = logger
        self.level = level
        self.interval = interval
        self._next = 0.0
        self._held = 0

    def emit(self, message: str, *args: object, exc_info: BaseException | None = None) -> bool:
        """Log `message % args` unless one was logged within the interval; True if logged."""
        now = time.monotonic()
        if now < self._next:
            self._held += 1
            return False
        self._next = now + self.interval
        if self._held:
            message += " (%d more like it since the last report)"
            args = (*args, self._held)
            self._held = 0
        self.logger.log(self.level, message, *args, exc_info=exc_info)
        return True
