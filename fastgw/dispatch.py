"""From a parsed request to its route's plugin chain and upstream: the proxy's request handler.

Everything per route (upstream target, path rewrite, chain) is resolved when the config loads;
a request costs one router lookup and, for a plain route, nothing else. A route whose chain has
a log phase or counts requests gets a `RouteLog`, the exchange's completion hook.
"""

from __future__ import annotations

from collections.abc import Awaitable
from time import monotonic

from fastgw.balancer.target import UpstreamTarget
from fastgw.http import responses
from fastgw.http.exchange import BODY_CHUNKED, CompletionHook, Exchange
from fastgw.pipeline import Chain, Plugin, RouteInfo
from fastgw.routing import Router, needs_normalizing, normalize_path, upstream_path
from fastgw.stats import RouteStats

_NO_ROUTE_BODY, _NO_ROUTE_HEADERS = responses.error_parts(404, responses.NO_ROUTE_MESSAGE)
_BAD_PATH_BODY, _BAD_PATH_HEADERS = responses.error_parts(400, "Bad request: invalid path")


class RouteLog(CompletionHook):
    """A route's log phase: its request counters and its plugins' `log` steps."""

    __slots__ = ("plugins", "route", "stats")

    def __init__(
        self, route: RouteInfo, stats: RouteStats | None, plugins: tuple[Plugin, ...]
    ) -> None:
        self.route = route
        self.stats = stats
        self.plugins = plugins

    def exchange_complete(self, exchange: Exchange) -> None:
        exchange.finished_at = now = monotonic()
        stats = self.stats
        if stats is not None:
            started = exchange.started_at
            sent = exchange.sent_at or started
            answered = exchange.response_at
            from_upstream = not exchange.responded and answered > 0.0
            stats.record(
                exchange.response_status,
                from_upstream,
                (now - started) * 1000.0,
                (answered - sent) * 1000.0 if answered > 0.0 else -1.0,
                # Kong's: until the request went upstream, or until the local answer
                ((sent if answered > 0.0 else now) - started) * 1000.0,
                exchange.request_size + exchange.body_received,
                exchange.response_size,
            )
        route = self.route
        for plugin in self.plugins:
            plugin.log(exchange, route)


def request_head_size(exchange: Exchange) -> int:
    """The request head's size as parsed: request line, fields, framing, the blank line."""
    size = len(exchange.method) + len(exchange.path) + 13  # " ", " HTTP/1.1\r\n", "\r\n"
    if exchange.query:
        size += len(exchange.query) + 1
    if exchange.host:
        size += len(exchange.host) + 8  # "host: " and CRLF
    for name, value in exchange.headers:
        size += len(name) + len(value) + 4
    if exchange.content_length >= 0:
        size += len(str(exchange.content_length)) + 18  # "content-length: " and CRLF
    elif exchange.body_mode == BODY_CHUNKED:
        size += 28  # "transfer-encoding: chunked" and CRLF
    return size


class RouteTarget:
    """What one (route, path) pair resolves to."""

    __slots__ = (
        "chain",
        "hook",
        "prefix_len",
        "preserve_host",
        "rewrite",
        "service_path",
        "target",
    )

    def __init__(
        self,
        target: UpstreamTarget,
        chain: Chain | None,
        prefix_len: int,
        service_path: bytes,
        preserve_host: bool,
        hook: RouteLog | None = None,
    ) -> None:
        self.target = target
        self.chain = chain
        self.hook = hook
        self.prefix_len = prefix_len
        self.service_path = service_path
        self.preserve_host = preserve_host
        # Stripping a "/" route prefix and joining to an empty service path gives the path back:
        # the catch-all route (the most common one) skips the rewrite.
        self.rewrite = bool(service_path) or prefix_len > 1


class Dispatcher:
    """The wire layer's handler: route, rewrite, run the chain.

    `router` and `unrouted` are replaced together by a reload (`swap`); a request reads them
    once, when it begins, so it finishes on the routes it started with.
    """

    __slots__ = ("router", "unrouted")

    def __init__(self, router: Router[RouteTarget], unrouted: RouteLog | None = None) -> None:
        self.router = router
        # the global plugins' log phase for requests no route takes (Kong logs those too)
        self.unrouted = unrouted

    def swap(self, router: Router[RouteTarget], unrouted: RouteLog | None) -> None:
        self.router = router
        self.unrouted = unrouted

    def handle(self, exchange: Exchange) -> Awaitable[None] | None:
        path = exchange.path
        if needs_normalizing(path):
            normalized = normalize_path(path)
            if normalized is None:
                self._unrouted(exchange)
                exchange.respond(400, _BAD_PATH_BODY, _BAD_PATH_HEADERS)
                return None
            exchange.path = exchange.upstream_path = path = normalized
        route = self.router.match(exchange.method, exchange.host, path)
        if route is None:
            self._unrouted(exchange)
            exchange.respond(404, _NO_ROUTE_BODY, _NO_ROUTE_HEADERS)
            return None
        exchange.target = route.target
        hook = route.hook
        if hook is not None:
            exchange.hook = hook
            exchange.started_at = monotonic()
            exchange.request_size = request_head_size(exchange)
        if route.rewrite:
            exchange.upstream_path = upstream_path(route.prefix_len, route.service_path, path)
        if route.preserve_host and exchange.host:
            exchange.upstream_host = exchange.host
        chain = route.chain
        if chain is not None:
            return chain.run(exchange)
        return None

    def _unrouted(self, exchange: Exchange) -> None:
        hook = self.unrouted
        if hook is not None:
            exchange.hook = hook
            exchange.started_at = monotonic()
            exchange.request_size = request_head_size(exchange)
