"""`policy: redis`: the counts of a whole fleet in one Redis, Kong's two ways.

`sync_rate: -1` (realtime): each request is one round trip, one script that reads every
period's counter and counts the request in all of them only if none is used up, atomically;
so N gateways x M workers let exactly `limit` requests through a window. `sync_rate: s > 0`
(batched): a request is decided on the last counts read from Redis plus what this worker
counted since, with no round trip; every `s` seconds the worker adds its counts to Redis and
reads the totals back (an identifier seen for the first time in a window is read at once).

The keys: `<namespace>:ratelimit:<route>:<service>:<identifier>:<window start, ms>:<period>`,
Kong's key after the fleet's `_fastgw.namespace` (two fleets sharing a Redis never count
together); each expires with its period (Kong's EXPIRATION). While Redis is unavailable the
breaker sends requests to the plugin's fallback (the worker's own counters, or a 500).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, Final

from fastgw.observability.ratelog import RateLimitedLog
from fastgw.plugins.api import RequestContext
from fastgw.plugins.common.redis import (
    Breaker,
    RedisEndpoint,
    RedisReplyError,
    Script,
    SingleRedis,
)
from fastgw.plugins.common.resp import Reply

from .stats import Stats
from .windows import Period

if TYPE_CHECKING:
    from .handler import RateLimiting

logger = logging.getLogger("fastgw.rate_limiting")

# Kong's EMPTY_UUID: the route or service part of the key of a plugin not scoped to one
EMPTY_UUID: Final = "00000000-0000-0000-0000-000000000000"
# Redis trouble is logged once per this interval, with a count of the rest.
WARNING_INTERVAL_SECONDS: Final = 10.0
# Counters added to Redis per script call when a batch is flushed (each key is a few dozen
# bytes of the call; Redis runs a script alone, so a call stays short).
FLUSH_CHUNK: Final = 500

# KEYS: one counter per period; ARGV: the limits, then the periods' lengths in seconds.
# The counts before this request come back; it is counted everywhere only when no period is
# used up (a refused request takes nothing from the longer periods' allowance).
COUNT: Final = Script.of(
    """
local n = #KEYS
local counts = {}
local allowed = true
for i = 1, n do
  local count = tonumber(redis.call('GET', KEYS[i]) or '0')
  counts[i] = count
  if tonumber(ARGV[i]) - count <= 0 then allowed = false end
end
if allowed then
  for i = 1, n do
    if redis.call('INCR', KEYS[i]) == 1 then redis.call('EXPIRE', KEYS[i], ARGV[n + i]) end
  end
end
return counts
"""
)
# KEYS: counters; ARGV: what to add to each, then each one's length in seconds. The totals
# come back.
ADD: Final = Script.of(
    """
local n = #KEYS
local totals = {}
for i = 1, n do
  local added = tonumber(ARGV[i])
  local total = redis.call('INCRBY', KEYS[i], added)
  if total == added then redis.call('EXPIRE', KEYS[i], ARGV[n + i]) end
  totals[i] = total
end
return totals
"""
)


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%b\r\n" % (len(value), value)


def key_prefix(namespace: str, route: str | None, service: str | None) -> str:
    """What every key of one plugin instance begins with (Kong's key after the namespace)."""
    return f"{namespace}:ratelimit:{route or EMPTY_UUID}:{service or EMPTY_UUID}:"


class RedisCounts:
    """What both ways share: the connection, the breaker, the keys, the warnings."""

    def __init__(
        self,
        endpoint: RedisEndpoint,
        prefix: str,
        periods: tuple[Period, ...],
        fault_tolerant: bool,
        stats: Stats,
    ) -> None:
        self.client = SingleRedis(endpoint)
        self.endpoint = endpoint
        self.prefix = prefix
        self.periods = periods
        self.breaker = Breaker()
        self.stats = stats
        outcome = "counted locally" if fault_tolerant else "answered 500 (fault_tolerant is false)"
        self._warning = f"rate-limiting redis unavailable (%s); requests are {outcome}"
        self._warnings = RateLimitedLog(logger, logging.WARNING, WARNING_INTERVAL_SECONDS)
        # the COUNT call without its keys: the array's head and the limits and lengths
        count = len(periods)
        self._head = b"*%d\r\n%b%b%b" % (
            3 + 3 * count,
            _bulk(b"EVALSHA"),
            _bulk(COUNT.sha.encode()),
            _bulk(b"%d" % count),
        )
        self._tail = b"".join(
            [_bulk(bytes(period.limit_text)) for period in periods]
            + [_bulk(b"%d" % period.expiration) for period in periods]
        )

    def decide(
        self, plugin: RateLimiting, ctx: RequestContext, identifier: str, now: int
    ) -> Awaitable[None] | None:
        raise NotImplementedError

    def keys(self, identifier: str) -> list[str]:
        prefix = f"{self.prefix}{identifier}:"
        return [f"{prefix}{period.start * 1000}:{period.name}" for period in self.periods]

    def count_payload(self, keys: Sequence[str]) -> bytes:
        return b"".join([self._head, *[_bulk(key.encode()) for key in keys], self._tail])

    async def count(self, keys: Sequence[str]) -> list[int]:
        """COUNT through a fresh connection, or again by EVAL when Redis lost the script."""
        periods = self.periods
        args = [period.limit_text for period in periods] + [p.expiration for p in periods]
        return _counts(await COUNT.run(self.client, keys, args), len(keys))

    def failed(self, error: BaseException) -> None:
        self.breaker.failed(time.monotonic())
        self.stats.redis_errors += 1
        reason = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        self._warnings.emit(self._warning, reason)

    def succeeded(self) -> None:
        if self.breaker.succeeded():
            logger.info("rate-limiting redis reachable again")

    def status(self) -> dict[str, object]:
        return {"redis": self.endpoint.address, "redis_available": not self.breaker.open}

    async def start(self) -> None:
        """Nothing to do: the connection is made by the first request."""

    async def stop(self) -> None:
        await self.client.close()


def _counts(reply: Reply, expected: int) -> list[int]:
    if not isinstance(reply, list) or len(reply) != expected:
        raise RedisReplyError(f"unexpected reply to the rate-limiting script: {reply!r}")
    return [item if isinstance(item, int) else 0 for item in reply]


class Realtime(RedisCounts):
    """`sync_rate: -1`: one round trip per request decides it, for the whole fleet."""

    def decide(
        self, plugin: RateLimiting, ctx: RequestContext, identifier: str, now: int
    ) -> Awaitable[None] | None:
        if not self.breaker.allow(time.monotonic()):
            plugin.stats.redis_skipped += 1
            plugin.unavailable(ctx, identifier, now)
            return None
        keys = self.keys(identifier)
        try:
            future = self.client.send_encoded(self.count_payload(keys))
        except ConnectionError as error:
            self.failed(error)
            plugin.unavailable(ctx, identifier, now)
            return None
        return self._decided(plugin, ctx, identifier, now, keys, future)

    async def _decided(
        self,
        plugin: RateLimiting,
        ctx: RequestContext,
        identifier: str,
        now: int,
        keys: list[str],
        future: Awaitable[Reply] | None,
    ) -> None:
        try:
            reply = await future if future is not None else None
            if future is None or isinstance(reply, RedisReplyError):
                # not connected yet, or the script is gone (a Redis restart): the slow way
                counts = await self.count(keys)
            else:
                counts = _counts(reply, len(keys))
        except (ConnectionError, RedisReplyError) as error:
            self.failed(error)
            plugin.unavailable(ctx, identifier, now)
            return
        self.succeeded()
        plugin.verdict(ctx, counts, now)


class _Window:
    """One period's current window in batched mode: per identifier, the total Redis gave last
    and what this worker counted since."""

    __slots__ = ("delta", "known", "start")

    def __init__(self) -> None:
        self.start = 0
        self.known: dict[str, int] = {}
        self.delta: dict[str, int] = {}


class Batched(RedisCounts):
    """`sync_rate > 0`: requests are decided on the last totals plus this worker's own counts;
    those are added to Redis every `sync_rate` seconds. Bounded as the local counters are."""

    def __init__(
        self,
        endpoint: RedisEndpoint,
        prefix: str,
        periods: tuple[Period, ...],
        fault_tolerant: bool,
        stats: Stats,
        sync_rate: float,
        capacity: int,
    ) -> None:
        super().__init__(endpoint, prefix, periods, fault_tolerant, stats)
        self.sync_rate = sync_rate
        self.windows = [_Window() for _ in periods]
        self.per_period = max(1, capacity // max(1, len(periods)))
        self.evicted = 0
        self.flushes = 0
        self._timer: asyncio.TimerHandle | None = None
        self._flushing: asyncio.Task[None] | None = None

    def decide(
        self, plugin: RateLimiting, ctx: RequestContext, identifier: str, now: int
    ) -> Awaitable[None] | None:
        usages: list[int] = []
        windows = self.windows
        periods = self.periods
        for index in range(len(periods)):
            window = windows[index]
            if window.start != periods[index].start:
                self._roll(window, periods[index].start)
            known = window.known.get(identifier)
            if known is None:
                return self._first(plugin, ctx, identifier, now)
            usages.append(known + window.delta.get(identifier, 0))
        if plugin.verdict(ctx, usages, now):
            self._count(identifier)
        return None

    @staticmethod
    def _roll(window: _Window, start: int) -> None:
        # a new window: the last one's counts (sent or not) count for nothing any more
        window.start = start
        window.known = {}
        window.delta = {}

    async def _first(
        self, plugin: RateLimiting, ctx: RequestContext, identifier: str, now: int
    ) -> None:
        """An identifier new to this window: Redis counts it and says where it stands."""
        counts: list[int] | None = None
        if self.breaker.allow(time.monotonic()):
            try:
                counts = await self.count(self.keys(identifier))
            except (ConnectionError, RedisReplyError) as error:
                self.failed(error)
            else:
                self.succeeded()
        else:
            self.stats.redis_skipped += 1
        if counts is None:
            if not plugin.fault_tolerant:
                plugin.unavailable(ctx, identifier, now)
                return
            # counted here until Redis is back: the next flush adds it to the fleet's
            self.stats.fallbacks += 1
            self._remember(identifier, [0] * len(self.periods))
            if plugin.verdict(ctx, [0] * len(self.periods), now):
                self._count(identifier)
            return
        allowed = all(c < p.allowance for p, c in zip(self.periods, counts, strict=True))
        # the script counted an allowed request in Redis already
        self._remember(identifier, [count + 1 if allowed else count for count in counts])
        plugin.verdict(ctx, counts, now)

    def _remember(self, identifier: str, totals: list[int]) -> None:
        for window, total in zip(self.windows, totals, strict=True):
            known = window.known
            if identifier not in known and len(known) >= self.per_period:
                oldest = next(iter(known))
                del known[oldest]
                window.delta.pop(oldest, None)
                self.evicted += 1
            known[identifier] = total

    def _count(self, identifier: str) -> None:
        for window in self.windows:
            delta = window.delta
            delta[identifier] = delta.get(identifier, 0) + 1
        if self._timer is None and self._flushing is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self.sync_rate, self._flush_soon)

    def _flush_soon(self) -> None:
        self._timer = None
        self._flushing = asyncio.ensure_future(self.flush())
        self._flushing.add_done_callback(self._flushed)

    def _flushed(self, task: asyncio.Task[None]) -> None:
        self._flushing = None
        if not task.cancelled() and task.exception() is None and self._pending():
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self.sync_rate, self._flush_soon)

    def _pending(self) -> bool:
        return any(window.delta for window in self.windows)

    async def flush(self) -> None:
        """Add this worker's counts to Redis and take the fleet's totals back (what fails to
        go stays counted here, for the next flush)."""
        batch: list[tuple[_Window, str, str, int, int]] = []  # window, identifier, key, +, ttl
        for window, period in zip(self.windows, self.periods, strict=True):
            if window.start != period.start:
                continue  # not yet moved: no request since the window ended, nothing to send
            for identifier, delta in window.delta.items():
                key = f"{self.prefix}{identifier}:{period.start * 1000}:{period.name}"
                batch.append((window, identifier, key, delta, period.expiration))
        for first in range(0, len(batch), FLUSH_CHUNK):
            chunk = batch[first : first + FLUSH_CHUNK]
            keys = [item[2] for item in chunk]
            args: list[int] = [item[3] for item in chunk] + [item[4] for item in chunk]
            try:
                totals = _counts(await ADD.run(self.client, keys, args), len(keys))
            except (ConnectionError, RedisReplyError) as error:
                self.failed(error)
                return
            self.succeeded()
            self.flushes += 1
            for (window, identifier, _, sent, _), total in zip(chunk, totals, strict=True):
                left = window.delta.get(identifier, 0) - sent
                if left > 0:
                    window.delta[identifier] = left
                else:
                    window.delta.pop(identifier, None)
                if identifier in window.known:
                    window.known[identifier] = total

    def status(self) -> dict[str, object]:
        status = super().status()
        status["sync_rate"] = self.sync_rate
        status["flushes"] = self.flushes
        status["batched_evicted"] = self.evicted
        return status

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._flushing is not None:
            await asyncio.wait([self._flushing])
        elif self._pending():
            await self.flush()  # the last counts of this worker, within Redis's timeout
        await super().stop()
