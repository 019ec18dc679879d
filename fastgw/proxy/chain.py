"""The per-route plugin chain: plugins in Kong's PRIORITY order, run without a task when they can.

Chains are resolved once at config load (route > service > global, like Kong); running a chain
awaits only when a plugin returns an awaitable, so a fully synchronous chain costs no task. A
chain's `log` steps (Kong's log phase) run once the response is complete, only on routes whose
chain has one. A plugin some consumer has its own instance of is a `ConsumerScoped` step, which
picks the instance when the request reaches it (after authentication, as Kong); a route
without consumer-scoped plugins has none.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from fastgw.observability.counters import StatsOptions
from fastgw.plugins.api import Authenticated, LogContext, Plugin, RequestContext, RouteInfo


class Chain:
    """An ordered, immutable list of plugins for one route."""

    __slots__ = ("log_plugins", "plugins", "run", "stats_options")

    def __init__(self, plugins: Sequence[Plugin]) -> None:
        # getattr, not `plugin.priority`: compiled code reads a native attribute's own slot,
        # which a subclass outside the build that sets `priority = 9` in its class body never
        # fills (its class attribute is what Python finds, the slot keeps the base's default)
        self.plugins: tuple[Plugin, ...] = tuple(
            sorted(plugins, key=lambda plugin: int(getattr(plugin, "priority")), reverse=True)  # noqa: B009
        )
        self.log_plugins: tuple[Plugin, ...] = tuple(
            p
            for p in self.plugins
            if getattr(p, "has_log")  # noqa: B009
        )
        self.stats_options: StatsOptions | None = None
        for plugin in self.plugins:
            options = plugin.route_stats()
            if options is not None:
                self.stats_options = options
                break
        # `run(ctx)` runs the chain and returns None when every step finished synchronously,
        # else an awaitable. A one-plugin chain (the common case) is that plugin's own step:
        # one call less per request on the hot path.
        self.run: Callable[[RequestContext], Awaitable[None] | None] = (
            self.plugins[0].access if len(self.plugins) == 1 else self._run_all
        )

    def _run_all(self, ctx: RequestContext) -> Awaitable[None] | None:
        plugins = self.plugins
        for index in range(len(plugins)):
            pending = plugins[index].access(ctx)
            if pending is not None:
                return self._finish(pending, index + 1, ctx)
            if ctx.responded:
                return None
        return None

    async def _finish(self, pending: Awaitable[None], start: int, ctx: RequestContext) -> None:
        await pending
        plugins = self.plugins
        for index in range(start, len(plugins)):
            if ctx.responded:
                return
            step = plugins[index].access(ctx)
            if step is not None:
                await step


class ConsumerScoped(Plugin):
    """One plugin of a route whose config depends on the consumer (Kong's plugin precedence
    with consumers, resolved once per route at config load): `by_consumer` maps a consumer's
    id to its instance (None: the plugin is off for it), `default` is everyone else's (None:
    none). Resolved when the request reaches the step, so the consumer is whoever the
    higher-priority authentication plugins made it; the log phase resolves again the same
    way (the consumer does not change after the access phase)."""

    def __init__(self, default: Plugin | None, by_consumer: dict[str, Plugin | None]) -> None:
        candidates = [p for p in (default, *by_consumer.values()) if p is not None]
        first = candidates[0]
        # getattr, not attributes: a class attribute of a plugin outside the build (see Chain)
        self.name = str(getattr(first, "name"))  # noqa: B009
        self.priority = int(getattr(first, "priority"))  # noqa: B009
        self.has_log = any(getattr(p, "has_log") for p in candidates)  # noqa: B009
        sensitive: set[bytes] = set()
        for plugin in candidates:
            sensitive |= getattr(plugin, "sensitive_headers")  # noqa: B009
        self.sensitive_headers = frozenset(sensitive)
        self.default = default
        self.by_consumer = by_consumer
        self._stats = (default or first).route_stats()

    def chosen(self, ctx: RequestContext) -> Plugin | None:
        principal = ctx.principal
        if isinstance(principal, Authenticated) and principal.consumer is not None:
            consumer_id = principal.consumer.id
            if consumer_id in self.by_consumer:
                return self.by_consumer[consumer_id]
        return self.default

    def access(self, ctx: RequestContext) -> Awaitable[None] | None:
        plugin = self.chosen(ctx)
        return plugin.access(ctx) if plugin is not None else None

    def log(self, ctx: LogContext, route: RouteInfo) -> None:
        plugin = self.chosen(ctx)
        if plugin is not None and getattr(plugin, "has_log"):  # noqa: B009
            plugin.log(ctx, route)

    def route_stats(self) -> StatsOptions | None:
        """What the route counts is the route's (a consumer's own prometheus instance cannot
        change what a route counts): the default instance's, else the first consumer's."""
        return self._stats
