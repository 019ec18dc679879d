"""`proxy-cache`: Kong's plugin of that name with the memory strategy: responses kept in a
bounded store per named memory bound, answered again without the upstream while fresh.

The config is `schema.py`, the step and the response filter `handler.py`, the key `key.py`,
the store `store.py`, Cache-Control and media types `directives.py`.
"""

from __future__ import annotations

from typing import Any

from fastgw.config.model import DEFAULT_MEMORY_STORES, Entities
from fastgw.config.schema import Reader, read_schema
from fastgw.plugins.building import PluginRuntime, SpecBase

from .handler import PRIORITY, Cache, ProxyCache
from .schema import CACHE, CacheConfig, linked
from .store import MemoryStore, shared_store

__all__ = ["PRIORITY", "SPEC", "CacheConfig", "MemoryStore", "ProxyCache"]


class _Spec(SpecBase):
    name = "proxy-cache"

    def parse_config(self, reader: Reader) -> CacheConfig:
        return read_schema(reader, CACHE)

    def link(
        self, config: CacheConfig, entities: Entities, path: str, problems: list[tuple[str, str]]
    ) -> Any:
        return linked(config, entities, path, problems)

    def build(self, config: CacheConfig, runtime: PluginRuntime) -> ProxyCache:
        capacity = config.capacity or dict(DEFAULT_MEMORY_STORES)[config.dictionary_name]
        store = shared_store(runtime.shared, config.dictionary_name, capacity)
        return ProxyCache(Cache(config, store))


SPEC = _Spec()
