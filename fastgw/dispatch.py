"""From a parsed request to its route's plugin chain and upstream: the proxy's request handler.

Everything per route (upstream target, path rewrite, chain) is resolved when the config loads;
a request costs one router lookup and, for a plain route, nothing else.
"""

from __future__ import annotations

from collections.abc import Awaitable

from fastgw.balancer.target import UpstreamTarget
from fastgw.http import responses
from fastgw.http.exchange import Exchange
from fastgw.pipeline import Chain
from fastgw.routing import Router, needs_normalizing, normalize_path, upstream_path

_NO_ROUTE_BODY, _NO_ROUTE_HEADERS = responses.error_parts(404, responses.NO_ROUTE_MESSAGE)
_BAD_PATH_BODY, _BAD_PATH_HEADERS = responses.error_parts(400, "Bad request: invalid path")


class RouteTarget:
    """What one (route, path) pair resolves to."""

    __slots__ = ("chain", "prefix_len", "preserve_host", "rewrite", "service_path", "target")

    def __init__(
        self,
        target: UpstreamTarget,
        chain: Chain | None,
        prefix_len: int,
        service_path: bytes,
        preserve_host: bool,
    ) -> None:
        self.target = target
        self.chain = chain
        self.prefix_len = prefix_len
        self.service_path = service_path
        self.preserve_host = preserve_host
        # Stripping a "/" route prefix and joining to an empty service path gives the path back:
        # the catch-all route (the most common one) skips the rewrite.
        self.rewrite = bool(service_path) or prefix_len > 1


class Dispatcher:
    """The wire layer's handler: route, rewrite, run the chain."""

    __slots__ = ("router",)

    def __init__(self, router: Router[RouteTarget]) -> None:
        self.router = router

    def handle(self, exchange: Exchange) -> Awaitable[None] | None:
        path = exchange.path
        if needs_normalizing(path):
            normalized = normalize_path(path)
            if normalized is None:
                exchange.respond(400, _BAD_PATH_BODY, _BAD_PATH_HEADERS)
                return None
            exchange.path = exchange.upstream_path = path = normalized
        route = self.router.match(exchange.method, exchange.host, path)
        if route is None:
            exchange.respond(404, _NO_ROUTE_BODY, _NO_ROUTE_HEADERS)
            return None
        exchange.target = route.target
        if route.rewrite:
            exchange.upstream_path = upstream_path(route.prefix_len, route.service_path, path)
        if route.preserve_host and exchange.host:
            exchange.upstream_host = exchange.host
        chain = route.chain
        if chain is not None:
            return chain.run(exchange)
        return None
