"""What the gateway reports about itself: snapshots of the counters the proxy keeps anyway.

Plain frozen records: the gateway fills them, the admin listener renders them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PoolStats:
    address: str  # host:port
    idle: int
    busy: int
    upstream: str = ""  # the Kong upstream the target belongs to ("" for a service's own host)
    weight: int = 0
    health: str = ""  # Kong's: HEALTHY, UNHEALTHY, HEALTHCHECKS_OFF ("" outside an upstream)


@dataclass(frozen=True, slots=True)
class GatewayStats:
    """What the admin listener reports: a snapshot of counters the proxy keeps anyway."""

    connections_active: int
    connections_refused: int
    requests_total: int
    upstreams: tuple[PoolStats, ...]
    plugins: tuple[str, ...]  # names of the plugins configured
    plugin_metrics: tuple[str, ...]  # Prometheus lines the plugins export (Plugin.metrics)
