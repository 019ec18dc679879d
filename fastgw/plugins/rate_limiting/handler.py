"""The `rate-limiting` step (Kong's access phase): who is counted (`limit_by`), the verdict for
each configured period, Kong's response fields, and the 429.

With `policy: local` the whole step is synchronous: a dict lookup and an increment per period,
no await. With `policy: redis` the counts come from Redis (redis_policy.py); while Redis is
unavailable the verdict is the worker's own counters' (`fault_tolerant`), or a 500.
"""

from __future__ import annotations

import copy
import hashlib
import time
from collections.abc import Awaitable, Sequence
from typing import Any, Final, Protocol

from fastgw.http.responses import error_parts
from fastgw.observability.metrics import Family
from fastgw.plugins.api import Plugin, RequestContext, StoreUsage, authenticated
from fastgw.plugins.common.client_address import ClientAddress

from .counters import DEFAULT_CAPACITY, Counters
from .schema import RateLimitingConfig
from .stats import Stats, metric_families
from .windows import Period, lua_number

PRIORITY: Final = 910  # Kong's
# Kong's response fields (lower case here, as every field fastgw writes)
RATELIMIT_LIMIT: Final = b"ratelimit-limit"
RATELIMIT_REMAINING: Final = b"ratelimit-remaining"
RATELIMIT_RESET: Final = b"ratelimit-reset"
RETRY_AFTER: Final = b"retry-after"
# Kong's answer when counting failed and fault_tolerant is false (an error in the phase)
FAILED_STATUS: Final = 500
# a `limit_by: header` value may be a key: only its digest is kept or sent to Redis
_HEADER_DIGEST_BYTES: Final = 16


class Counting(Protocol):
    """Where `policy: redis` gets its counts (redis_policy.py)."""

    def decide(
        self, plugin: RateLimiting, ctx: RequestContext, identifier: str, now: int
    ) -> Awaitable[None] | None: ...

    def status(self) -> dict[str, object]: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class RateLimiting(Plugin):
    name = "rate-limiting"
    priority = PRIORITY

    def __init__(
        self,
        config: RateLimitingConfig,
        client_address: ClientAddress,
        redis: Counting | None = None,
        capacity: int = DEFAULT_CAPACITY,
        stats: Stats | None = None,
    ) -> None:
        self.config = config
        self.periods: tuple[Period, ...] = tuple(
            Period(name, limit) for name, limit in config.limits
        )
        self.local = Counters(len(self.periods), capacity)
        self.redis = redis
        self.stats = stats if stats is not None else Stats()
        self._address = client_address
        self._limit_by = config.limit_by
        self._header = (config.header_name or "").lower().encode("latin-1")
        self._path = (config.path or "").encode()
        self._fixed: str | None = None  # the identifier of a per-route view (limit_by service)
        self._hide = config.hide_client_headers
        self.fault_tolerant = config.fault_tolerant
        self._limited = error_parts(config.error_code, config.error_message)
        self._error_code = config.error_code
        self._failed = error_parts(FAILED_STATUS)

    # -- config load ------------------------------------------------------------------------------

    def for_route(self, service: Any, route: Any) -> Plugin:
        """`limit_by: service` counts the route's service (Kong's router.get_service): a view
        of this instance that knows it, sharing its counters."""
        if self._limit_by != "service" or service is None:
            return self
        view = copy.copy(self)
        view._fixed = service_id(service)
        return view

    # -- the hot path -----------------------------------------------------------------------------

    def access(self, ctx: RequestContext) -> Awaitable[None] | None:
        identifier = self._fixed
        if identifier is None:
            identifier = self.identify(ctx)
        now = int(time.time())  # Kong's windows have whole-second precision
        for period in self.periods:
            if period.end <= now or now < period.start:
                period.at(now)
        redis = self.redis
        if redis is not None:
            return redis.decide(self, ctx, identifier, now)
        self.decide_locally(ctx, identifier, now)
        return None

    def identify(self, ctx: RequestContext) -> str:
        """Kong's get_identifier: the entity `limit_by` names, else the client's address."""
        limit_by = self._limit_by
        if limit_by == "consumer" or limit_by == "credential":
            who = authenticated(ctx)
            if who is not None:
                if limit_by == "consumer" and who.consumer is not None:
                    return who.consumer.id
                if who.credential is not None:
                    return who.credential.id
        elif limit_by == "header":
            value = ctx.get_header(self._header)
            if value:
                return "h:" + hashlib.blake2b(value, digest_size=_HEADER_DIGEST_BYTES).hexdigest()
        elif limit_by == "path" and ctx.path == self._path:
            return self._path.decode()
        return self._address.of(ctx)

    def decide_locally(self, ctx: RequestContext, identifier: str, now: int) -> None:
        """The verdict on the worker's own counters; counted when allowed."""
        local = self.local
        periods = self.periods
        usages: list[float] = []
        for index in range(len(periods)):
            usages.append(local.usage(index, periods[index].start, identifier))
        if self.verdict(ctx, usages, now):
            for index in range(len(periods)):
                local.add(index, identifier)

    def verdict(self, ctx: RequestContext, usages: Sequence[float], now: int) -> bool:
        """Kong's decision on the counts before this request, one per period: its response
        fields, and the 429 when a period is used up. True when the request may go on."""
        periods = self.periods
        stop = -1
        for index in range(len(periods)):
            if periods[index].limit - usages[index] <= 0:
                stop = index  # the longest period used up
        if not self._hide:
            self._fields(ctx, usages, stop, now)
        if stop < 0:
            self.stats.allowed += 1
            return True
        self.stats.limited += 1
        body, headers = self._limited
        ctx.respond(self._error_code, body, headers)
        return False

    def _fields(self, ctx: RequestContext, usages: Sequence[float], stop: int, now: int) -> None:
        """X-RateLimit-Limit/Remaining-<Period> for each period; RateLimit-* for the period
        with the least left (the longer one on a tie); Retry-After on a 429 (Kong's rules)."""
        periods = self.periods
        chosen = 0
        least = 0.0
        for index in range(len(periods)):
            period = periods[index]
            remaining = period.limit - usages[index]
            if stop < 0 or stop == index:
                remaining -= 1  # this request's share (Kong leaves the others' as they are)
            if remaining < 0:
                remaining = 0
            if index == 0 or remaining <= least:  # periods go shortest first: a tie moves on
                chosen = index
                least = remaining
            ctx.set_response_header(period.limit_header, period.limit_text)
            ctx.set_response_header(period.remaining_header, lua_number(remaining))
        period = periods[chosen]
        reset = b"%d" % period.reset(now)
        ctx.set_response_header(RATELIMIT_LIMIT, period.limit_text)
        ctx.set_response_header(RATELIMIT_REMAINING, lua_number(least))
        ctx.set_response_header(RATELIMIT_RESET, reset)
        if stop >= 0:
            ctx.set_response_header(RETRY_AFTER, reset)

    def unavailable(self, ctx: RequestContext, identifier: str, now: int) -> None:
        """Redis could not count this request: the worker's own counters decide
        (`fault_tolerant`), or Kong's 500."""
        if self.fault_tolerant:
            self.stats.fallbacks += 1
            self.decide_locally(ctx, identifier, now)
            return
        self.stats.failed += 1
        body, headers = self._failed
        ctx.respond(FAILED_STATUS, body, headers)

    # -- lifecycle and reports --------------------------------------------------------------------

    async def start(self) -> None:
        if self.redis is not None:
            await self.redis.start()

    async def stop(self) -> None:
        if self.redis is not None:
            await self.redis.stop()

    def metrics(self) -> list[Family]:
        return metric_families(self.stats, self.instance_name, self.local.evicted)

    def stores(self) -> list[StoreUsage]:
        where = self.instance_name or "rate-limiting"
        return [self.local.usage_report(f"rate-limiting counters ({where})")]

    def status(self) -> dict[str, object]:
        stats = self.stats
        status: dict[str, object] = {
            "policy": self.config.policy,
            "allowed": stats.allowed,
            "limited": stats.limited,
            "failed": stats.failed,
            "local_fallbacks": stats.fallbacks,
            "redis_errors": stats.redis_errors,
            "redis_skipped": stats.redis_skipped,
            "counters": self.local.entries,
            "counters_capacity": self.local.capacity,
            "counters_evicted": self.local.evicted,
        }
        if self.redis is not None:
            status.update(self.redis.status())
        return status


def service_id(service: Any) -> str:
    """A service as Kong's keys name it: its name, else where it is configured."""
    return str(service.name or service.path_in_config)


def route_id(route: Any) -> str:
    return str(route.name or route.path)
