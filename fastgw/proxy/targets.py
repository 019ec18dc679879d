"""An upstream target: a hop of the wire (pool, Host, timeouts) with Kong's name, weight and health.

The forwarding (fastgw.proxy.forwarding) reports what happened to the requests sent to it
(`report_*`); that feeds the passive health check of a target of a Kong upstream with one
configured, and the balancer (fastgw.balancer) reads the verdict.
"""

from __future__ import annotations

import logging

from fastgw.balancer.health import HEALTHY, UNHEALTHY, TargetHealth, Thresholds
from fastgw.http.hop import Hop
from fastgw.http.upstream import UpstreamPool

health_log = logging.getLogger("fastgw.balancer")


class UpstreamTarget(Hop):
    """One address requests go to; for a target of a Kong upstream also its name, weight and
    health (fastgw.balancer.balancer.BalancedTarget)."""

    __slots__ = ("health", "name", "passive", "upstream_name", "weight")

    def __init__(
        self,
        pool: UpstreamPool,
        host_header: bytes,
        connect_timeout: float,
        read_timeout: float,
        write_timeout: float,
        *,
        name: str = "",
        upstream_name: str = "",
        weight: int = 100,
        passive: Thresholds | None = None,
    ) -> None:
        # watched: the forwarding reports statuses and failures only when a passive check counts
        super().__init__(
            pool, host_header, connect_timeout, read_timeout, write_timeout, passive is not None
        )
        self.name = name or f"{pool.host}:{pool.port}"  # Kong's `target`: host:port
        self.upstream_name = upstream_name  # "" for a service's own host
        self.weight = weight
        self.health = TargetHealth()
        self.passive = passive  # None: no passive health check (circuit breaker) counts

    @property
    def state(self) -> str:
        """Kong's name for the target's health."""
        return HEALTHY if self.health.healthy else UNHEALTHY

    def report(self, outcome: int) -> None:
        """A request's outcome (health.SUCCESS, HTTP_FAILURE, TCP_FAILURE or TIMEOUT)."""
        passive = self.passive
        if passive is not None and self.health.report(outcome, passive):
            self.health_changed("passive")

    def report_status(self, status: int) -> None:
        passive = self.passive
        if passive is not None:
            outcome = passive.outcome_of_status(status)
            if outcome >= 0 and self.health.report(outcome, passive):
                self.health_changed("passive")

    def report_active(self, outcome: int, thresholds: Thresholds) -> None:
        if self.health.report(outcome, thresholds):
            self.health_changed("active")

    def health_changed(self, check: str) -> None:
        health_log.warning(
            "upstream %s target %s is now %s (%s health check)",
            self.upstream_name,
            self.name,
            "healthy" if self.health.healthy else "unhealthy",
            check,
        )
