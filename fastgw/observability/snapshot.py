"""What the gateway reports about itself: snapshots of the counters the proxy keeps anyway.

Plain frozen records: the gateway fills them, the admin listener renders them (and sums them
over the workers of an instance).
"""

from __future__ import annotations

from dataclasses import dataclass

from fastgw.observability.counters import RouteStats
from fastgw.observability.metrics import Family
from fastgw.observability.stores import StoreUsage


@dataclass(frozen=True, slots=True)
class PoolStats:
    address: str  # host:port
    idle: int
    busy: int
    upstream: str = ""  # the Kong upstream the target belongs to ("" for a service's own host)
    weight: int = 0
    health: str = ""  # Kong's: HEALTHY, UNHEALTHY, HEALTHCHECKS_OFF ("" outside an upstream)


@dataclass(frozen=True, slots=True)
class PluginStatus:
    name: str
    path: str  # where it is configured
    status: dict[str, object]  # the instance's Plugin.status()


@dataclass(frozen=True, slots=True)
class GatewayStats:
    """What the admin listener reports: a snapshot of counters the proxy keeps anyway."""

    connections_active: int
    connections_refused: int
    requests_total: int
    upstreams: tuple[PoolStats, ...]
    plugins: tuple[str, ...]  # names of the plugins configured
    plugin_metrics: tuple[Family, ...]  # what the plugins export (Plugin.metrics)
    connections_accepted: int = 0
    connection_states: tuple[int, int, int] = (0, 0, 0)  # reading, writing, waiting
    route_stats: tuple[RouteStats, ...] = ()
    plugin_status: tuple[PluginStatus, ...] = ()
    node_id: str = ""
    config_generation: int = 0  # reloads applied since start
    stores: tuple[StoreUsage, ...] = ()  # every bounded in-memory store (observability.stores)
    pid: int = 0  # the worker's process id
    memory_bytes: int = 0  # the worker's resident memory
    # the per-client-address connection counts (fastgw/http/admission.py): entries, and the most
    # it may hold; TLS connections in their handshake
    client_addresses: tuple[int, int] = (0, 0)
    tls_handshakes: int = 0
