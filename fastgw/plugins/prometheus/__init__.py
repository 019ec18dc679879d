"""`prometheus`: Kong's plugin of that name, its config keys and its series on /metrics.

An instance decides what the gateway counts for its routes (fastgw.observability.counters,
plain integers in the completion step); `exposition.py` turns the counters into Kong's metric
names and labels.
"""

from __future__ import annotations

from typing import Any

from fastgw.config.schema import Reader
from fastgw.observability.counters import StatsOptions
from fastgw.observability.metrics import Family
from fastgw.plugins.api import Plugin
from fastgw.plugins.building import SpecBase

from .exposition import kong_families

PRIORITY = 13  # Kong's


class Prometheus(Plugin):
    """Counts its routes' requests; the series are exported once per worker (gateway_metrics)."""

    name = "prometheus"
    priority = PRIORITY

    def __init__(self, config: dict[str, bool]) -> None:
        self.config = config
        self._options = StatsOptions(
            status_codes=config["status_code_metrics"],
            latency=config["latency_metrics"],
            bandwidth=config["bandwidth_metrics"],
            per_consumer=config["per_consumer"],
        )

    def route_stats(self) -> StatsOptions:
        return self._options

    def status(self) -> dict[str, object]:
        """The instance's switches (exposition reads `upstream_health_metrics` from here)."""
        return dict(self.config)


class _Spec(SpecBase):
    name = "prometheus"

    def parse_config(self, reader: Reader) -> dict[str, bool]:
        # Kong's keys and defaults (kong/plugins/prometheus/schema.lua): every series group off
        config = {
            key: reader.boolean(key, False)
            for key in (
                "per_consumer",
                "status_code_metrics",
                "latency_metrics",
                "bandwidth_metrics",
                "upstream_health_metrics",
                "ai_metrics",
                "wasm_metrics",
            )
        }
        if config["ai_metrics"]:
            reader.error("ai_metrics", "not supported: fastgw has no AI plugins")
        if config["wasm_metrics"]:
            reader.error("wasm_metrics", "not supported: fastgw runs no Wasm filters")
        reader.finish()
        return config

    def build(self, config: dict[str, bool], runtime: Any) -> Prometheus:
        return Prometheus(config)

    def gateway_metrics(self, view: Any) -> list[Family]:
        """Kong's series for the whole worker (fastgw.gateway.GatewayStats)."""
        return kong_families(view)


SPEC = _Spec()
