"""The admin listener's handler: `/status` as JSON and `/metrics` in Prometheus text format.

It reads counters the proxy keeps anyway; nothing here runs on the proxy's request path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson

from fastgw import __version__
from fastgw.http import responses
from fastgw.http.exchange import Exchange

if TYPE_CHECKING:
    from fastgw.gateway import Gateway

_JSON = ((b"content-type", responses.JSON_CONTENT_TYPE),)
_TEXT = ((b"content-type", b"text/plain; version=0.0.4; charset=utf-8"),)


class AdminHandler:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def __call__(self, exchange: Exchange) -> None:
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
        gateway = self.gateway
        proxy = gateway.proxy
        return {
            "version": __version__,
            "server": {
                "connections_active": len(proxy.connections),
                "connections_refused": proxy.refused_total,
                "total_requests": proxy.requests_total,
            },
            "upstreams": [
                {
                    "address": f"{pool.host}:{pool.port}",
                    "idle": len(pool.idle),
                    "busy": len(pool.busy),
                }
                for pool in gateway.pools
            ],
            "plugins": sorted({plugin.name for plugin in gateway.plugins}),
        }

    def metrics(self) -> str:
        gateway = self.gateway
        proxy = gateway.proxy
        lines = [
            "# HELP fastgw_http_requests_total Requests received by the proxy listener.",
            "# TYPE fastgw_http_requests_total counter",
            f"fastgw_http_requests_total {proxy.requests_total}",
            "# HELP fastgw_connections_active Open client connections.",
            "# TYPE fastgw_connections_active gauge",
            f"fastgw_connections_active {len(proxy.connections)}",
            "# HELP fastgw_connections_refused_total Client connections refused at the limit that"
            " the open-file limit sets.",
            "# TYPE fastgw_connections_refused_total counter",
            f"fastgw_connections_refused_total {proxy.refused_total}",
            "# HELP fastgw_upstream_connections Upstream connections by state.",
            "# TYPE fastgw_upstream_connections gauge",
        ]
        for pool in gateway.pools:
            address = f"{pool.host}:{pool.port}"
            lines.append(
                f'fastgw_upstream_connections{{upstream="{address}",state="idle"}} {len(pool.idle)}'
            )
            lines.append(
                f'fastgw_upstream_connections{{upstream="{address}",state="busy"}} {len(pool.busy)}'
            )
        for plugin in gateway.plugins:
            metrics = getattr(plugin, "metrics", None)
            if metrics is not None:
                lines.extend(metrics())
        return "\n".join(lines) + "\n"
