"""From a parsed request to its route's plugin chain and upstream: the proxy's request handler.

Everything per route (upstream target, path rewrite, chain) is resolved when the config loads;
a request costs one router lookup and, for a plain route, nothing else.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable
from typing import Final

from fastgw.balancer.balancer import Balancer
from fastgw.balancer.target import UpstreamTarget
from fastgw.http import responses
from fastgw.http.exchange import Exchange
from fastgw.http.vocabulary import host_without_port
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
# Kong's answer when a route that requires TLS is asked over plain HTTP (RFC 9110 §15.5.22: a
# 426 names the protocol to upgrade to).
_USE_HTTPS_BODY, _USE_HTTPS_HEADERS = responses.error_parts(426, "Please use HTTPS protocol")
_USE_HTTPS_426_HEADERS: Final = (
    *_USE_HTTPS_HEADERS,
    (b"connection", b"Upgrade"),
    (b"upgrade", b"TLS/1.2, HTTP/1.1"),
)


class RouteTarget:
    """What one (route, path) pair resolves to."""

    __slots__ = (
        "balancer",
        "chain",
        "https_redirect",
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
        target: UpstreamTarget | None,
        chain: Chain | None,
        prefix_len: int,
        service_path: bytes,
        preserve_host: bool,
        strip_regex: re.Pattern[bytes] | None = None,
        path_handling_v1: bool = False,
        balancer: Balancer | None = None,
        https_redirect: int = 0,
    ) -> None:
        self.target = target  # for a balanced service: where it goes when nothing else is known
        self.balancer = balancer  # the service's Kong upstream (None: one target, nothing to pick)
        self.chain = chain
        self.prefix_len = prefix_len
        self.service_path = service_path
        self.preserve_host = preserve_host
        # a regex path with strip_path: how much to strip is the regex match's length
        self.strip_regex = strip_regex
        self.path_handling_v1 = path_handling_v1
        # the route requires TLS: the status (426, or a redirect) for a request without it
        self.https_redirect = https_redirect
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

    __slots__ = ("router", "sni_routing")

    def __init__(self, router: Router[RouteTarget]) -> None:
        self.router = router
        self.sni_routing = router.has_snis  # only then is the TLS server name read per request

    def handle(self, exchange: Exchange) -> Awaitable[None] | None:
        path = received = exchange.path
        if needs_normalizing(path):
            normalized = normalize_path(path)
            if normalized is None:
                exchange.respond(400, _BAD_PATH_BODY, _BAD_PATH_HEADERS)
                return None
            exchange.path = exchange.upstream_path = path = normalized
        if self.sni_routing:
            route = self.router.match(
                exchange.method, exchange.host, path, exchange.headers, exchange.client.server_name
            )
        else:
            route = self.router.match(exchange.method, exchange.host, path, exchange.headers)
        if route is None:
            exchange.respond(404, _NO_ROUTE_BODY, _NO_ROUTE_HEADERS)
            return None
        if route.https_redirect and exchange.client.server_name is None:
            self._ask_for_https(exchange, route.https_redirect, received)
            return None
        exchange.target = route.target
        if route.balancer is not None:
            exchange.balancer = route.balancer
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

    @staticmethod
    def _ask_for_https(exchange: Exchange, status: int, received_path: bytes) -> None:
        """Kong: 426, or a redirect to the same URL over https (the Host without its port)."""
        if status == 426:
            exchange.respond(426, _USE_HTTPS_BODY, _USE_HTTPS_426_HEADERS)
            return
        location = b"https://" + host_without_port(exchange.host) + received_path
        if exchange.query:
            location += b"?" + exchange.query
        exchange.respond(status, b"", ((b"location", location),))
