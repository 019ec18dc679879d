"""Metric families: summed over workers, carried between processes as JSON, exposed by
prometheus_client in the text format; and the per-route counters behind Kong's series."""

from __future__ import annotations

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fastgw.observability.counters import RouteStats, StatsOptions
from fastgw.observability.metrics import (
    Family,
    HistogramSample,
    counter,
    from_data,
    gauge,
    histogram,
    merge,
    render,
    to_data,
    untyped,
)


def worker(requests: int, latency_ms: float) -> list[Family]:
    """One worker's families after `requests` 200s and one 401."""
    stats = RouteStats(("svc", "r"), StatsOptions(True, True, True))
    for _ in range(requests):
        stats.record(200, True, latency_ms, latency_ms / 2, 1.0, 100, 1000)
    stats.record(401, False, 1.0, -1.0, 1.0, 50, 60)
    counts = counter("x_requests_total", "requests", ("code", "source"))
    for status, source, count in stats.response_counts():
        counts.add((str(status), source), count)
    observed = stats.request_latency
    return [
        counts,
        gauge("x_up", "up", merge="max").add((), 1),
        gauge("x_open", "open").add((), 3),
        untyped("x_bytes", "bytes", ("direction",)).add(("in",), stats.bytes_in),
        histogram("x_latency_ms", "latency").add((), observed.sample()),
    ]


def test_route_stats_count_status_and_source_and_skip_upstream_latency_for_local_answers() -> None:
    stats = RouteStats(("svc", "r"), StatsOptions(True, True, True))
    for _ in range(3):
        stats.record(200, True, 30.0, 20.0, 2.0, 100, 1000)
    stats.record(401, False, 1.0, -1.0, 1.0, 50, 60)
    assert stats.response_counts() == [(200, "service", 3), (401, "kong", 1)]
    assert stats.request_latency.count == 4 and stats.upstream_latency.count == 3
    # 30 ms falls in Kong's 50 ms bucket, 1 ms in the first (25 ms)
    assert stats.request_latency.cumulative()[:2] == [1, 4]
    assert (stats.bytes_in, stats.bytes_out) == (350, 3060)


def test_route_stats_count_only_what_the_plugin_asked_for() -> None:
    stats = RouteStats(("svc", "r"), StatsOptions(False, False, True))
    stats.record(200, True, 30.0, 20.0, 2.0, 100, 1000)
    assert stats.response_counts() == [] and stats.request_latency.count == 0
    assert stats.bytes_out == 1000


def test_workers_merge_by_sum_except_max_gauges_and_survive_json() -> None:
    one, two = worker(5, 30.0), worker(7, 3000.0)
    shipped = [from_data(orjson.loads(orjson.dumps(to_data(group)))) for group in (one, two)]
    merged = {family.name: family for family in merge(shipped)}
    assert merged["x_requests_total"].samples[("200", "service")] == 5 + 7
    assert merged["x_requests_total"].samples[("401", "kong")] == 2
    assert merged["x_up"].samples[()] == 1
    assert merged["x_open"].samples[()] == 6
    assert merged["x_bytes"].samples[("in",)] == 100 * 12 + 50 * 2
    latency = merged["x_latency_ms"].samples[()]
    assert isinstance(latency, HistogramSample) and latency.cumulative[-1] == 14


def test_render_is_the_text_format_with_kongs_untyped_name_kept() -> None:
    text = render(merge([worker(2, 30.0)])).decode()
    families = {family.name: family for family in text_string_to_metric_families(text)}
    assert families["x_requests"].type == "counter"  # the parser strips _total
    assert 'x_bytes{direction="in"} 250.0' in text  # no _total appended
    assert families["x_latency_ms"].type == "histogram"
    assert 'x_latency_ms_bucket{le="+Inf"} 3.0' in text


def test_histograms_with_other_buckets_do_not_merge() -> None:
    left = HistogramSample((1.0,), [1, 1], 1.0)
    right = HistogramSample((2.0,), [1, 1], 1.0)
    with pytest.raises(ValueError):
        merge([[histogram("h", "h").add((), left)], [histogram("h", "h").add((), right)]])
