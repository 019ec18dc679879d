"""From a parsed request to its route's plugin chain and upstream: the proxy's request handler.

Everything per route (upstream target, path rewrite, chain) is resolved when the config loads;
a request costs one router lookup and, for a plain route, nothing else.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable

from fastgw.balancer.target import UpstreamTarget
from fastgw.http import responses
from fastgw.http.exchange import Exchange
from fastgw.pipeline import Chain
from fastgw.routing import (
    Router,
    needs_normalizing,
    normalize_path,
    upstream_path,
    upstream_path_v1,
)

_NO_ROUTE_BODY, _NO_ROUTE_HEADERS = responses.error_parts(404, responses.NO_ROUTE_MESSAGE)
_BAD_PATH_BODY, _BAD_PATH_HEADERS = responses.error_parts(400, "Bad request: invalid path")


class RouteTarget:
    """What one (route, path) pair resolves to."""

    __slots__ = (
        "chain",
        "path_handling_v1",
        "plain_rewrite",
        "prefix_len",
        "preserve_host",
        "rewrite",
        "service_path",
        "strip_regex",
        "target",
    )

    def __init__(
        self,
        target: UpstreamTarget,
        chain: Chain | None,
        prefix_len: int,
        service_path: bytes,
        preserve_host: bool,
        strip_regex: re.Pattern[bytes] | None = None,
        path_handling_v1: bool = False,
    ) -> None:
        self.target = target
        self.chain = chain
        self.prefix_len = prefix_len
        self.service_path = service_path
        self.preserve_host = preserve_host
        # a regex path with strip_path: how much to strip is the regex match's length
        self.strip_regex = strip_regex
        self.path_handling_v1 = path_handling_v1
        # Stripping a "/" route prefix and joining to an empty service path gives the path back:
        # the catch-all route (the most common one) skips the rewrite.
        self.rewrite = (
            bool(service_path) or prefix_len > 1 or strip_regex is not None or path_handling_v1
        )
        # the common rewrite: v0 with a fixed prefix, done inline by the dispatcher
        self.plain_rewrite = strip_regex is None and not path_handling_v1

    def rewritten(self, path: bytes) -> bytes:
        """The upstream path for a regex strip or `path_handling: v1`."""
        prefix_len = self.prefix_len
        if self.strip_regex is not None:
            found = self.strip_regex.match(path)
            prefix_len = found.end() if found is not None else 0
        if self.path_handling_v1:
            return upstream_path_v1(prefix_len, self.service_path, path)
        return upstream_path(prefix_len, self.service_path, path)


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
        route = self.router.match(exchange.method, exchange.host, path, exchange.headers)
        if route is None:
            exchange.respond(404, _NO_ROUTE_BODY, _NO_ROUTE_HEADERS)
            return None
        exchange.target = route.target
        if route.rewrite:
            if route.plain_rewrite:
                exchange.upstream_path = upstream_path(route.prefix_len, route.service_path, path)
            else:
                exchange.upstream_path = route.rewritten(path)
        if route.preserve_host and exchange.host:
            exchange.upstream_host = exchange.host
        chain = route.chain
        if chain is not None:
            return chain.run(exchange)
        return None
