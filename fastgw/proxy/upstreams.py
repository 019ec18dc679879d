"""The Kong upstreams of one gateway: a balancer per service that names one, a pool and a health
state per target, the active checkers.

Built once from the config; the gateway starts and stops it and reads its stats.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastgw.balancer.balancer import Balancer, HashSource
from fastgw.balancer.health import HEALTHCHECKS_OFF, ActiveCheck, TargetHealth, Thresholds
from fastgw.config import ActiveHealthcheck, CheckThresholds, GatewayConfig, Service, Upstream
from fastgw.http.timers import Ticker
from fastgw.http.upstream import UpstreamPool
from fastgw.proxy import pools
from fastgw.proxy.forwarding import Balanced, Direct, ServiceForwarding
from fastgw.proxy.health_checks import ActiveChecker
from fastgw.proxy.targets import UpstreamTarget

log = logging.getLogger("fastgw.balancer")


class UpstreamSet:
    """Every Kong upstream of a config, and what services naming them resolve to."""

    def __init__(self, config: GatewayConfig, ticker: Ticker) -> None:
        self.config = config
        self.ticker = ticker
        self.upstreams = {upstream.name: upstream for upstream in config.upstreams}
        # one pool and one health state per (upstream, target), whichever services name it
        self._pools: dict[tuple[str, str, int], UpstreamPool] = {}
        self._health: dict[tuple[str, str, int], TargetHealth] = {}
        self.balancers: list[Balancer[UpstreamTarget]] = []
        self.checkers: list[ActiveChecker] = []
        self._checked: set[str] = set()

    @property
    def pools(self) -> list[UpstreamPool]:
        return list(self._pools.values())

    def service_destination(
        self, service: Service
    ) -> tuple[UpstreamTarget | None, ServiceForwarding] | None:
        """None for a service whose host is no upstream's name; else where it goes: one target
        and its Direct forwarding when nothing is left to choose (a single target, no health
        checks), or no target and the balancer's forwarding."""
        upstream = self.upstreams.get(service.host)
        if upstream is None:
            return None
        targets = [self._target(upstream, service, target) for target in upstream.targets]
        enabled = [target for target in targets if target.weight > 0]
        checked = upstream.passive is not None or upstream.active is not None
        if len(enabled) == 1 and len(targets) == 1 and not checked:
            return enabled[0], Direct(enabled[0], service.retries)  # the plain service's path
        balancer = Balancer(
            upstream.name,
            targets,
            algorithm=upstream.algorithm,
            hash_on=HashSource(upstream.hash_on, upstream.hash_on_name.encode()),
            hash_fallback=HashSource(upstream.hash_fallback, upstream.hash_fallback_name.encode()),
            slots=upstream.slots,
            threshold=upstream.threshold,
            passive=_passive(upstream),
        )
        self.balancers.append(balancer)
        if upstream.active is not None and upstream.name not in self._checked:
            self._checked.add(upstream.name)
            active = _active_check(upstream.active)
            self.checkers.append(ActiveChecker(upstream.name, balancer.targets, active))
        return None, Balanced(balancer, service.retries)

    def _target(self, upstream: Upstream, service: Service, target: Any) -> UpstreamTarget:
        key = (upstream.name, target.host, target.port)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = pools.new_pool(
                service,
                target.host,
                target.port,
                upstream.host_header or target.host,
                self.config.settings.limits,
                self.ticker,
            )
        if upstream.host_header is not None:
            host = upstream.host_header.encode("idna")
        else:
            host = pools.host_header(target.host, target.port, service.protocol)
        built = pools.target(
            pool,
            host,
            service,
            name=_target_name(target.host, target.port),
            upstream_name=upstream.name,
            weight=target.weight,
            passive=_passive(upstream),
        )
        # the health of a target is one, whichever services name its upstream
        built.health = self._health.setdefault(key, built.health)
        return built

    def start(self) -> None:
        for checker in self.checkers:
            checker.start()

    async def stop_checks(self) -> None:
        for checker in self.checkers:
            await checker.stop()

    async def stop(self) -> None:
        await self.stop_checks()
        for pool in self._pools.values():
            pool.close()

    def target_stats(self, make: Callable[..., Any]) -> tuple[Any, ...]:
        """One entry per target of every upstream, whichever services name it."""
        stats = []
        seen: set[tuple[str, str, int]] = set()
        for upstream in self.upstreams.values():
            checked = upstream.passive is not None or upstream.active is not None
            for target in upstream.targets:
                key = (upstream.name, target.host, target.port)
                pool = self._pools.get(key)
                if pool is None or key in seen:
                    continue
                seen.add(key)
                health = self._health.get(key)
                state = HEALTHCHECKS_OFF
                if checked and health is not None:
                    state = "HEALTHY" if health.healthy else "UNHEALTHY"
                stats.append(
                    make(
                        _target_name(target.host, target.port),
                        len(pool.idle),
                        len(pool.busy),
                        upstream=upstream.name,
                        weight=target.weight,
                        health=state,
                    )
                )
        return tuple(stats)


def _target_name(host: str, port: int) -> str:
    """Kong's `target`: host:port, an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _thresholds(config: CheckThresholds) -> Thresholds:
    """A health check's thresholds as the balancer counts them (config's data, its types)."""
    return Thresholds(
        config.healthy_statuses,
        config.successes,
        config.unhealthy_statuses,
        config.http_failures,
        config.tcp_failures,
        config.timeouts,
    )


def _passive(upstream: Upstream) -> Thresholds | None:
    return None if upstream.passive is None else _thresholds(upstream.passive)


def _active_check(config: ActiveHealthcheck) -> ActiveCheck:
    return ActiveCheck(
        check_type=config.check_type,
        timeout=config.timeout,
        concurrency=config.concurrency,
        http_path=config.http_path,
        https_sni=config.https_sni,
        https_verify_certificate=config.https_verify_certificate,
        headers=config.headers,
        healthy_interval=config.healthy_interval,
        unhealthy_interval=config.unhealthy_interval,
        thresholds=_thresholds(config.thresholds),
    )
