"""Per-worker request counters: what the completion step counts per route, in plain integers.

Compiled: a request costs integer and float adds on native fields, no lock and no allocation
(a status seen for the first time on a route makes its counter once). Exposition reads them.
"""

from __future__ import annotations

from typing import Final

from fastgw.observability.metrics import HistogramSample

# Kong's buckets (kong/plugins/prometheus/exporter.lua), in milliseconds.
KONG_LATENCY_BUCKETS: Final = (
    1.0,
    2,
    5,
    7,
    10,
    15,
    20,
    30,
    50,
    75,
    100,
    200,
    500,
    750,
    1000,
    3000,
    6000,
)
UPSTREAM_LATENCY_BUCKETS: Final = (
    25.0, 50, 80, 100, 250, 400, 700, 1000, 2000, 5000, 10000, 30000, 60000,
)  # fmt: skip


class Count:
    """One counter: a native integer, incremented in place."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0


class Histogram:
    """Observations by bucket (not cumulative here; exposition accumulates) and their sum."""

    __slots__ = ("bounds", "buckets", "count", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds: list[float] = [float(bound) for bound in bounds]
        # one more than the bounds: the +Inf bucket
        self.buckets: list[Count] = [Count() for _ in range(len(bounds) + 1)]
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        bounds = self.bounds
        index = 0
        size = len(bounds)
        while index < size and value > bounds[index]:
            index += 1
        self.buckets[index].value += 1
        self.sum += value
        self.count += 1

    def sample(self) -> HistogramSample:
        """What the exposition shows: cumulative counts, the +Inf bucket last, and the sum."""
        return HistogramSample(tuple(self.bounds), self.cumulative(), self.sum)

    def cumulative(self) -> list[int]:
        total = 0
        result = []
        for bucket in self.buckets:
            total += bucket.value
            result.append(total)
        return result


class StatsOptions:
    """What to count for a route (Kong's prometheus flags)."""

    __slots__ = ("bandwidth", "latency", "per_consumer", "status_codes")

    def __init__(
        self, status_codes: bool, latency: bool, bandwidth: bool, per_consumer: bool = False
    ) -> None:
        self.status_codes = status_codes
        self.latency = latency
        self.bandwidth = bandwidth
        self.per_consumer = per_consumer  # statuses and bandwidth by the consumer's username


class ConsumerCounts:
    """One consumer's statuses and bandwidth on a route (Kong's per_consumer): as many as the
    config has consumers with a username, so bounded by the config."""

    __slots__ = ("bytes_in", "bytes_out", "responses")

    def __init__(self) -> None:
        self.responses: dict[int, Count] = {}  # keyed as RouteStats.responses
        self.bytes_in = 0
        self.bytes_out = 0


class RouteStats:
    """One route's counters. `labels` is (service, route): Kong's label values."""

    __slots__ = (
        "by_consumer",
        "bytes_in",
        "bytes_out",
        "count_bandwidth",
        "count_latency",
        "count_status",
        "kong_latency",
        "labels",
        "per_consumer",
        "request_latency",
        "responses",
        "upstream_latency",
    )

    def __init__(self, labels: tuple[str, str], options: StatsOptions) -> None:
        self.labels = labels
        self.count_status = options.status_codes
        self.count_latency = options.latency
        self.count_bandwidth = options.bandwidth
        self.per_consumer = options.per_consumer
        self.by_consumer: dict[str, ConsumerCounts] = {}
        # status * 2 + 1 when the upstream answered, + 0 when the gateway did (Kong's "source")
        self.responses: dict[int, Count] = {}
        self.kong_latency = Histogram(KONG_LATENCY_BUCKETS)
        self.upstream_latency = Histogram(UPSTREAM_LATENCY_BUCKETS)
        self.request_latency = Histogram(UPSTREAM_LATENCY_BUCKETS)
        self.bytes_in = 0
        self.bytes_out = 0

    def configure(self, options: StatsOptions) -> None:
        """A reload changed what to count; what was counted stays."""
        self.count_status = options.status_codes
        self.count_latency = options.latency
        self.count_bandwidth = options.bandwidth
        self.per_consumer = options.per_consumer

    def record(
        self,
        status: int,
        from_upstream: bool,
        request_ms: float,
        upstream_ms: float,
        kong_ms: float,
        bytes_in: int,
        bytes_out: int,
        consumer: str = "",
    ) -> None:
        """One finished request; `upstream_ms` < 0 when it never reached the upstream;
        `consumer`: the username its statuses and bandwidth count under (per_consumer)."""
        if consumer:
            self._record_consumer(consumer, status, from_upstream, bytes_in, bytes_out)
        elif self.count_status:
            key = status * 2 + 1 if from_upstream else status * 2
            counter = self.responses.get(key)
            if counter is None:
                counter = self.responses[key] = Count()
            counter.value += 1
        if self.count_latency:
            self.request_latency.observe(request_ms)
            self.kong_latency.observe(kong_ms)
            if upstream_ms >= 0.0:
                self.upstream_latency.observe(upstream_ms)
        if self.count_bandwidth and not consumer:
            self.bytes_in += bytes_in
            self.bytes_out += bytes_out

    def _record_consumer(
        self, consumer: str, status: int, from_upstream: bool, bytes_in: int, bytes_out: int
    ) -> None:
        counts = self.by_consumer.get(consumer)
        if counts is None:
            counts = self.by_consumer[consumer] = ConsumerCounts()
        if self.count_status:
            key = status * 2 + 1 if from_upstream else status * 2
            counter = counts.responses.get(key)
            if counter is None:
                counter = counts.responses[key] = Count()
            counter.value += 1
        if self.count_bandwidth:
            counts.bytes_in += bytes_in
            counts.bytes_out += bytes_out

    def response_counts(self, consumer: str = "") -> list[tuple[int, str, int]]:
        """(status, source, count): source "service" or "kong", as Kong labels it; of the
        requests of no consumer (or of consumer `consumer`)."""
        responses = self.responses
        if consumer:
            counts = self.by_consumer.get(consumer)
            responses = counts.responses if counts is not None else {}
        return [
            (key // 2, "service" if key % 2 else "kong", counter.value)
            for key, counter in sorted(responses.items())
        ]
