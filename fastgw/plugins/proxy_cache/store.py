"""proxy-cache's memory strategy: one store per named memory bound (Kong's shared dict, named by
`memory.dictionary_name`, sized in `_fastgw.memory_stores`), per worker, shared by every
proxy-cache instance that names it and kept across reloads.

Bounded in bytes: an entry counts its key, body and fields plus a fixed overhead; storing one
evicts the least recently used entries until it fits (Kong's shared dicts evict the same way),
and an entry past its storage TTL is dropped when it is next looked up. Responses being
received for the store count against the same bound while they arrive, so the memory the
cache holds, stored and in flight, stays under twice its capacity.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Final

from fastgw.plugins.api import StoreUsage

# What an entry costs beyond its bytes: the objects that hold it (the entry, its key's slot in
# the table, the field tuples), a measured estimate on CPython 3.11.
ENTRY_OVERHEAD: Final = 512
FIELD_OVERHEAD: Final = 64  # one (name, value) tuple and its two bytes objects
# The key of the gateway's shared plugin state (PluginRuntime.shared) holding the stores.
SHARED_KEY: Final = "proxy-cache memory stores"

Fields = tuple[tuple[bytes, bytes], ...]


class Entry:
    """One stored response. Times are time.monotonic() seconds."""

    __slots__ = (
        "body",
        "expires_at",
        "fields",
        "hit_age",
        "hit_fields",
        "hit_lines",
        "hit_shown",
        "key_hex",
        "size",
        "status",
        "stored_at",
        "ttl",
    )

    def __init__(
        self,
        status: int,
        fields: Fields,
        body: bytes,
        stored_at: float,
        ttl: float,
        storage_ttl: float,
        key_hex: bytes,
    ) -> None:
        self.status = status
        self.fields = fields
        self.body = body
        self.stored_at = stored_at
        self.ttl = ttl  # how long it is fresh
        self.expires_at = stored_at + storage_ttl if storage_ttl > 0 else 0.0  # 0: never
        self.key_hex = key_hex  # X-Cache-Key
        self.size = entry_size(len(key_hex), fields, len(body))
        # the fields of a hit, made once per second of age (handler.py)
        self.hit_age = -1
        self.hit_shown = 0
        self.hit_fields: Sequence[tuple[bytes, bytes]] = ()
        self.hit_lines = b""  # hit_fields written out


def entry_size(key_length: int, fields: Fields, body_length: int) -> int:
    # the key is held twice: the table's key (the raw cache key, about as long) and key_hex
    fields_size = sum(len(name) + len(value) + FIELD_OVERHEAD for name, value in fields)
    return ENTRY_OVERHEAD + 2 * key_length + fields_size + body_length


class MemoryStore:
    """A bounded LRU of entries by cache key."""

    __slots__ = (
        "capacity",
        "entries",
        "evictions",
        "expired",
        "name",
        "pending",
        "reporter",
        "used",
    )

    def __init__(self, name: str, capacity: int) -> None:
        self.name = name
        self.capacity = capacity
        self.entries: OrderedDict[bytes, Entry] = OrderedDict()
        self.used = 0  # bytes of the stored entries
        self.pending = 0  # bytes of responses being received for the store
        self.evictions = 0
        self.expired = 0
        # the instance that reports this store (stores()): one, however many name it
        self.reporter: object = None

    def get(self, key: bytes, now: float) -> Entry | None:
        entry = self.entries.get(key)
        if entry is None:
            return None
        expires_at = entry.expires_at
        if expires_at and now >= expires_at:
            self.expired += 1
            self.remove(key)
            return None
        self.entries.move_to_end(key)
        return entry

    def put(self, key: bytes, entry: Entry) -> bool:
        """Store `entry`, evicting the least recently used; False when it cannot fit at all."""
        if entry.size > self.capacity:
            return False
        self.remove(key)
        entries = self.entries
        while self.used + entry.size > self.capacity and entries:
            _, evicted = entries.popitem(last=False)
            self.used -= evicted.size
            self.evictions += 1
        entries[key] = entry
        self.used += entry.size
        return True

    def remove(self, key: bytes) -> None:
        entry = self.entries.pop(key, None)
        if entry is not None:
            self.used -= entry.size

    def reserve(self, size: int) -> bool:
        """Room for `size` more bytes of responses in flight (never more than the capacity)."""
        if self.pending + size > self.capacity:
            return False
        self.pending += size
        return True

    def release(self, size: int) -> None:
        self.pending -= size

    def resize(self, capacity: int) -> None:
        """A reload gave the bound another size: evict down to it."""
        self.capacity = capacity
        while self.used > capacity and self.entries:
            _, evicted = self.entries.popitem(last=False)
            self.used -= evicted.size
            self.evictions += 1

    def clear(self) -> None:
        self.entries.clear()
        self.used = 0

    def usage(self) -> StoreUsage:
        return StoreUsage(self.name, self.used, self.capacity, len(self.entries))


def shared_store(shared: dict[str, object], name: str, capacity: int) -> MemoryStore:
    """The gateway's store of `name`, made on first use, resized when its bound changed."""
    stores = shared.setdefault(SHARED_KEY, {})
    assert isinstance(stores, dict)
    store = stores.get(name)
    if not isinstance(store, MemoryStore):
        store = stores[name] = MemoryStore(name, capacity)
    elif store.capacity != capacity:
        store.resize(capacity)
    return store
