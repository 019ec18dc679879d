"""Upstream pools and targets built from the config: the one place a service's (or a Kong
upstream target's) connection pool, TLS context, Host line and timeouts are made.

Used by the runtime for a service's own host and by the upstream set for each target of a Kong
upstream; nothing here runs per request.
"""

from __future__ import annotations

from fastgw.balancer.health import Thresholds
from fastgw.config import Limits, Service
from fastgw.config.trust import pem_bundle
from fastgw.http.timers import Ticker
from fastgw.http.tls import upstream_context
from fastgw.http.upstream import UpstreamPool
from fastgw.http.vocabulary import DEFAULT_PORTS
from fastgw.proxy.targets import UpstreamTarget

# Kong's upstream_keepalive_max_requests 0 means no limit: a number no connection reaches.
UNLIMITED_REQUESTS = 2**62


def max_requests(limits: Limits) -> int:
    return limits.upstream_max_requests or UNLIMITED_REQUESTS


def new_pool(
    service: Service, host: str, port: int, server_hostname: str, limits: Limits, ticker: Ticker
) -> UpstreamPool:
    """A pool of connections to `host`:`port` for `service` (TLS as its protocol, trust and
    tls_verify say; `server_hostname` is the name the TLS handshake checks)."""
    context = None
    if service.protocol == "https":
        context = upstream_context(service.tls_verify, pem_bundle(service.ca_certificates) or None)
    return UpstreamPool(
        host,
        port,
        ticker,
        ssl_context=context,
        server_hostname=server_hostname,
        size=limits.upstream_pool_size,
        idle_timeout=limits.upstream_idle_timeout,
        max_requests=max_requests(limits),
    )


def host_header(host: str, port: int, protocol: str) -> bytes:
    """Kong's Host towards an upstream: the host (an IPv6 address in brackets), with its port
    unless it is the protocol's default."""
    name = host if ":" not in host else f"[{host}]"
    if port != DEFAULT_PORTS[protocol]:
        name = f"{name}:{port}"
    return name.encode("idna")


def target(
    pool: UpstreamPool,
    host: bytes,
    service: Service,
    *,
    name: str = "",
    upstream_name: str = "",
    weight: int = 100,
    passive: Thresholds | None = None,
) -> UpstreamTarget:
    """A target on `pool` with the service's timeouts (Kong's milliseconds, here seconds); a
    target of a Kong upstream also has its name, upstream, weight and passive thresholds."""
    return UpstreamTarget(
        pool,
        host,
        connect_timeout=service.connect_timeout / 1000,
        read_timeout=service.read_timeout / 1000,
        write_timeout=service.write_timeout / 1000,
        name=name,
        upstream_name=upstream_name,
        weight=weight,
        passive=passive,
    )
