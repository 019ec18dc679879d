"""The process's token cache (L1): its entries, negative entries and their bounds, the hit path
every cached request runs (`TokenCache.hit`), and the TTL math that plans each entry's life.

Sans-IO (every decision reads `now`); compiled (build_info.COMPILED_MODULES), as the hit runs here.
The shared cache across processes is l2.py's; the single-flight of fetches flights.py's.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import math
import secrets
import time
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from fastgw.plugins.api import Authenticated, StoreUsage

from .credentials import ClientCredentials
from .errors import AuthError
from .schema import OidcConfig
from .stats import OidcStats

# Clients in the L1 (and, separately, in the negative cache). A cached token costs ~2-3 KiB (the
# JWT in its header bytes, its claims), so the bound keeps the cache under ~300 MiB even when
# filled; only real clients get positive entries, and random credentials only negative ones.
L1_MAX_ENTRIES = 100_000
# What one client's entry typically holds in memory (both keys, the token's header bytes, its
# claims), and one key of a remembered rejection (the key, an error without its traceback): for
# the stores' reports, which count entries (rejections by key, as they are bounded) and estimate
# bytes.
ENTRY_BYTES = 2560
REJECTION_BYTES = 200
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
# The random parameters of header keys (BLAKE2s's salt and personalization, 8 bytes each):
# 128 bits, so that no one can precompute a header's key.
HEADER_KEY_SALT_BYTES = 16
_BLAKE2S_SALT_BYTES = 8
# BLAKE2s's methods taken once from the type: compiled, calling one on a hasher skips looking
# it up on the object (~250 instructions of the three calls a key costs; bench/instructions.py
# --clients 100000: 45,593 -> 45,342).
_COPY: Final = hashlib.blake2s.copy
_UPDATE: Final = hashlib.blake2s.update
_DIGEST: Final = hashlib.blake2s.digest


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
        "principal",
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
        principal: Authenticated | None = None,
    ) -> None:
        self.header_value = header_value  # e.g. b"Bearer <token>", set upstream as is
        self.token_offset = len(header_value) - len(token.access_token)
        self.token_expires_at = token.expires_at
        self.claims = token.claims
        # claim headers: (name, value), None removes a header the client may have sent
        self.upstream_headers = upstream_headers
        # who the caller is (Kong's authenticated consumer and credential), for the later steps
        self.principal = principal
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
        self.principal = fresh.principal
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


class HeaderKeys:
    """L1 keys for credentials as a request header carries them: the 256-bit BLAKE2s digest of
    the raw value under per-process random parameters (its salt and personalization). One
    digest over bytes the request already holds (no base64 decode), and no secret kept as a key.

    BLAKE2s because its parameters enter its initial state, not a block of their own: a header
    of up to 64 bytes is one compression (~1.3k instructions), where SHA-256 over a salt prefix
    took two and OpenSSL's context copies (~7.6k in all). This digest is paid by every request
    whose connection sent another header before (many clients over one connection). Copying a
    hasher primed with the parameters is cheaper than passing them on every call."""

    __slots__ = ("_primed",)

    def __init__(self) -> None:
        parameters = secrets.token_bytes(HEADER_KEY_SALT_BYTES)
        self._primed = hashlib.blake2s(
            salt=parameters[:_BLAKE2S_SALT_BYTES], person=parameters[_BLAKE2S_SALT_BYTES:]
        )

    def key(self, value: bytes) -> bytes:
        hasher = _COPY(self._primed)
        _UPDATE(hasher, value)
        return _DIGEST(hasher)


class TokenCache:
    """The L1: plain dicts, no lock (one event loop), bounded in entries. `hit` is the hit path
    of every cached request; what it does not answer goes to the authenticator's slow path.

    Keys are a header's digest (`header_key`, the hot path's) or the Kong-shaped credentials key;
    `keys` may be shared with another cache, so that one digest finds a header in either.
    """

    def __init__(
        self,
        *,
        enabled: bool = True,
        max_entries: int = L1_MAX_ENTRIES,
        clock: Callable[[], float] = time.time,
        stats: OidcStats | None = None,
        keys: HeaderKeys | None = None,
    ) -> None:
        self.entries: dict[Hashable, Entry] = {}
        self.rejections: dict[Hashable, Rejection] = {}
        self.enabled = enabled
        self.evictions = 0  # live entries dropped at the bound (keys, not clients)
        self.stats = stats if stats is not None else OidcStats()
        self.keys = keys if keys is not None else HeaderKeys()
        self._clock = clock  # epoch seconds: token `exp` is in those
        self.max_entries = max_entries
        self._max_keys = max_entries * L1_KEYS_PER_CLIENT

    # -- the hit path -----------------------------------------------------------------------------

    def header_key(self, value: bytes) -> bytes:
        return self.keys.key(value)

    def hit(self, key: Hashable) -> Entry | None:
        """The entry under `key` when it serves as it is (its refresh not due yet), counted as a
        hit; None when the slow path must decide (a refresh due, expired, rejected, absent)."""
        entry = self.entries.get(key)
        if entry is not None and self._clock() < entry.refresh_at:
            self.stats.hits += 1
            return entry
        return None

    # -- the slow path ----------------------------------------------------------------------------

    def get(self, key: Hashable) -> Entry | None:
        """The entry under `key` in whatever state (due for refresh, expired, killed)."""
        return self.entries.get(key)

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
            if key not in rejections and len(rejections) >= self.max_entries:
                self.evictions += _evict(rejections, self.max_entries, now, _rejection_alive_until)
            rejections[key] = Rejection(error, until)

    def rejection(self, key: Hashable, now: float) -> AuthError | None:
        rejection = self.rejections.get(key)
        if rejection is None:
            return None
        if now < rejection.until:
            return rejection.error
        del self.rejections[key]
        return None

    def clients(self) -> int:
        """Distinct cached entries (a client is under one or two keys)."""
        return len({id(entry) for entry in self.entries.values()})

    def usage(self, what: str, rejected: str) -> list[StoreUsage]:
        """The entries and the rejections against their bound (bytes estimated per entry)."""
        bound = self.max_entries
        clients, rejections = self.clients(), len(self.rejections)
        return [
            StoreUsage(what, clients * ENTRY_BYTES, bound * ENTRY_BYTES, clients, bound),
            StoreUsage(
                rejected, rejections * REJECTION_BYTES, bound * REJECTION_BYTES, rejections, bound
            ),
        ]


def _entry_alive_until(entry: Entry) -> float:
    return entry.stale_until


def _rejection_alive_until(rejection: Rejection) -> float:
    return rejection.until
