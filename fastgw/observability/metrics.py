"""Metric families as plain data: what plugins and the gateway export, summed over workers.

A `Family` is a name, a type, help and samples by label values; it travels between worker
processes as JSON (`to_data`/`from_data`), families of several workers `merge` by summing, and
`render` turns them into the Prometheus text format with prometheus_client. Nothing here runs
on the request path: the counters themselves are plain integers
(fastgw.observability.counters, plugins' own).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Kind = Literal["counter", "gauge", "histogram", "untyped"]
# How a gauge of several workers combines: "sum" (connections), "max" (a timestamp).
Merge = Literal["sum", "max"]


@dataclass(slots=True)
class HistogramSample:
    """A histogram as exposed: cumulative bucket counts by upper bound (the +Inf bucket last) and
    the sum. What fastgw/observability/counters.py Histogram.sample gives at scrape time."""

    bounds: tuple[float, ...]  # without +Inf
    cumulative: list[int]  # len(bounds) + 1
    sum: float


Value = float | HistogramSample


@dataclass(slots=True)
class Family:
    """One metric family. Counter names carry their `_total` suffix, as exposed."""

    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...] = ()
    samples: dict[tuple[str, ...], Value] = field(default_factory=dict)
    merge: Merge = "sum"

    def add(self, values: Sequence[str], value: Value) -> Family:
        key = tuple(values)
        existing = self.samples.get(key)
        self.samples[key] = value if existing is None else _combine(existing, value, self.merge)
        return self


def counter(name: str, help: str, labels: Sequence[str] = ()) -> Family:
    return Family(name, "counter", help, tuple(labels))


def gauge(name: str, help: str, labels: Sequence[str] = (), merge: Merge = "sum") -> Family:
    return Family(name, "gauge", help, tuple(labels), merge=merge)


def histogram(name: str, help: str, labels: Sequence[str] = ()) -> Family:
    return Family(name, "histogram", help, tuple(labels))


def untyped(name: str, help: str, labels: Sequence[str] = ()) -> Family:
    """Summed like a counter, exposed untyped: for a counter whose established name lacks the
    `_total` suffix prometheus_client gives every counter (Kong's kong_bandwidth_bytes)."""
    return Family(name, "untyped", help, tuple(labels))


def _combine(left: Value, right: Value, merge: Merge) -> Value:
    if isinstance(left, HistogramSample) and isinstance(right, HistogramSample):
        if left.bounds != right.bounds:
            raise ValueError("histograms with different buckets")
        cumulative = [a + b for a, b in zip(left.cumulative, right.cumulative, strict=True)]
        return HistogramSample(left.bounds, cumulative, left.sum + right.sum)
    if isinstance(left, HistogramSample) or isinstance(right, HistogramSample):
        raise ValueError("a histogram and a number under one name")
    return max(left, right) if merge == "max" else left + right


def merge(groups: Iterable[Iterable[Family]]) -> list[Family]:
    """One family per name, its samples summed (or maxed) over the groups, in first-seen order."""
    merged: dict[str, Family] = {}
    for families in groups:
        for family in families:
            into = merged.get(family.name)
            if into is None:
                into = merged[family.name] = Family(
                    family.name, family.kind, family.help, family.labels, {}, family.merge
                )
            elif into.kind != family.kind or into.labels != family.labels:
                continue  # a worker of another version during a deploy: skip what disagrees
            for key, value in family.samples.items():
                into.add(key, value)
    return list(merged.values())


# -- between processes ----------------------------------------------------------------------------


def to_data(families: Iterable[Family]) -> list[dict[str, Any]]:
    data = []
    for family in families:
        samples: list[list[Any]] = []
        for key, value in family.samples.items():
            if isinstance(value, HistogramSample):
                samples.append([list(key), list(value.bounds), value.cumulative, value.sum])
            else:
                samples.append([list(key), value])
        data.append(
            {
                "name": family.name,
                "kind": family.kind,
                "help": family.help,
                "labels": list(family.labels),
                "merge": family.merge,
                "samples": samples,
            }
        )
    return data


def from_data(data: Iterable[dict[str, Any]]) -> list[Family]:
    families = []
    for item in data:
        family = Family(
            item["name"], item["kind"], item["help"], tuple(item["labels"]), {}, item["merge"]
        )
        for sample in item["samples"]:
            key = tuple(sample[0])
            if family.kind == "histogram":
                family.samples[key] = HistogramSample(tuple(sample[1]), list(sample[2]), sample[3])
            else:
                family.samples[key] = sample[1]
        families.append(family)
    return families


# -- exposition -----------------------------------------------------------------------------------


class _Collector:
    """prometheus_client's collector protocol over a fixed list of families."""

    def __init__(self, families: Sequence[Family]) -> None:
        self.families = families

    def collect(self) -> Iterable[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
            Metric,
        )

        for family in self.families:
            labels = list(family.labels)
            if family.kind == "counter":
                metric: Any = CounterMetricFamily(family.name, family.help, labels=labels)
                for key, value in family.samples.items():
                    metric.add_metric(list(key), value)
            elif family.kind == "gauge":
                metric = GaugeMetricFamily(family.name, family.help, labels=labels)
                for key, value in family.samples.items():
                    metric.add_metric(list(key), value)
            elif family.kind == "untyped":
                metric = Metric(family.name, family.help, "unknown")
                for key, value in family.samples.items():
                    metric.add_sample(family.name, dict(zip(labels, key, strict=True)), value)
            else:
                metric = HistogramMetricFamily(family.name, family.help, labels=labels)
                for key, value in family.samples.items():
                    assert isinstance(value, HistogramSample)
                    bounds = [_bound(bound) for bound in value.bounds] + ["+Inf"]
                    buckets = list(zip(bounds, value.cumulative, strict=True))
                    metric.add_metric(list(key), buckets, value.sum)
            yield metric


def _bound(value: float) -> str:
    from prometheus_client.utils import floatToGoString

    return str(floatToGoString(value))


def render(families: Sequence[Family]) -> bytes:
    """The Prometheus text exposition format (0.0.4) of `families`."""
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(families))  # type: ignore[arg-type]
    return bytes(generate_latest(registry))
