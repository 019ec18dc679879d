"""The admin listener's handler: `/status` as JSON and `/metrics` in Prometheus text format.

It reads counters the proxy keeps anyway; nothing here runs on the proxy's request path. With
`--workers N` the worker a scrape reaches asks the others for their snapshots
(fastgw.process.control) and answers for the whole instance: counters summed, as Kong's
shared-memory metrics are.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson

from fastgw import __version__, plugins
from fastgw.http import responses
from fastgw.http.exchange import Exchange
from fastgw.observability.metrics import Family, counter, from_data, gauge, merge, render, to_data
from fastgw.observability.snapshot import GatewayStats, PoolStats

if TYPE_CHECKING:
    from fastgw.process.control import Siblings

_JSON = ((b"content-type", responses.JSON_CONTENT_TYPE),)
_TEXT = ((b"content-type", b"text/plain; version=0.0.4; charset=utf-8"),)


def families(stats: GatewayStats) -> list[Family]:
    """Every metric family of one worker: the gateway's own, then each plugin's."""
    result = [
        counter("fastgw_http_requests_total", "Requests received by the proxy listener.").add(
            (), stats.requests_total
        ),
        gauge("fastgw_connections_active", "Open client connections.").add(
            (), stats.connections_active
        ),
        counter(
            "fastgw_connections_refused_total",
            "Client connections refused at the limit that the open-file limit sets.",
        ).add((), stats.connections_refused),
    ]
    upstreams = gauge(
        "fastgw_upstream_connections", "Upstream connections by state.", ("upstream", "state")
    )
    for pool in stats.upstreams:
        upstreams.add((pool.address, "idle"), pool.idle)
        upstreams.add((pool.address, "busy"), pool.busy)
    result.append(upstreams)
    for name in stats.plugins:
        spec = plugins.spec(name)
        exporter = getattr(spec, "gateway_metrics", None)
        if exporter is not None:
            result += exporter(stats)
    result += stats.plugin_metrics
    return result


def status(stats: GatewayStats) -> dict[str, Any]:
    return {
        "version": __version__,
        "node_id": stats.node_id,
        "workers": 1,
        "config_generation": stats.config_generation,
        "server": {
            "connections_active": stats.connections_active,
            "connections_refused": stats.connections_refused,
            "total_requests": stats.requests_total,
            "tls_handshakes": stats.tls_handshakes,
            "client_addresses": {
                "used": stats.client_addresses[0],
                "capacity": stats.client_addresses[1],
            },
        },
        "upstreams": [_pool_status(pool) for pool in stats.upstreams],
        "plugins": list(stats.plugins),
        "plugin_instances": [
            {"name": item.name, "path": item.path, **item.status} for item in stats.plugin_status
        ],
    }


def _pool_status(pool: PoolStats) -> dict[str, object]:
    status: dict[str, object] = {"address": pool.address, "idle": pool.idle, "busy": pool.busy}
    if pool.upstream:  # a target of a Kong upstream: its weight and health (Kong's names)
        status.update(upstream=pool.upstream, weight=pool.weight, health=pool.health)
    return status


def snapshot(stats: GatewayStats) -> dict[str, Any]:
    """What one worker sends the worker that answers a scrape (JSON-able)."""
    return {"status": status(stats), "families": to_data(families(stats))}


def merge_status(statuses: list[dict[str, Any]]) -> dict[str, Any]:
    """One status for several workers: numbers summed, booleans and-ed, strings the greatest
    (names agree; ISO times: the latest), lists of records merged record by record."""
    merged: dict[str, Any] = _merge_values(statuses)
    merged["workers"] = len(statuses)
    merged["config_generation"] = min(item["config_generation"] for item in statuses)
    # a target's weight is the same in every worker: not a count to sum
    for index, pool in enumerate(merged.get("upstreams") or []):
        if isinstance(pool, dict) and "weight" in pool:
            pool["weight"] = statuses[0]["upstreams"][index]["weight"]
    return merged


def _merge_values(values: list[Any]) -> Any:
    present = [value for value in values if value is not None]
    if not present:
        return None
    values = present
    first = values[0]
    if isinstance(first, str):
        return max(value for value in values if isinstance(value, str))
    if isinstance(first, bool):
        return all(value is True for value in values)
    if isinstance(first, (int, float)):
        if all(isinstance(value, (int, float)) and not isinstance(value, bool) for value in values):
            return sum(values)
        return first
    if isinstance(first, dict):
        keys = [key for key in first if all(isinstance(v, dict) and key in v for v in values)]
        return {key: _merge_values([value[key] for value in values]) for key in keys}
    if isinstance(first, list):
        same_shape = all(isinstance(v, list) and len(v) == len(first) for v in values)
        if same_shape and all(isinstance(item, dict) for item in first):
            return [_merge_values([v[i] for v in values]) for i in range(len(first))]
        return first
    return first


class AdminHandler:
    """Answers from a stats snapshot taken per request (the admin listener is not hot)."""

    def __init__(self, stats: Callable[[], GatewayStats], siblings: Siblings | None = None) -> None:
        self.stats = stats
        self.siblings = siblings

    def handle(self, exchange: Exchange) -> Awaitable[None] | None:
        if exchange.method not in (b"GET", b"HEAD"):
            body, headers = responses.error_parts(405)
            exchange.respond(405, body, headers)
        elif exchange.path in (b"/status", b"/metrics"):
            if self.siblings is not None:
                return self._answer_for_instance(exchange)
            self._answer(exchange, [snapshot(self.stats())])
        else:
            body, headers = responses.error_parts(404, "Not found")
            exchange.respond(404, body, headers)
        return None

    async def _answer_for_instance(self, exchange: Exchange) -> None:
        assert self.siblings is not None
        own = snapshot(self.stats())
        others = await self.siblings.snapshots()
        self._answer(exchange, [own, *others])

    def _answer(self, exchange: Exchange, snapshots: list[dict[str, Any]]) -> None:
        if exchange.path == b"/status":
            document = merge_status([item["status"] for item in snapshots])
            exchange.respond(200, orjson.dumps(document), _JSON)
        else:
            merged = merge(from_data(item["families"]) for item in snapshots)
            exchange.respond(200, render(merged), _TEXT)

    # for tests and embedders: one worker's answers as values
    def metrics(self) -> str:
        return render(families(self.stats())).decode()

    def status(self) -> dict[str, Any]:
        return status(self.stats())
