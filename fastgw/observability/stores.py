"""The registry of bounded in-memory stores: each one's use against its bound, by name.

Every store keyed by what clients send (token caches, rejections, rate-limit counters, a response
cache, log queues) has a bound: a store without one is a memory leak waiting for traffic. Each
reports a `StoreUsage`; plugins report theirs through `Plugin.stores()` (fastgw/plugins/api.py),
the gateway `collect`s them at scrape time, and the prometheus plugin exports them as Kong
exports its shared dicts (kong_memory_lua_shared_dict_bytes / _total_bytes).
"""

from __future__ import annotations

from collections.abc import Iterable


class StoreUsage:
    """One bounded in-memory store: what it holds against its bound.

    `used_bytes` may be an estimate (entries times their typical size) where the store is
    bounded by entries; then `capacity_bytes` is the bound in the same estimate, so that
    used / capacity is the fill ratio. `capacity_entries` is 0 for a store bounded in bytes."""

    __slots__ = ("capacity_bytes", "capacity_entries", "entries", "name", "used_bytes")

    def __init__(
        self,
        name: str,
        used_bytes: int,
        capacity_bytes: int,
        entries: int = 0,
        capacity_entries: int = 0,
    ) -> None:
        self.name = name  # e.g. "openid-connect token cache (services[0].plugins[0])"
        self.used_bytes = used_bytes
        self.capacity_bytes = capacity_bytes
        self.entries = entries
        self.capacity_entries = capacity_entries

    def __repr__(self) -> str:
        return f"StoreUsage({self.name!r}, {self.used_bytes}/{self.capacity_bytes} bytes)"


def collect(reports: Iterable[Iterable[StoreUsage]]) -> tuple[StoreUsage, ...]:
    """One entry per store name, the first report of a name winning (two plugin instances
    sharing one store report it twice), sorted by name."""
    found: dict[str, StoreUsage] = {}
    for report in reports:
        for usage in report:
            found.setdefault(usage.name, usage)
    return tuple(found[name] for name in sorted(found))
