"""The `rate-limiting` step (Kong's access phase): who is counted (`limit_by`), the verdict for
each configured period, Kong's response fields, and the 429.

With `policy: local` the whole step is synchronous: a dict lookup and an increment per period,
no await. With `policy: redis` the counts come from Redis (redis_policy.py); while Redis is
unavailable the verdict is the worker's own counters' (`fault_tolerant`), or a 500.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable
from typing import Any, Final, Protocol

from fastgw.http.responses import error_parts
from fastgw.observability.metrics import Family
from fastgw.plugins.api import Plugin, RequestContext, StoreUsage, authenticated
from fastgw.plugins.common.client_address import ClientAddress
from fastgw.plugins.common.clock import CLOCK

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
# the fields of an allowed request, rendered as lines: every name holds _PROBE
_CRLF: Final = b"\r\n"
_RESET: Final = b"\r\nratelimit-reset: "
_PROBE: Final = b"ratelimit"
# Kong's answer when counting failed and fault_tolerant is false (an error in the phase)
FAILED_STATUS: Final = 500
# `limit_by`, as the hot path compares it
_BY_CONSUMER: Final = 0
_BY_CREDENTIAL: Final = 1
_BY_HEADER: Final = 2
_BY_PATH: Final = 3
_BY_OTHER: Final = 4  # ip, and service (fixed per route: ServiceView)
_LIMIT_BY: Final = {
    "consumer": _BY_CONSUMER,
    "credential": _BY_CREDENTIAL,
    "header": _BY_HEADER,
    "path": _BY_PATH,
    "ip": _BY_OTHER,
    "service": _BY_OTHER,
}
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
        self.local = Counters(self.periods, capacity)
        self.redis = redis
        self.stats = stats if stats is not None else Stats()
        self._address = client_address
        self._limit_by = config.limit_by
        self._by = _LIMIT_BY[config.limit_by]
        self._header = (config.header_name or "").lower().encode("latin-1")
        self._path = (config.path or "").encode()
        self._hide = config.hide_client_headers
        self.fault_tolerant = config.fault_tolerant
        self._limited = error_parts(config.error_code, config.error_message)
        self._error_code = config.error_code
        self._failed = error_parts(FAILED_STATUS)
        names = [name for p in self.periods for name in (p.limit_header, p.remaining_header)]
        self._names = (*names, RATELIMIT_LIMIT, RATELIMIT_REMAINING, RATELIMIT_RESET)

    # -- config load ------------------------------------------------------------------------------

    def for_route(self, service: Any, route: Any) -> Plugin:
        """`limit_by: service` counts the route's service (Kong's router.get_service): a view
        of this instance that knows it, sharing its counters."""
        if self._limit_by != "service" or service is None:
            return self
        return ServiceView(self, service_id(service))

    # -- the hot path -----------------------------------------------------------------------------

    def access(self, ctx: RequestContext) -> Awaitable[None] | None:
        return self.count(ctx, self.identify(ctx))

    def count(self, ctx: RequestContext, identifier: str) -> Awaitable[None] | None:
        """Decide on `identifier`'s counts and count the request when it may go on."""
        now = CLOCK.now()  # Kong's windows have whole-second precision
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
        by = self._by
        if by <= _BY_CREDENTIAL:
            who = authenticated(ctx)
            if who is not None:
                if by == _BY_CONSUMER and who.consumer is not None:
                    return who.consumer.id
                if who.credential is not None:
                    return who.credential.id
        elif by == _BY_HEADER:
            value = ctx.get_header(self._header)
            if value:
                return "h:" + hashlib.blake2b(value, digest_size=_HEADER_DIGEST_BYTES).hexdigest()
        elif by == _BY_PATH and ctx.path == self._path:
            return self._path.decode()
        return self._address.of(ctx)

    def decide_locally(self, ctx: RequestContext, identifier: str, now: int) -> None:
        """The verdict on the worker's own counters; counted when allowed."""
        slots = self.local.slots(identifier)
        if self.verdict(ctx, slots, now, 2):
            for index in range(1, len(slots), 2):
                slots[index] += 1

    def verdict(self, ctx: RequestContext, counts: list[int], now: int, step: int = 1) -> bool:
        """Kong's decision on the counts before this request, period i's at
        counts[i * step + step - 1]: its response fields, and the 429 when a period is used
        up. True when the request may go on."""
        periods = self.periods
        stop = -1
        for index in range(len(periods)):
            if counts[index * step + step - 1] >= periods[index].allowance:
                stop = index  # the longest period used up
        if not self._hide:
            self._fields(ctx, counts, step, stop, now)
        if stop < 0:
            self.stats.allowed += 1
            return True
        self.stats.limited += 1
        body, headers = self._limited
        ctx.respond(self._error_code, body, headers)
        return False

    def _fields(
        self, ctx: RequestContext, counts: list[int], step: int, stop: int, now: int
    ) -> None:
        """X-RateLimit-Limit/Remaining-<Period> for each period; RateLimit-* for the period
        with the least left (the longer one on a tie); Retry-After on a 429 (Kong's rules)."""
        periods = self.periods
        parts: list[bytes] = []
        chosen = 0
        chosen_text = b""
        least = 0.0
        for index in range(len(periods)):
            period = periods[index]
            used = counts[index * step + step - 1]
            share = 1 if stop < 0 or stop == index else 0  # Kong leaves the others' as they are
            if period.integral:
                whole = period.allowance - used - share
                if whole < 0:
                    whole = 0
                remaining = float(whole)
                text = str(whole).encode()
            else:
                remaining = max(0.0, period.limit - used - share)
                text = lua_number(remaining)
            if index == 0 or remaining <= least:  # periods go shortest first: a tie moves on
                chosen = index
                chosen_text = text
                least = remaining
            parts.append(period.lines)
            parts.append(text)
            parts.append(_CRLF)
        reset = str(periods[chosen].reset(now)).encode()
        if stop < 0:  # the common answer: its fields rendered here, set in one call
            parts += (periods[chosen].summary, chosen_text, _RESET, reset, _CRLF)
            ctx.set_response_lines(b"".join(parts), self._names, _PROBE)
            return
        fields: list[tuple[bytes, bytes]] = []
        for index in range(len(periods)):
            period = periods[index]
            fields.append((period.limit_header, period.limit_text))
            fields.append((period.remaining_header, parts[3 * index + 1]))
        fields.append((RATELIMIT_LIMIT, periods[chosen].limit_text))
        fields.append((RATELIMIT_REMAINING, chosen_text))
        fields.append((RATELIMIT_RESET, reset))
        fields.append((RETRY_AFTER, reset))
        ctx.set_response_headers(fields)

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
        CLOCK.start()
        if self.redis is not None:
            await self.redis.start()

    async def stop(self) -> None:
        CLOCK.stop()
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


class ServiceView(Plugin):
    """A rate-limiting instance on one route with `limit_by: service`: counts that service."""

    name = "rate-limiting"
    priority = PRIORITY

    def __init__(self, counting: RateLimiting, service: str) -> None:
        self.counting = counting
        self.service = service
        self.instance_name = counting.instance_name

    def access(self, ctx: RequestContext) -> Awaitable[None] | None:
        return self.counting.count(ctx, self.service)


def service_id(service: Any) -> str:
    """A service as Kong's keys name it: its name, else where it is configured."""
    return str(service.name or service.path_in_config)


def route_id(route: Any) -> str:
    return str(route.name or route.path)
