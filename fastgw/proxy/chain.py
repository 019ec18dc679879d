"""The per-route plugin chain: plugins in Kong's PRIORITY order, run without a task when they can.

Chains are resolved once at config load (route > service > global, like Kong); running a chain
awaits only when a plugin returns an awaitable, so a fully synchronous chain costs no task. A
chain's `log` steps (Kong's log phase) run once the response is complete, only on routes whose
chain has one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from fastgw.observability.counters import StatsOptions
from fastgw.plugins.api import Plugin, RequestContext


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
