"""The shared token cache (L2) behind the L1: Redis through one seam, the fleet-wide lock, and a
circuit breaker so that a Redis fault costs an IdP call at worst and never fails a request.

Redis (one server, Sentinel or Cluster) is reached through the plugins' Redis client
(fastgw/plugins/common/redis.py), whose breaker this cache uses too. Never on the L1 hit path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import time
import warnings
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import orjson

from fastgw.observability.metrics import Family, counter
from fastgw.observability.ratelog import RateLimitedLog
from fastgw.plugins.common.redis import (
    BREAKER_FAILURES,
    BREAKER_RETRY_SECONDS,
    Breaker,
    Commands,
    RedisEndpoint,
)
from fastgw.plugins.common.redis import connect as connect_redis

from .schema import RedisConfig
from .sealing import Sealer

if TYPE_CHECKING:
    from aiocache.base import BaseCache  # type: ignore[import-untyped]

logger = logging.getLogger("fastgw.oidc")

__all__ = [
    "BREAKER_FAILURES",
    "BREAKER_RETRY_SECONDS",
    "AiocacheStore",
    "Breaker",
    "CommandStore",
    "SharedStore",
    "SharedTokenCache",
    "connect",
]

KEY_PREFIX = "fastgw:oidc:"
LOCK_SUFFIX = ":lock"
# (the breaker's thresholds, BREAKER_FAILURES and BREAKER_RETRY_SECONDS: the Redis client's)
# Redis trouble is logged once per this interval, with a count of the rest.
REDIS_WARNING_INTERVAL_SECONDS = 10.0
# A process waiting for another's fetch polls the entry (and the lock) from the first to the
# second interval, doubling: a local IdP answers in ~5 ms, a remote one in tens of ms.
LOCK_POLL_MIN_SECONDS = 0.005
LOCK_POLL_MAX_SECONDS = 0.05
# Calls in flight at once when the store's pool size is not known (an injected store).
DEFAULT_MAX_CONNECTIONS = 64
# The lock outlives the holder's fetch by this much (verification, the write back to Redis).
LOCK_MARGIN_SECONDS = 1.0

T = TypeVar("T")


class SharedStore(Protocol):
    """The seam: what the token cache needs from a key-value store, TTLs in seconds."""

    async def get_many(self, keys: Sequence[str]) -> Sequence[bytes | None]: ...

    async def put(self, key: str, value: bytes, ttl: float) -> None: ...

    async def put_new(self, key: str, value: bytes, ttl: float) -> bool:
        """SET NX PX: True when the key was absent and is now `value`."""
        ...

    async def delete_if(self, key: str, value: bytes) -> None:
        """Delete `key` only while it holds `value` (a lock released by its holder only)."""
        ...

    async def close(self) -> None: ...


class AiocacheStore:
    """A `SharedStore` over an aiocache cache: RedisCache (single Redis, Sentinel) or, for
    tests and single-process use, SimpleMemoryCache. Values pass as bytes (NullSerializer)."""

    def __init__(self, cache: BaseCache) -> None:
        self._cache = cache

    async def get_many(self, keys: Sequence[str]) -> Sequence[bytes | None]:
        values: list[bytes | None] = await self._cache.multi_get(list(keys))
        return values

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        await self._cache.set(key, value, ttl=float(ttl))  # a float TTL is PSETEX in aiocache

    async def put_new(self, key: str, value: bytes, ttl: float) -> bool:
        try:
            await self._cache.add(key, value, ttl=float(ttl))  # SET NX PX
        except ValueError:  # aiocache's answer to an existing key
            return False
        return True

    async def delete_if(self, key: str, value: bytes) -> None:
        # aiocache's compare-and-delete, the one its own RedLock releases with
        await self._cache._redlock_release(key, value)

    async def close(self) -> None:
        with warnings.catch_warnings():
            # aiocache 0.12 closes redis-py's client with its deprecated close(), not aclose()
            warnings.simplefilter("ignore", DeprecationWarning)
            await self._cache.close()


_RELEASE_SCRIPT = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
)


class CommandStore:
    """A `SharedStore` over the plugins' Redis client (one server, Sentinel or Cluster). An
    entry and its lock share a Cluster hash tag, so a call naming both stays on one node."""

    def __init__(self, commands: Commands) -> None:
        self._commands = commands

    async def get_many(self, keys: Sequence[str]) -> Sequence[bytes | None]:
        values = await self._commands.execute("MGET", *keys)
        assert isinstance(values, list)
        return [value if isinstance(value, bytes) else None for value in values]

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        await self._commands.execute("SET", key, value, "PX", _milliseconds(ttl))

    async def put_new(self, key: str, value: bytes, ttl: float) -> bool:
        reply = await self._commands.execute("SET", key, value, "PX", _milliseconds(ttl), "NX")
        return reply is not None  # OK when set, nil when the key existed

    async def delete_if(self, key: str, value: bytes) -> None:
        await self._commands.execute("EVAL", _RELEASE_SCRIPT, 1, key, value)

    async def close(self) -> None:
        await self._commands.close()


def _milliseconds(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


def endpoint(config: RedisConfig) -> RedisEndpoint:
    """`cluster_cache_redis` as the Redis client takes it."""
    return RedisEndpoint(
        host=config.host,
        port=config.port,
        username=config.username,
        password=config.password,
        database=config.database,
        ssl=config.ssl,
        ssl_verify=config.ssl_verify,
        connect_timeout=config.connect_timeout / 1000,
        timeout=max(config.send_timeout, config.read_timeout) / 1000,
        pool_size=config.keepalive_pool_size,
        sentinel_master=config.sentinel_master,
        sentinel_nodes=config.sentinel_nodes,
        sentinel_username=config.sentinel_username,
        sentinel_password=config.sentinel_password,
        cluster_nodes=config.cluster_nodes,
        cluster_max_redirections=config.cluster_max_redirections,
    )


def connect(config: RedisConfig) -> SharedStore:
    """A store for `cluster_cache_redis`; connects lazily, so a Redis down at start is fine."""
    return CommandStore(connect_redis(endpoint(config)))


# -- what is shared ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SharedToken:
    """A token as the IdP answered it; each reader verifies it again and plans its own
    lifetime from these (so its refresh time is the writer's)."""

    access_token: str = field(repr=False)
    fetched_at: float
    expires_in: float | None


@dataclass(frozen=True, slots=True)
class SharedRejection:
    """The IdP rejected these credentials (invalid_client): remembered fleet-wide."""

    reason: str


Shared = SharedToken | SharedRejection


@dataclass(slots=True)
class SharedCacheStats:
    """Counters of one plugin instance's shared cache (plain integers, read by /metrics)."""

    hits: int = 0
    misses: int = 0
    errors: int = 0  # Redis calls that failed or timed out
    skipped: int = 0  # calls not made because the breaker was open
    rejected: int = 0  # values that failed authentication or verification: ignored
    lock_waits: int = 0  # misses that waited for another process's fetch
    writes: int = 0


@dataclass(frozen=True, slots=True)
class Claim:
    """The outcome of asking for the fleet lock: `lease` when this process fetches (and must
    release it), `found` when another process fetched meanwhile, neither when this process
    fetches without the lock (Redis unavailable, or the holder overran its lease)."""

    lease: bytes | None = field(default=None, repr=False)
    found: Shared | None = None


_NO_CLAIM = Claim()


class SharedTokenCache:
    """Sealed entries and a fleet lock per client in a `SharedStore`. Every call is bounded by
    `timeout` and guarded by the breaker; a failure is counted, logged (rate-limited) and
    answered as a miss, so callers never see a Redis error."""

    def __init__(
        self,
        store: SharedStore,
        sealer: Sealer,
        *,
        timeout: float,
        lock_lease: float,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        # redis-py's pools refuse a call past their size (MaxConnectionsError) rather than
        # queue it: a burst of misses waits here for a connection instead, within the timeout
        self._connections = asyncio.Semaphore(max_connections)
        self._sealer = sealer
        self._timeout = timeout
        self._lock_lease = lock_lease
        self._monotonic = monotonic
        self._breaker = Breaker()
        self.stats = SharedCacheStats()
        self._warnings = RateLimitedLog(
            logger, logging.WARNING, REDIS_WARNING_INTERVAL_SECONDS, monotonic
        )
        self._tamper_warnings = RateLimitedLog(
            logger, logging.WARNING, REDIS_WARNING_INTERVAL_SECONDS, monotonic
        )

    @property
    def available(self) -> bool:
        return not self._breaker.open

    def slot(self, material: str) -> str:
        return self._sealer.slot(material)

    # -- entries ----------------------------------------------------------------------------------

    async def load(self, slot: str) -> Shared | None:
        values = await self._call(lambda: self._store.get_many((_entry_key(slot),)))
        if values is None:
            return None  # counted as an error or a skip
        found = self._decode(slot, values[0])
        if found is None:
            self.stats.misses += 1
        else:
            self.stats.hits += 1
        return found

    async def save_token(self, slot: str, token: SharedToken, ttl: float) -> None:
        document = {
            "kind": "token",
            "access_token": token.access_token,
            "fetched_at": token.fetched_at,
            "expires_in": token.expires_in,
        }
        await self._save(slot, document, ttl)

    async def save_rejection(self, slot: str, rejection: SharedRejection, ttl: float) -> None:
        await self._save(slot, {"kind": "rejected", "reason": rejection.reason}, ttl)

    async def _save(self, slot: str, document: dict[str, Any], ttl: float) -> None:
        if ttl <= 0:
            return
        sealed = self._sealer.seal(slot, orjson.dumps(document))

        async def put() -> bool:
            await self._store.put(_entry_key(slot), sealed, ttl)
            return True

        if await self._call(put):
            self.stats.writes += 1

    def count_rejected(self) -> None:
        """A value that opened but whose token failed verification."""
        self.stats.rejected += 1

    # -- the fleet lock ---------------------------------------------------------------------------

    async def claim(
        self, slot: str, unusable: Shared | None = None, within: float | None = None
    ) -> Claim:
        """Take the fleet lock for `slot`, or wait (bounded by the lease, and by `within`
        seconds: what is left of the caller's deadline) for its holder's outcome. A holder that
        dies leaves a lock that expires with its lease; a holder that fails releases it, and one
        waiter takes over. `unusable` is an entry the caller found and could not use (its token
        failed verification): it does not count as an outcome."""
        wait = self._lock_lease if within is None else min(self._lock_lease, within)
        deadline = self._monotonic() + wait
        lock_key = _lock_key(slot)
        lease = secrets.token_bytes(16)  # only its holder can release the lock
        waited = False
        while True:
            taken = await self._call(lambda: self._store.put_new(lock_key, lease, self._lock_lease))
            if taken is None:
                return _NO_CLAIM  # Redis unavailable: fetch without the lock
            if taken:
                # the entry may have been written (and the lock released) between the
                # caller's miss and this lock: look once more before asking the IdP
                found = await self._recheck(slot)
                if found is None or found == unusable:
                    return Claim(lease=lease)
                await self.release(slot, lease)
                self.stats.hits += 1
                return Claim(found=found)
            if not waited:
                self.stats.lock_waits += 1
                waited = True
            found, holder_gone = await self._wait(slot, deadline, unusable)
            if found is not None:
                self.stats.hits += 1
                return Claim(found=found)
            if not holder_gone or self._monotonic() >= deadline:
                return _NO_CLAIM

    async def _recheck(self, slot: str) -> Shared | None:
        values = await self._call(lambda: self._store.get_many((_entry_key(slot),)))
        # a bad value here was counted by the load just before
        return None if values is None else self._decode(slot, values[0], count=False)

    async def _wait(
        self, slot: str, deadline: float, unusable: Shared | None
    ) -> tuple[Shared | None, bool]:
        """Poll the entry and the lock: (the entry, _) once written, (None, True) when the lock
        went away without one, (None, False) at the deadline or when Redis fails."""
        keys = (_entry_key(slot), _lock_key(slot))
        delay = LOCK_POLL_MIN_SECONDS
        while self._monotonic() + delay < deadline:
            await asyncio.sleep(delay)
            delay = min(delay * 2, LOCK_POLL_MAX_SECONDS)
            values = await self._call(lambda: self._store.get_many(keys))
            if values is None:
                return None, False
            raw, lock = values
            found = self._decode(slot, raw, count=False)
            if found is not None and found != unusable:
                return found, False
            if lock is None:
                return None, True
        return None, False

    async def release(self, slot: str, lease: bytes) -> None:
        await self._call(lambda: self._store.delete_if(_lock_key(slot), lease))

    # -- plumbing ---------------------------------------------------------------------------------

    async def _call(self, operation: Callable[[], Awaitable[T]]) -> T | None:
        """`operation()` within the timeout; None when it failed or the breaker skipped it."""
        breaker = self._breaker
        if not breaker.allow(self._monotonic()):
            self.stats.skipped += 1
            return None
        try:
            async with asyncio.timeout(self._timeout), self._connections:
                result = await operation()
        except Exception as error:  # any Redis fault degrades to "no shared cache"
            self.stats.errors += 1
            breaker.failed(self._monotonic())
            # the class and the client's message (an address, "Connection refused", "OOM
            # command not allowed", "invalid username-password pair"), never a key or a value
            reason = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
            self._warnings.emit(
                "token cache redis unavailable (%s); misses go to the identity provider", reason
            )
            return None
        if breaker.succeeded():
            logger.info("token cache redis reachable again")
        return result

    def _decode(self, slot: str, raw: bytes | None, *, count: bool = True) -> Shared | None:
        if raw is None:
            return None
        plaintext = self._sealer.open(slot, raw)
        if plaintext is None:
            if not count:
                return None
            self.stats.rejected += 1
            self._tamper_warnings.emit(
                "ignored a token cache value that failed authentication (written without "
                "this cluster_cache_secret)"
            )
            return None
        try:
            document = orjson.loads(plaintext)
            if document["kind"] == "rejected":
                return SharedRejection(str(document["reason"]))
            expires_in = document["expires_in"]
            return SharedToken(
                str(document["access_token"]),
                float(document["fetched_at"]),
                None if expires_in is None else float(expires_in),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            self.stats.rejected += 1  # sealed with our secret yet malformed: an old format
            return None

    async def close(self) -> None:
        with contextlib.suppress(Exception):  # closing a broken connection is worth no error
            await self._store.close()


def _entry_key(slot: str) -> str:
    # the braces are Redis Cluster's hash tag: the entry and its lock live in one slot
    return f"{KEY_PREFIX}{{{slot}}}"


def _lock_key(slot: str) -> str:
    return f"{KEY_PREFIX}{{{slot}}}{LOCK_SUFFIX}"


def metric_families(stats: SharedCacheStats, instance: str) -> list[Family]:
    """One plugin instance's shared cache counters (fastgw.observability.metrics)."""
    lookups = counter(
        "fastgw_oidc_token_cache_l2_total",
        "Shared (Redis) token cache lookups by result.",
        ("instance", "result"),
    )
    for result, count in (
        ("hit", stats.hits),
        ("miss", stats.misses),
        ("error", stats.errors),
        ("skipped", stats.skipped),
        ("rejected", stats.rejected),
    ):
        lookups.add((instance, result), count)
    return [
        lookups,
        counter(
            "fastgw_oidc_token_cache_l2_writes_total",
            "Entries written to the shared cache.",
            ("instance",),
        ).add((instance,), stats.writes),
        counter(
            "fastgw_oidc_token_cache_lock_waits_total",
            "Misses that waited for another process's token request (fleet-wide single-flight).",
            ("instance",),
        ).add((instance,), stats.lock_waits),
    ]
