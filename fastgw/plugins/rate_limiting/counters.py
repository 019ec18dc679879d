"""The worker's own counters (`policy: local`, and every policy's fallback while Redis is down):
per period, a count per identifier for the current window, bounded in entries.

A window's counters go all at once when the next window begins (Kong's counters expire with
their period). The bound holds against a flood of made-up identifiers: past it, the oldest
counter of the period makes room (Kong's shared dict evicts its least recently used), counted.
"""

from __future__ import annotations

from typing import Final

from fastgw.plugins.api import StoreUsage

# Kong's kong_rate_limiting_counters zone is 12 MiB per node; an entry (an identifier of up to
# an IPv6 address or a UUID and its count, in a dict) takes about ENTRY_BYTES here.
DEFAULT_CAPACITY: Final = 100_000
ENTRY_BYTES: Final = 160


class Counters:
    """Counts per identifier for the current window of each period (by the period's index)."""

    __slots__ = ("capacity", "counts", "evicted", "per_period", "starts")

    def __init__(self, periods: int, capacity: int = DEFAULT_CAPACITY) -> None:
        self.capacity = capacity
        self.per_period = max(1, capacity // max(1, periods))
        self.counts: list[dict[str, int]] = [{} for _ in range(periods)]
        self.starts: list[int] = [0] * periods  # the window each period's counts are for
        self.evicted = 0

    def usage(self, index: int, start: int, identifier: str) -> int:
        """The count of `identifier` in the window beginning at `start` (0 when none)."""
        if self.starts[index] != start:
            self.starts[index] = start
            self.counts[index] = {}  # the previous window's counters all expire at once
            return 0
        return self.counts[index].get(identifier, 0)

    def add(self, index: int, identifier: str, amount: int = 1) -> None:
        """Count `amount` more for `identifier` (its window is the one `usage` last saw)."""
        counts = self.counts[index]
        count = counts.get(identifier)
        if count is not None:
            counts[identifier] = count + amount
            return
        if len(counts) >= self.per_period:
            del counts[next(iter(counts))]  # the oldest counter of this window
            self.evicted += 1
        counts[identifier] = amount

    @property
    def entries(self) -> int:
        return sum(len(counts) for counts in self.counts)

    def usage_report(self, name: str) -> StoreUsage:
        entries = self.entries
        return StoreUsage(
            name, entries * ENTRY_BYTES, self.capacity * ENTRY_BYTES, entries, self.capacity
        )
