"""The admin listener's handler: `/status` as JSON and `/metrics` in Prometheus text format.

It reads counters the proxy keeps anyway; nothing here runs on the proxy's request path.
"""

from __future__ import annotations

from collections.abc import Callable

import orjson

from fastgw import __version__
from fastgw.http import responses
from fastgw.http.exchange import Exchange
from fastgw.stats import GatewayStats, PoolStats

_JSON = ((b"content-type", responses.JSON_CONTENT_TYPE),)
_TEXT = ((b"content-type", b"text/plain; version=0.0.4; charset=utf-8"),)


class AdminHandler:
    """Answers from a stats snapshot taken per request (the admin listener is not hot)."""

    def __init__(self, stats: Callable[[], GatewayStats]) -> None:
        self.stats = stats

    def handle(self, exchange: Exchange) -> None:
        if exchange.method not in (b"GET", b"HEAD"):
            body, headers = responses.error_parts(405)
            exchange.respond(405, body, headers)
        elif exchange.path == b"/status":
            exchange.respond(200, orjson.dumps(self.status()), _JSON)
        elif exchange.path == b"/metrics":
            exchange.respond(200, self.metrics().encode(), _TEXT)
        else:
            body, headers = responses.error_parts(404, "Not found")
            exchange.respond(404, body, headers)

    def status(self) -> dict[str, object]:
        stats = self.stats()
        return {
            "version": __version__,
            "server": {
                "connections_active": stats.connections_active,
                "connections_refused": stats.connections_refused,
                "total_requests": stats.requests_total,
            },
            "upstreams": [_pool_status(pool) for pool in stats.upstreams],
            "plugins": list(stats.plugins),
        }

    def metrics(self) -> str:
        stats = self.stats()
        lines = [
            "# HELP fastgw_http_requests_total Requests received by the proxy listener.",
            "# TYPE fastgw_http_requests_total counter",
            f"fastgw_http_requests_total {stats.requests_total}",
            "# HELP fastgw_connections_active Open client connections.",
            "# TYPE fastgw_connections_active gauge",
            f"fastgw_connections_active {stats.connections_active}",
            "# HELP fastgw_connections_refused_total Client connections refused at the limit that"
            " the open-file limit sets.",
            "# TYPE fastgw_connections_refused_total counter",
            f"fastgw_connections_refused_total {stats.connections_refused}",
            "# HELP fastgw_upstream_connections Upstream connections by state.",
            "# TYPE fastgw_upstream_connections gauge",
        ]
        for pool in stats.upstreams:
            lines.append(
                f'fastgw_upstream_connections{{upstream="{pool.address}",state="idle"}} {pool.idle}'
            )
            lines.append(
                f'fastgw_upstream_connections{{upstream="{pool.address}",state="busy"}} {pool.busy}'
            )
        lines.extend(stats.plugin_metrics)
        return "\n".join(lines) + "\n"


def _pool_status(pool: PoolStats) -> dict[str, object]:
    status: dict[str, object] = {"address": pool.address, "idle": pool.idle, "busy": pool.busy}
    if pool.upstream:  # a target of a Kong upstream: its weight and health (Kong's names)
        status.update(upstream=pool.upstream, weight=pool.weight, health=pool.health)
    return status
