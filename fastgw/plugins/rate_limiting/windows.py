"""Kong's fixed windows: each period's current window, aligned as Kong aligns it (the UTC
calendar: a minute from :00, a day from midnight UTC, a month from the 1st), and how long a
window counts for Kong's RateLimit-Reset and for the expiry of its counters.

A window's start is computed when the clock crosses into the next one, not per request.
"""

from __future__ import annotations

import calendar
import datetime
import math
from typing import Final

# Kong's EXPIRATION (kong/plugins/rate-limiting/expiration.lua): a month is 30 days and a year
# 365 for RateLimit-Reset and for a counter's time to live, though the windows are the calendar's
EXPIRATION: Final[dict[str, int]] = {
    "second": 1,
    "minute": 60,
    "hour": 3600,
    "day": 86400,
    "month": 2592000,
    "year": 31536000,
}
# periods whose windows are a fixed number of seconds from the epoch (UTC has no leap seconds)
_FIXED: Final[dict[str, int]] = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}


def window_bounds(period: str, now: int) -> tuple[int, int]:
    """The start and the end of `period`'s window holding `now` (epoch seconds, UTC)."""
    size = _FIXED.get(period)
    if size is not None:
        start = now - now % size
        return start, start + size
    moment = datetime.datetime.fromtimestamp(now, datetime.UTC)
    if period == "month":
        first = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        days = calendar.monthrange(first.year, first.month)[1]
        return int(first.timestamp()), int(first.timestamp()) + days * 86400
    first = moment.replace(month=1, day=1, hour=0, minute=0, second=0, microsecond=0)
    following = first.replace(year=first.year + 1)
    return int(first.timestamp()), int(following.timestamp())


class Period:
    """One configured period: its limit, its response header names and values, its current
    window (`start` .. `end`, moved by `at`)."""

    __slots__ = (
        "allowance",
        "end",
        "expiration",
        "integral",
        "limit",
        "limit_header",
        "limit_text",
        "lines",
        "name",
        "remaining_header",
        "start",
        "summary",
    )

    def __init__(self, name: str, limit: float) -> None:
        self.name = name
        self.limit = limit
        # requests a window lets through (Kong's `limit - usage > 0`, for whole counts)
        self.allowance = math.ceil(limit)
        self.integral = limit == int(limit)  # shown without a fraction: every count is whole
        self.limit_text = lua_number(limit)
        self.expiration = EXPIRATION[name]
        self.limit_header = f"x-ratelimit-limit-{name}".encode()
        self.remaining_header = f"x-ratelimit-remaining-{name}".encode()
        # the field lines as rendered on every request, but for the numbers that change
        self.lines = b"%b: %b\r\n%b: " % (self.limit_header, self.limit_text, self.remaining_header)
        self.summary = b"ratelimit-limit: %b\r\nratelimit-remaining: " % self.limit_text
        self.start = 0
        self.end = 0

    def at(self, now: int) -> bool:
        """Move to the window holding `now`; True when it is another window than before."""
        if self.start <= now < self.end:
            return False
        self.start, self.end = window_bounds(self.name, now)
        return True

    def reset(self, now: int) -> int:
        """Kong's RateLimit-Reset: the seconds left of the window, reckoned with Kong's fixed
        period length (so a long calendar month reports 1 near its end)."""
        return max(1, self.expiration - (now - self.start))


def lua_number(value: float) -> bytes:
    """A number as Kong's headers print it (Lua's tostring: `5`, `5.5`)."""
    whole = int(value)
    if value == whole:
        return str(whole).encode()
    return (b"%.14g" % value).lower()
