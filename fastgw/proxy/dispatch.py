"""From a parsed request to its route's plugin chain and upstream: the proxy's request handler.

Everything per route (upstream target, path rewrite, chain) is resolved when the config loads;
a request costs one router lookup and, for a plain route, nothing else. A route whose chain has
a log phase or counts requests gets a `RouteLog`, the exchange's completion hook.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Iterable
from time import monotonic
from typing import Final

from fastgw.http import responses
from fastgw.http.exchange import BODY_CHUNKED, CompletionHook, Exchange, Forwarding
from fastgw.http.hop import Hop
from fastgw.http.vocabulary import host_without_port
from fastgw.observability.counters import RouteStats
from fastgw.plugins.api import Authenticated, Plugin, RouteInfo
from fastgw.plugins.identity import IDENTITY_HEADERS
from fastgw.proxy.chain import Chain
from fastgw.proxy.path_rules import (
    KEEP_UNCHANGED,
    REJECT_REQUEST,
    UNESCAPE_AND_FORWARD,
    PathRules,
)
from fastgw.proxy.routing import (
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


def consumer_label(exchange: Exchange) -> str:
    """Kong's `consumer` label (prometheus per_consumer): the authenticated consumer's
    username, "" when there is none."""
    principal = exchange.principal
    if isinstance(principal, Authenticated) and principal.consumer is not None:
        return principal.consumer.username or ""
    return ""


def owned_fields(plugins: Iterable[Plugin]) -> tuple[frozenset[bytes], frozenset[bytes]]:
    """What the wire withholds (Kong's identity headers, owned by fastgw.plugins.identity: a
    client's copy and any "_" alias of it are dropped before plugins run) and what it owns
    besides (the headers the configured plugins set): fastgw.http.server.Server.own_fields."""
    owned: set[bytes] = set()
    for plugin in plugins:
        owned |= plugin.owned_headers
    return IDENTITY_HEADERS, frozenset(owned)


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
                consumer_label(exchange) if stats.per_consumer else "",
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
        "forwarding",
        "hook",
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
        target: Hop | None,
        forwarding: Forwarding,
        chain: Chain | None,
        prefix_len: int,
        service_path: bytes,
        preserve_host: bool,
        hook: RouteLog | None = None,
        strip_regex: re.Pattern[bytes] | None = None,
        path_handling_v1: bool = False,
        https_redirect: int = 0,
    ) -> None:
        # Where the request goes when nothing is left to choose (one target): handed to the
        # exchange, which then asks the forwarding nothing unless an attempt fails. None for a
        # balanced service: the forwarding picks a target once the plugins ran.
        self.target = target
        self.forwarding = forwarding  # fastgw.proxy.forwarding: the service's Direct or Balanced
        self.chain = chain
        self.hook = hook
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
    """The wire layer's handler: route, rewrite, run the chain.

    `router` and `unrouted` are replaced together by a reload (`swap`); a request reads them
    once, when it begins, so it finishes on the routes it started with.
    """

    __slots__ = ("path_rules", "router", "sni_routing", "unrouted")

    def __init__(
        self,
        router: Router[RouteTarget],
        unrouted: RouteLog | None = None,
        path_rules: PathRules | None = None,
    ) -> None:
        self.router = router
        self.sni_routing = router.has_snis  # only then is the TLS server name read per request
        # the global plugins' log phase for requests no route takes (Kong logs those too)
        self.unrouted = unrouted
        # what escaped slashes and backslashes do (fastgw/proxy/path_rules.py); None: nothing
        self.path_rules = path_rules

    def swap(
        self,
        router: Router[RouteTarget],
        unrouted: RouteLog | None,
        path_rules: PathRules | None = None,
    ) -> None:
        self.router = router
        self.sni_routing = router.has_snis
        self.unrouted = unrouted
        self.path_rules = path_rules

    def handle(self, exchange: Exchange) -> Awaitable[None] | None:
        path = received = exchange.path
        rules = self.path_rules
        if rules is not None:
            action, path = rules.apply(path)
            if action != KEEP_UNCHANGED and not self._ruled(exchange, action, path):
                return None  # answered: 400 or a redirect
        if needs_normalizing(path):
            normalized = normalize_path(path)
            if normalized is None:
                self._unrouted(exchange)
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
            self._unrouted(exchange)
            exchange.respond(404, _NO_ROUTE_BODY, _NO_ROUTE_HEADERS)
            return None
        if route.https_redirect and exchange.client.server_name is None:
            self._ask_for_https(exchange, route.https_redirect, received)
            return None
        exchange.target = route.target
        exchange.forwarding = route.forwarding
        hook = route.hook
        if hook is not None:
            exchange.hook = hook
            exchange.started_at = monotonic()
            exchange.request_size = request_head_size(exchange)
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

    def _ruled(self, exchange: Exchange, action: int, path: bytes) -> bool:
        """A path rule applied: False when it answered (400, or a 307 to the path as the
        upstream would read it), True when the request goes on with the unescaped path."""
        if action != REJECT_REQUEST:
            normalized = normalize_path(path) if needs_normalizing(path) else path
            if normalized is not None:
                if action == UNESCAPE_AND_FORWARD:
                    exchange.path = exchange.upstream_path = normalized
                    return True
                location = normalized + b"?" + exchange.query if exchange.query else normalized
                self._unrouted(exchange)
                exchange.respond(307, b"", ((b"location", location),))
                return False
        self._unrouted(exchange)
        exchange.respond(400, _BAD_PATH_BODY, _BAD_PATH_HEADERS)
        return False

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

    def _unrouted(self, exchange: Exchange) -> None:
        hook = self.unrouted
        if hook is not None:
            exchange.hook = hook
            exchange.started_at = monotonic()
            exchange.request_size = request_head_size(exchange)
