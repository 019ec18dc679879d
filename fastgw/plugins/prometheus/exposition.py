"""Kong's prometheus series from the gateway's counters: names, labels and buckets as Kong's.

Read at scrape time only, in each worker (the admin listener sums the workers). Label values:
`service` is the service's name (else its host), `route` the route's name (else where it is
configured: Kong would show the route's id), `workspace` is Kong's default workspace. Kong's
shared dicts are fastgw's bounded stores (fastgw/observability/stores.py), one `shared_dict`
each; a worker's Lua VM is the worker's resident memory.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastgw import __version__
from fastgw.observability.metrics import Family, counter, gauge, histogram, untyped

if TYPE_CHECKING:
    from fastgw.observability.snapshot import GatewayStats

WORKSPACE = "default"  # Kong's workspace when there is only one
SUBSYSTEM = "http"
# Kong's states of a target, in the order it writes them; the current one is 1, the rest 0.
TARGET_STATES = ("healthchecks_off", "healthy", "unhealthy", "dns_error")


def node_families(view: GatewayStats) -> list[Family]:
    """Kong's node-level series: connections, requests, the datastore, the node's info."""
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
    return [
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


def kong_families(view: GatewayStats) -> list[Family]:
    families = node_families(view)
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
            kong_latency.add(where, stats.kong_latency.sample())
            upstream_latency.add(where, stats.upstream_latency.sample())
            request_latency.add(where, stats.request_latency.sample())
        if stats.count_bandwidth:
            bandwidth.add((service, route, "ingress", WORKSPACE, ""), stats.bytes_in)
            bandwidth.add((service, route, "egress", WORKSPACE, ""), stats.bytes_out)
            for consumer in consumers:
                counts = stats.by_consumer[consumer]
                bandwidth.add((service, route, "ingress", WORKSPACE, consumer), counts.bytes_in)
                bandwidth.add((service, route, "egress", WORKSPACE, consumer), counts.bytes_out)
    families += [requests, kong_latency, upstream_latency, request_latency, bandwidth]
    families += memory_families(view)
    if upstream_health_wanted(view):
        families.append(target_health(view))
    return [family for family in families if family.samples or not family.labels]


def memory_families(view: GatewayStats) -> list[Family]:
    """Kong's memory series: each bounded store as a shared dict (bytes used, capacity), and
    the worker's memory under its pid."""
    node = view.node_id
    used = gauge(
        "kong_memory_lua_shared_dict_bytes",
        "Allocated slabs in bytes in a shared_dict",
        ("node_id", "shared_dict", "kong_subsystem"),
    )
    total = gauge(
        "kong_memory_lua_shared_dict_total_bytes",
        "Total capacity in bytes of a shared_dict",
        ("node_id", "shared_dict", "kong_subsystem"),
    )
    for store in view.stores:
        used.add((node, store.name, SUBSYSTEM), store.used_bytes)
        total.add((node, store.name, SUBSYSTEM), store.capacity_bytes)
    workers = gauge(
        "kong_memory_workers_lua_vms_bytes",
        "Allocated bytes in worker Lua VM",
        ("node_id", "pid", "kong_subsystem"),
    )
    if view.pid:
        workers.add((node, str(view.pid), SUBSYSTEM), view.memory_bytes)
    return [used, total, workers]


def upstream_health_wanted(view: GatewayStats) -> bool:
    """Kong's rule: target health is exported when any prometheus instance asks for it."""
    return any(
        item.name == "prometheus" and item.status.get("upstream_health_metrics") is True
        for item in view.plugin_status
    )


def target_health(view: GatewayStats) -> Family:
    """Kong's four series per target of each upstream, 1 for its current state. fastgw does
    not resolve a target's name apart from connecting to it, so `address` is the target."""
    family = gauge(
        "kong_upstream_target_health",
        "Health status of targets of upstream. States = healthchecks_off|healthy|unhealthy|"
        "dns_error, value is 1 when state is populated.",
        ("upstream", "target", "address", "state", "subsystem"),
        merge="max",  # 1 when any worker sees the target in that state
    )
    for pool in view.upstreams:
        if not pool.upstream:
            continue  # a service's own host, not a Kong upstream's target
        state = pool.health.lower() if pool.weight > 0 else "healthchecks_off"
        for name in TARGET_STATES:
            family.add(
                (pool.upstream, pool.address, pool.address, name, SUBSYSTEM),
                1 if name == state else 0,
            )
    return family
