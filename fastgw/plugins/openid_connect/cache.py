"""Token caching in the process: the L1 dict the hot path reads, negative entries, TTL math, and
the single-flight of fetches. Policy is sans-IO (every decision takes `now`); the shared cache
across processes is l2.py's.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import math
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from .credentials import ClientCredentials
from .errors import AuthError
from .schema import OidcConfig

# Clients in the L1 (and, separately, in the negative cache). A cached token costs ~2-3 KiB (the
# JWT in its header bytes, its claims), so the bound keeps the cache under ~300 MiB even when
# filled; only real clients get positive entries, and random credentials only negative ones.
L1_MAX_ENTRIES = 100_000
# A client presenting a Basic header is found under two keys (the raw-header alias the hot path
# uses and the canonical Kong-shaped key), so the L1's key bound is twice its client bound.
L1_KEYS_PER_CLIENT = 2
# When full, drop expired entries, then this share of the oldest: one O(n) sweep buys room for
# many inserts, so the amortized cost per insert stays constant.
EVICT_FRACTION = 0.1

# Refresh ahead of expiry by min(60 s, 10% of the lifetime): a minute is ample for an IdP round
# trip even under load, and 10% keeps short-lived tokens (say 30 s) from refreshing constantly.
# But never by less than 1 s (or half the lifetime, for tokens under 2 s): 10% of a 4 s token is
# 0.4 s, which a slow IdP round trip plus verification on a busy host can overrun, making a
# request wait for the refresh after all (seen in the refresh-ahead integration test).
REFRESH_AHEAD_MAX_SECONDS = 60.0
REFRESH_AHEAD_FRACTION = 0.1
REFRESH_AHEAD_MIN_SECONDS = 1.0
# After a failed background refresh, hits keep serving the token this long before the next try,
# so an IdP outage costs it one call per interval per client rather than one per request.
REFRESH_RETRY_SECONDS = 5.0

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


def credentials_cache_key(
    issuer: str, credentials: ClientCredentials, salt: str | None, scope: str | None
) -> str:
    """Kong's cache key: base64url(SHA-256(iss#grant_type=client_credentials&id&secret[&salt]
    [&scope])). Shared with other processes through the L2; the secret is only ever hashed."""
    material = (
        f"{issuer}#grant_type=client_credentials&{credentials.client_id}"
        f"&{credentials.client_secret}"
    )
    if salt:
        material += f"&{salt}"
    if scope:
        material += f"&{scope}"
    digest = hashlib.sha256(material.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


@dataclass(frozen=True, slots=True)
class Token:
    """A verified access token, as handed to embedders."""

    access_token: str = field(repr=False)
    expires_at: float | None  # epoch seconds of the token's own expiry; None when unknown
    claims: Mapping[str, Any] = field(default_factory=dict)  # verified; {} for opaque tokens


@dataclass(frozen=True, slots=True)
class TtlPolicy:
    cache_ttl: float
    ttl_min: float | None
    ttl_max: float | None
    resurrect: float

    @classmethod
    def from_config(cls, config: OidcConfig) -> TtlPolicy:
        return cls(
            config.cache_ttl, config.cache_ttl_min, config.cache_ttl_max, config.cache_ttl_resurrect
        )


@dataclass(frozen=True, slots=True)
class Lifetime:
    """Absolute epoch times: pure hit before `refresh_at`, hit + background refresh before
    `expires_at`, and past it a fetch; `stale_until` bounds serving when the IdP fails."""

    refresh_at: float
    expires_at: float
    stale_until: float
    valid_until: float  # the token's own expiry (inf when unknown)


def plan_lifetime(
    policy: TtlPolicy, now: float, expires_in: float | None, exp: float | None
) -> Lifetime:
    """TTL from `expires_in`, else `exp - now`, else `cache_ttl`, clamped by min/max (as Kong);
    unlike Kong, never past the token's own expiry."""
    valid_until = math.inf
    if expires_in is not None:
        ttl = expires_in
        valid_until = now + expires_in
    elif exp is not None:
        ttl = exp - now
    else:
        ttl = policy.cache_ttl
    if exp is not None:
        valid_until = min(valid_until, exp)
    if policy.ttl_min is not None:
        ttl = max(ttl, policy.ttl_min)
    if policy.ttl_max is not None:
        ttl = min(ttl, policy.ttl_max)
    expires_at = max(now, min(now + ttl, valid_until))
    return lifetime_until(now, expires_at, valid_until, policy.resurrect)


def lifetime_until(now: float, expires_at: float, valid_until: float, resurrect: float) -> Lifetime:
    lifetime = expires_at - now
    margin = min(
        REFRESH_AHEAD_MAX_SECONDS,
        max(REFRESH_AHEAD_FRACTION * lifetime, min(REFRESH_AHEAD_MIN_SECONDS, lifetime / 2)),
    )
    stale_until = min(expires_at + resurrect, valid_until)
    return Lifetime(expires_at - max(margin, 0.0), expires_at, stale_until, valid_until)


class Entry:
    """One cached token with what the hot path needs prebuilt. Mutable so that a refresh updates
    every L1 key that points at it (a Basic-header alias and the canonical key).

    The token is kept once, inside the prebuilt header value (which ends with it); the `Token`
    handed to embedders is rebuilt from it on demand, off the proxy's hot path.
    """

    __slots__ = (
        "claims",
        "expires_at",
        "header_value",
        "refresh_at",
        "refreshing",
        "stale_until",
        "token_expires_at",
        "token_offset",
        "upstream_headers",
        "valid_until",
    )

    def __init__(
        self,
        token: Token,
        header_value: bytes,
        upstream_headers: tuple[tuple[bytes, bytes | None], ...],
        lifetime: Lifetime,
    ) -> None:
        self.header_value = header_value  # e.g. b"Bearer <token>", set upstream as is
        self.token_offset = len(header_value) - len(token.access_token)
        self.token_expires_at = token.expires_at
        self.claims = token.claims
        # claim headers: (name, value), None removes a header the client may have sent
        self.upstream_headers = upstream_headers
        self.refresh_at = lifetime.refresh_at
        self.expires_at = lifetime.expires_at
        self.stale_until = lifetime.stale_until
        self.valid_until = lifetime.valid_until
        self.refreshing = False

    @property
    def token(self) -> Token:
        access_token = self.header_value[self.token_offset :].decode("ascii")
        return Token(access_token, self.token_expires_at, self.claims)

    def adopt(self, fresh: Entry) -> None:
        self.header_value = fresh.header_value
        self.token_offset = fresh.token_offset
        self.token_expires_at = fresh.token_expires_at
        self.claims = fresh.claims
        self.upstream_headers = fresh.upstream_headers
        self.refresh_at = fresh.refresh_at
        self.expires_at = fresh.expires_at
        self.stale_until = fresh.stale_until
        self.valid_until = fresh.valid_until

    def refresh_failed(self, now: float) -> None:
        """Stale-if-error: the IdP failed, so keep serving up to `stale_until` (never past the
        token's own expiry), trying again every REFRESH_RETRY_SECONDS."""
        self.expires_at = max(self.expires_at, self.stale_until)
        self.refresh_at = min(now + REFRESH_RETRY_SECONDS, self.expires_at)

    def kill(self) -> None:
        """The IdP now rejects these credentials: stop serving the token at once."""
        self.refresh_at = self.expires_at = self.stale_until = -math.inf


class Rejection:
    __slots__ = ("error", "until")

    def __init__(self, error: AuthError, until: float) -> None:
        self.error = error  # never raised as is (a re-raise would grow its traceback forever)
        self.until = until


def _evict(
    table: dict[Any, Any], limit: int, now: float, alive_until: Callable[[Any], float]
) -> int:
    """Make room in `table`; returns how many live entries had to go (expired ones are not
    counted: they were dead anyway)."""
    for key in [key for key, value in table.items() if alive_until(value) <= now]:
        del table[key]
    excess = len(table) - int(limit * (1 - EVICT_FRACTION))
    if excess > 0:
        for key in list(itertools.islice(table, excess)):  # dicts keep insertion order
            del table[key]
        return excess
    return 0


class TokenCache:
    """The L1: plain dicts, no lock (one event loop), bounded in entries."""

    def __init__(self, *, enabled: bool = True, max_entries: int = L1_MAX_ENTRIES) -> None:
        self.entries: dict[Hashable, Entry] = {}
        self.rejections: dict[Hashable, Rejection] = {}
        self.enabled = enabled
        self.evictions = 0  # live entries dropped at the bound (keys, not clients)
        self._max_entries = max_entries
        self._max_keys = max_entries * L1_KEYS_PER_CLIENT

    def store(self, keys: Iterable[Hashable], entry: Entry, now: float) -> None:
        if not self.enabled:
            return
        entries = self.entries
        for key in keys:
            if key not in entries and len(entries) >= self._max_keys:
                self.evictions += _evict(entries, self._max_keys, now, _entry_alive_until)
            entries[key] = entry

    def reject(self, keys: Iterable[Hashable], error: AuthError, until: float, now: float) -> None:
        rejections = self.rejections
        for key in keys:
            if key not in rejections and len(rejections) >= self._max_entries:
                self.evictions += _evict(rejections, self._max_entries, now, _rejection_alive_until)
            rejections[key] = Rejection(error, until)

    def rejection(self, key: Hashable, now: float) -> AuthError | None:
        rejection = self.rejections.get(key)
        if rejection is None:
            return None
        if now < rejection.until:
            return rejection.error
        del self.rejections[key]
        return None


def _entry_alive_until(entry: Entry) -> float:
    return entry.stale_until


def _rejection_alive_until(rejection: Rejection) -> float:
    return rejection.until


class SingleFlight(Generic[K, T]):
    """One fetch per key at a time; later callers wait for its result or its exception.

    The fetch runs in its own task and callers wait through `asyncio.shield`, so a caller that is
    cancelled (client gone) does not cancel the fetch the others are waiting for.
    """

    def __init__(self) -> None:
        self._tasks: dict[K, asyncio.Task[T]] = {}
        self.joins = 0  # callers that waited for a fetch already under way

    def __contains__(self, key: K) -> bool:
        return key in self._tasks

    async def run(self, key: K, fetch: Callable[[], Awaitable[T]]) -> T:
        task = self._tasks.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(fetch())  # type: ignore[arg-type]
            self._tasks[key] = task
            task.add_done_callback(lambda done: self._done(key, done))
        else:
            self.joins += 1
        return await asyncio.shield(task)

    def _done(self, key: K, task: asyncio.Task[T]) -> None:
        if self._tasks.get(key) is task:
            del self._tasks[key]
        if not task.cancelled():
            task.exception()  # retrieved: a fetch whose waiters all left is not an error

    def cancel_all(self) -> None:
        for task in self._tasks.values():
            task.cancel()
