"""The worker's own counters (`policy: local`, and every policy's fallback while Redis is down):
per identifier, each period's count in its current window, bounded in entries.

One dict entry per identifier holds every period's (window start, count): a request costs one
lookup. A count from an earlier window reads as 0; when the longest period's window turns,
every counter has expired and the dict starts afresh (Kong's counters expire with their
period). The bound holds against a flood of made-up identifiers: past it, the oldest entry
makes room (Kong's shared dict evicts its least recently used), counted.
"""

from __future__ import annotations

from typing import Final

from fastgw.plugins.api import StoreUsage

from .windows import Period

# Kong's kong_rate_limiting_counters zone is 12 MiB per node; an entry (an identifier of up to
# an IPv6 address or a UUID, and a window start and a count per period) takes about
# ENTRY_BYTES here with one or two periods.
DEFAULT_CAPACITY: Final = 100_000
ENTRY_BYTES: Final = 200


class Counters:
    """Counts per identifier: `slots(identifier)` is [start, count] for each period in turn,
    its counts those of the current windows, changed in place by the caller."""

    __slots__ = ("capacity", "counts", "epoch", "evicted", "periods")

    def __init__(self, periods: tuple[Period, ...], capacity: int = DEFAULT_CAPACITY) -> None:
        self.periods = periods
        self.capacity = capacity
        self.counts: dict[str, list[int]] = {}
        self.epoch = 0  # the longest period's window the counts belong to
        self.evicted = 0

    def slots(self, identifier: str) -> list[int]:
        """`identifier`'s [start, count] per period, each count that of its current window
        (the periods' windows moved to the present first)."""
        periods = self.periods
        counts = self.counts
        longest = periods[len(periods) - 1].start
        if longest != self.epoch:
            self.epoch = longest
            counts.clear()  # every window has turned: every counter has expired
        slots = counts.get(identifier)
        if slots is None:
            if len(counts) >= self.capacity:
                del counts[next(iter(counts))]  # the oldest entry
                self.evicted += 1
            slots = [0] * (2 * len(periods))
            counts[identifier] = slots
        for index in range(len(periods)):
            start = periods[index].start
            if slots[2 * index] != start:
                slots[2 * index] = start
                slots[2 * index + 1] = 0
        return slots

    @property
    def entries(self) -> int:
        return len(self.counts)

    def usage_report(self, name: str) -> StoreUsage:
        entries = self.entries
        return StoreUsage(
            name, entries * ENTRY_BYTES, self.capacity * ENTRY_BYTES, entries, self.capacity
        )
