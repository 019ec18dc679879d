"""What one rate-limiting instance counted, as plain integers (read by /status and /metrics),
and its metric families."""

from __future__ import annotations

from fastgw.observability.metrics import Family, counter


class Stats:
    """Shared by an instance, its per-route views and its Redis counting."""

    __slots__ = ("allowed", "failed", "fallbacks", "limited", "redis_errors", "redis_skipped")

    def __init__(self) -> None:
        self.allowed = 0
        self.limited = 0
        self.failed = 0  # answered 500: Redis unavailable and fault_tolerant false
        self.fallbacks = 0  # decided on the worker's own counters: Redis unavailable
        self.redis_errors = 0  # Redis calls that failed or timed out
        self.redis_skipped = 0  # Redis calls not made: the breaker was open


def metric_families(stats: Stats, instance: str, evicted: int) -> list[Family]:
    decisions = counter(
        "fastgw_rate_limiting_requests_total",
        "Requests rate-limiting decided, by result: allowed, limited (the 429), failed (a 500: "
        "Redis unavailable and fault_tolerant false).",
        ("instance", "result"),
    )
    for result, count in (
        ("allowed", stats.allowed),
        ("limited", stats.limited),
        ("failed", stats.failed),
    ):
        decisions.add((instance, result), count)
    redis = counter(
        "fastgw_rate_limiting_redis_failures_total",
        "Redis calls that failed or timed out (error), or were not made while the breaker was "
        "open (skipped).",
        ("instance", "result"),
    )
    redis.add((instance, "error"), stats.redis_errors)
    redis.add((instance, "skipped"), stats.redis_skipped)
    return [
        decisions,
        redis,
        counter(
            "fastgw_rate_limiting_local_fallbacks_total",
            "Requests decided on the worker's own counters because Redis was unavailable.",
            ("instance",),
        ).add((instance,), stats.fallbacks),
        counter(
            "fastgw_rate_limiting_counters_evicted_total",
            "Counters dropped to stay within the store's bound (a flood of identifiers).",
            ("instance",),
        ).add((instance,), evicted),
    ]
