"""The per-route plugin chain and the request-context API that plugins program against.

Chains are resolved once at config load (route > service > global, like Kong); running a chain
awaits only when a plugin returns an awaitable, so a fully synchronous chain costs no task.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from mypy_extensions import mypyc_attr


class RequestContext(Protocol):
    """What a plugin may read and change about one request.

    Header names are lower-case bytes; values are bytes as received. The wire layer's
    `Exchange` implements this protocol directly, so a context costs no extra allocation.
    """

    method: bytes  # b"GET"
    path: bytes  # request path as received, without the query
    query: bytes  # raw query string without "?", b"" when absent
    host: bytes  # Host header value, b"" when absent
    responded: bool  # a plugin answered the client; the chain stops

    @property
    def client_ip(self) -> str: ...

    @property
    def connection_memo(self) -> dict[object, object]:
        """Values a plugin keeps between the requests of one client connection, under a key of
        its own (e.g. the plugin instance): gone with the connection."""

    def get_header(self, name: bytes) -> bytes | None:
        """First value of header `name` (lower-case), or None."""

    def set_header(self, name: bytes, value: bytes) -> None:
        """Replace every header `name` with one header of `value` (upstream request)."""

    def remove_header(self, name: bytes) -> None:
        """Remove every header `name` from the upstream request."""

    def set_query(self, query: bytes) -> None:
        """Replace the query string sent upstream (b"" removes it)."""

    def has_body(self) -> bool:
        """True when the request announces a body (Content-Length > 0 or chunked)."""

    async def read_body(self, limit: int) -> bytes | None:
        """The whole request body if it is at most `limit` bytes, else None.

        The body is still forwarded upstream intact either way.
        """

    def replace_body(self, body: bytes) -> None:
        """Send `body` upstream instead of the received one (after `read_body` returned it)."""

    def respond(
        self, status: int, body: bytes, headers: Sequence[tuple[bytes, bytes]] = ()
    ) -> None:
        """Answer the client directly; the upstream is not contacted."""


# Plugins outside the compiled build (request-termination, a user's own) subclass Plugin.
@mypyc_attr(allow_interpreted_subclasses=True)
class Plugin:
    """One configured plugin instance. Subclasses set `name` and `priority`.

    `access` runs for each request on the routes the instance applies to. It returns None when
    it finished synchronously (the hot path), or an awaitable when it must wait (e.g. the IdP).
    """

    name: str = ""
    priority: int = 0  # higher runs first, as in Kong

    def access(self, ctx: RequestContext) -> Awaitable[None] | None:
        return None

    async def start(self) -> None:
        """Called once when the gateway starts (inside the running loop)."""

    async def stop(self) -> None:
        """Called once when the gateway stops."""

    def metrics(self) -> list[str]:
        """Prometheus text lines for the admin listener's /metrics (none by default)."""
        return []


class Chain:
    """An ordered, immutable list of plugins for one route."""

    __slots__ = ("plugins", "run")

    def __init__(self, plugins: Sequence[Plugin]) -> None:
        self.plugins: tuple[Plugin, ...] = tuple(
            sorted(plugins, key=lambda plugin: plugin.priority, reverse=True)
        )
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
