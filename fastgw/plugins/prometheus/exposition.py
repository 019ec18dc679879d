"""Kong's prometheus series from the gateway's counters: names, labels and buckets as Kong's.

Read at scrape time only. Label values: `service` is the service's name (else its host), `route`
the route's name (else where it is configured: Kong would show the route's id), `workspace` is
Kong's default workspace.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastgw import __version__
from fastgw.observability.counters import KONG_LATENCY_BUCKETS, UPSTREAM_LATENCY_BUCKETS
from fastgw.observability.counters import Histogram as Observed
from fastgw.observability.metrics import Family, Histogram, counter, gauge, histogram, untyped

if TYPE_CHECKING:
    from fastgw.observability.snapshot import GatewayStats

WORKSPACE = "default"  # Kong's workspace when there is only one
SUBSYSTEM = "http"


def _value(observed: Observed, bounds: tuple[float, ...]) -> Histogram:
    return Histogram(tuple(float(b) for b in bounds), observed.cumulative(), observed.sum)


def kong_families(view: GatewayStats) -> list[Family]:
    node = view.node_id
    reading, writing, waiting = view.connection_states
    connections = gauge(
        "kong_nginx_connections_total",
        "Number of connections by subsystem",
        ("node_id", "subsystem", "state"),
    )
    for state, value in (
        ("accepted", view.connections_accepted),
        ("handled", view.connections_accepted - view.connections_refused),
        ("total", view.requests_total),
        ("active", view.connections_active),
        ("reading", reading),
        ("writing", writing),
        ("waiting", waiting),
    ):
        connections.add((node, SUBSYSTEM, state), value)
    families = [
        connections,
        gauge("kong_nginx_requests_total", "Number of requests total", ("node_id", "subsystem"))
        .add((node, SUBSYSTEM), view.requests_total),
        # DB-less, as fastgw always is: Kong reports its (absent) datastore reachable
        gauge("kong_datastore_reachable", "Datastore reachable from Kong, 0 is unreachable",
              merge="max").add((), 1),
        gauge("kong_node_info", "Kong Node metadata information", ("node_id", "version"),
              merge="max").add((node, __version__), 1),
        counter("kong_nginx_metric_errors_total", "Number of nginx-lua-prometheus errors")
        .add((), 0),
    ]  # fmt: skip
    requests = counter(
        "kong_http_requests_total",
        "HTTP status codes per consumer/service/route in Kong",
        ("service", "route", "code", "source", "workspace", "consumer"),
    )
    kong_latency = histogram(
        "kong_kong_latency_ms",
        "Latency added by Kong and enabled plugins for each service/route in Kong",
        ("service", "route", "workspace"),
    )
    upstream_latency = histogram(
        "kong_upstream_latency_ms",
        "Latency added by upstream response for each service/route in Kong",
        ("service", "route", "workspace"),
    )
    request_latency = histogram(
        "kong_request_latency_ms",
        "Total latency incurred during requests for each service/route in Kong",
        ("service", "route", "workspace"),
    )
    # Kong exposes this counter without a _total suffix; prometheus_client would add one to a
    # counter, so it goes out untyped under Kong's exact name (PromQL's rate() does not mind)
    bandwidth = untyped(
        "kong_bandwidth_bytes",
        "Total bandwidth (ingress/egress) throughput in bytes",
        ("service", "route", "direction", "workspace", "consumer"),
    )
    for stats in view.route_stats:
        service, route = stats.labels
        consumers = sorted(stats.by_consumer)
        if stats.count_status:
            for consumer in ("", *consumers):
                for status, source, count in stats.response_counts(consumer):
                    requests.add((service, route, str(status), source, WORKSPACE, consumer), count)
        if stats.count_latency:
            where = (service, route, WORKSPACE)
            kong_latency.add(where, _value(stats.kong_latency, KONG_LATENCY_BUCKETS))
            upstream_latency.add(where, _value(stats.upstream_latency, UPSTREAM_LATENCY_BUCKETS))
            request_latency.add(where, _value(stats.request_latency, UPSTREAM_LATENCY_BUCKETS))
        if stats.count_bandwidth:
            bandwidth.add((service, route, "ingress", WORKSPACE, ""), stats.bytes_in)
            bandwidth.add((service, route, "egress", WORKSPACE, ""), stats.bytes_out)
            for consumer in consumers:
                counts = stats.by_consumer[consumer]
                bandwidth.add((service, route, "ingress", WORKSPACE, consumer), counts.bytes_in)
                bandwidth.add((service, route, "egress", WORKSPACE, consumer), counts.bytes_out)
    families += [requests, kong_latency, upstream_latency, request_latency, bandwidth]
    return [family for family in families if family.samples or not family.labels]
