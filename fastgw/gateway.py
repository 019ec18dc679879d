"""The embeddable gateway: builds pools, plugins and routes from a config and runs the listeners.

`Gateway(config)` works inside any running asyncio loop: `await start()`, read `addresses`,
`await stop()`. The CLI runs one per worker process.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import socket
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, Literal

from fastgw import plugins
from fastgw.admin import AdminHandler
from fastgw.balancer.target import UpstreamTarget
from fastgw.balancer.upstreams import UpstreamSet
from fastgw.config import GatewayConfig, PluginEntry, Route, Service
from fastgw.dispatch import Dispatcher, RouteTarget
from fastgw.edge_config import Listener
from fastgw.http.server import Server
from fastgw.http.timers import Ticker
from fastgw.http.tls import sni_contexts
from fastgw.http.upstream import UpstreamPool
from fastgw.http.vocabulary import DEFAULT_PORTS
from fastgw.pipeline import Chain, Plugin
from fastgw.routing import Router, compile_path_regex, is_regex_path
from fastgw.stats import GatewayStats, PoolStats
from fastgw.trust import pem_bundle, upstream_context

if TYPE_CHECKING:
    from fastgw.http.client import HttpClient

log = logging.getLogger("fastgw")

# Pending connections the kernel queues per listener; nginx's default on Linux is 511.
LISTEN_BACKLOG = 1024
# File descriptors kept from client connections: listeners, the loop's own, logs, IdP and Redis
# clients and, above all, one upstream connection per request in flight (nginx counts both kinds
# against worker_connections). An eighth of the open-file limit, and at least 64.
FD_RESERVE_MIN = 64
FD_RESERVE_DIVISOR = 8


Address = tuple[str, int]


class Gateway:
    """One gateway instance: a proxy listener, an optional admin listener, and their state.

    `listen` and `admin_listen` override the config's addresses; `admin_listen="off"` runs
    no admin listener (as `--admin-listen off` does).
    """

    def __init__(
        self,
        config: GatewayConfig,
        *,
        listen: Address | tuple[Listener, ...] | None = None,
        admin_listen: Address | Literal["off"] | None = None,
        reuse_port: bool = False,
    ) -> None:
        settings = config.settings
        self.config = config
        # the proxy listeners: an (host, port) given here is one plain listener
        self.listeners: tuple[Listener, ...]
        if listen is None:
            self.listeners = settings.listeners
        elif isinstance(listen[0], Listener):
            self.listeners = listen  # type: ignore[assignment]
        else:
            self.listeners = (Listener(*listen),)  # type: ignore[arg-type]
        self.listen = (self.listeners[0].host, self.listeners[0].port)
        self.admin_listen: Address | None
        if admin_listen is None:
            self.admin_listen = settings.admin_listen
        elif admin_listen == "off":
            self.admin_listen = None
        else:
            self.admin_listen = admin_listen
        self.reuse_port = reuse_port
        self.ticker = Ticker()
        self.pools: list[UpstreamPool] = []
        self.plugins: list[Plugin] = []
        self._http_clients: list[plugins.HttpClient] = []
        self._background: set[asyncio.Task[Any]] = set()
        self._servers: list[asyncio.base_events.Server] = []
        self._stopped = asyncio.Event()
        self._started = False
        self._proxy_servers = 0  # the first servers are the proxy listeners, then the admin
        self.edge = UpstreamSet(config, self.ticker)
        self.tls = (
            sni_contexts(settings.ssl_certificate, config.certificates)
            if any(listener.ssl for listener in self.listeners)
            else None
        )
        # the bound method, not the instance: calling an instance's __call__ costs more
        self.proxy = Server(self._build_dispatcher().handle, settings.limits, self.ticker)
        self.admin = Server(AdminHandler(self.stats).handle, settings.limits, self.ticker)

    # -- building --------------------------------------------------------------------------------

    def _runtime(self) -> plugins.PluginRuntime:
        return plugins.PluginRuntime(
            http_client=self._http_client, spawn=self.spawn, consumers=self.config.consumers
        )

    def _http_client(self, verify_tls: bool, keepalive: bool) -> plugins.HttpClient:
        client = idp_client(self.config, verify_tls, keepalive)
        self._http_clients.append(client)
        return client

    def _build_plugins(self) -> dict[str, Plugin]:
        """One instance per configured occurrence, keyed by its config path."""
        runtime = self._runtime()
        built: dict[str, Plugin] = {}
        config = self.config
        entries: list[PluginEntry] = list(config.plugins)
        for service in config.services:
            entries += service.plugins
            for route in service.routes:
                entries += route.plugins
        for entry in entries:
            if not entry.enabled:
                continue
            spec = plugins.spec(entry.name)
            assert spec is not None  # config validation rejected unknown names
            plugin = spec.build(entry.config, runtime)
            built[entry.path] = plugin
            self.plugins.append(plugin)
        return built

    def _chain(self, built: dict[str, Plugin], service: Service, route: Route) -> Chain | None:
        """Route-level beats service-level beats global, per plugin name (Kong's precedence)."""
        chosen: dict[str, Plugin] = {}
        for scope in (self.config.plugins, service.plugins, route.plugins):
            for entry in scope:
                plugin = built.get(entry.path)
                if plugin is not None:
                    chosen[entry.name] = plugin
                elif not entry.enabled:
                    chosen.pop(entry.name, None)  # disabled at a narrower scope switches it off
        return Chain(list(chosen.values())) if chosen else None

    def _target(self, service: Service) -> UpstreamTarget:
        """A service's own host:port (a service naming a Kong upstream goes through `edge`)."""
        limits = self.config.settings.limits
        context = None
        if service.protocol == "https":
            context = upstream_context(service.tls_verify, service.ca_certificates)
        pool = UpstreamPool(
            service.host,
            service.port,
            self.ticker,
            ssl_context=context,
            server_hostname=service.host,
            size=limits.upstream_pool_size,
            idle_timeout=limits.upstream_idle_timeout,
            max_requests=limits.upstream_max_requests or 2**62,
        )
        self.pools.append(pool)
        host = service.host if ":" not in service.host else f"[{service.host}]"
        if service.port != DEFAULT_PORTS[service.protocol]:
            host = f"{host}:{service.port}"
        return UpstreamTarget(
            pool,
            host.encode("idna"),
            connect_timeout=service.connect_timeout / 1000,
            read_timeout=service.read_timeout / 1000,
            write_timeout=service.write_timeout / 1000,
            retries=service.retries,
        )

    def _build_dispatcher(self) -> Dispatcher:
        built = self._build_plugins()
        entries = []
        for service in self.config.services:
            balanced = self.edge.service_destination(service)
            if balanced is None:
                target: UpstreamTarget | None = self._target(service)
                balancer = None
            else:
                target, balancer = balanced
            service_path = service.path.encode()
            for route in service.routes:
                chain = self._chain(built, service, route)

                def payload(
                    path: str | None,
                    route: Route = route,
                    chain: Chain | None = chain,
                    target: UpstreamTarget | None = target,
                    service_path: bytes = service_path,
                    balancer: Any = balancer,
                ) -> RouteTarget:
                    strip = path is not None and route.strip_path
                    regex = path is not None and is_regex_path(path)
                    prefix_len = len(path.encode()) if (path and strip and not regex) else 0
                    strip_regex = compile_path_regex(path) if (path and strip and regex) else None
                    return RouteTarget(
                        target,
                        chain,
                        prefix_len,
                        service_path,
                        route.preserve_host,
                        strip_regex=strip_regex,
                        path_handling_v1=route.path_handling == "v1",
                        balancer=balancer,
                        https_redirect=(
                            route.https_redirect_status_code if route.requires_tls else 0
                        ),
                    )

                entries.append((route, payload))
        return Dispatcher(Router(entries))

    def stats(self) -> GatewayStats:
        proxy = self.proxy
        return GatewayStats(
            connections_active=len(proxy.connections),
            connections_refused=proxy.refused_total,
            requests_total=proxy.requests_total,
            upstreams=tuple(
                PoolStats(f"{pool.host}:{pool.port}", len(pool.idle), len(pool.busy))
                for pool in self.pools
            )
            + self.edge.target_stats(PoolStats),
            plugins=tuple(sorted({plugin.name for plugin in self.plugins})),
            plugin_metrics=tuple(line for plugin in self.plugins for line in plugin.metrics()),
        )

    # -- running ---------------------------------------------------------------------------------

    def spawn(self, awaitable: Awaitable[Any]) -> asyncio.Task[Any]:
        """Run `awaitable` in the background for as long as the gateway runs."""
        task = asyncio.ensure_future(awaitable)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        loop = asyncio.get_running_loop()
        # Past the open-file limit libuv accepts and drops clients without telling anyone;
        # refusing a little earlier (Server.refuse) leaves fds for upstreams and says so.
        self.proxy.max_connections = self.admin.max_connections = client_connection_limit()
        self.ticker.start()
        self.ticker.add(self.proxy.sweep)
        self.ticker.add(self.admin.sweep)
        for pool in (*self.pools, *self.edge.pools):
            self.ticker.add(pool.sweep)
        for plugin in self.plugins:
            await plugin.start()
        limits = self.config.settings.limits
        for listener in self.listeners:
            context = self.tls if listener.ssl else None
            server = await loop.create_server(
                self.proxy.protocol_factory,
                listener.host or None,
                listener.port,
                reuse_port=self.reuse_port or None,
                backlog=LISTEN_BACKLOG,
                ssl=context,
                # a client that connects and never completes its handshake is bound too
                ssl_handshake_timeout=limits.head_timeout if context is not None else None,
            )
            self._servers.append(server)
        self._proxy_servers = len(self._servers)
        self.proxy.port = self.addresses[0][1]
        self.edge.start()
        if self.admin_listen is not None:
            admin_host, admin_port = self.admin_listen
            admin = await loop.create_server(
                self.admin.protocol_factory,
                admin_host or None,
                admin_port,
                reuse_port=self.reuse_port or None,
            )
            self._servers.append(admin)

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """The bound proxy addresses (useful with port 0), in listener order."""
        return _bound(self._servers[: self._proxy_servers])

    @property
    def bound_listeners(self) -> list[Listener]:
        """The proxy listeners with the ports they bound (useful with port 0)."""
        bound = []
        for listener, server in zip(
            self.listeners, self._servers[: self._proxy_servers], strict=True
        ):
            for address in _bound([server]):
                bound.append(Listener(address[0], address[1], listener.ssl))
        return bound

    @property
    def admin_addresses(self) -> list[tuple[str, int]]:
        return _bound(self._servers[self._proxy_servers :])

    async def stop(self, drain_timeout: float | None = None) -> None:
        """Stop accepting, let in-flight requests finish (bounded), then release everything."""
        if not self._started:
            return
        self._started = False
        timeout = (
            self.config.settings.limits.drain_timeout if drain_timeout is None else drain_timeout
        )
        for server in self._servers:
            server.close()
        self.proxy.start_draining()
        self.admin.start_draining()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (self.proxy.connections or self.admin.connections) and loop.time() < deadline:
            await asyncio.sleep(0.05)
        self.proxy.abort_all()
        self.admin.abort_all()
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
        for plugin in self.plugins:
            try:
                await plugin.stop()
            except Exception:
                log.exception("plugin %s failed to stop", plugin.name)
        for task in tuple(self._background):
            task.cancel()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        for client in self._http_clients:
            await client.close()
        await self.edge.stop()
        for pool in self.pools:
            pool.close()
        self.ticker.stop()
        self._stopped.set()

    async def serve_forever(self) -> None:
        await self.start()
        await self._stopped.wait()


async def probe_plugins(config: GatewayConfig) -> list[tuple[str, str, str]]:
    """(config path, kind, message) for what each enabled plugin finds outside the config
    (`PluginSpec.probe`); the HTTP clients it used are closed before returning."""
    clients: list[HttpClient] = []

    def http_client(verify_tls: bool, keepalive: bool) -> plugins.HttpClient:
        client = idp_client(config, verify_tls, keepalive)
        clients.append(client)
        return client

    runtime = plugins.PluginRuntime(http_client=http_client, consumers=config.consumers)
    entries: list[PluginEntry] = list(config.plugins)
    for service in config.services:
        entries += service.plugins
        for route in service.routes:
            entries += route.plugins
    findings: list[tuple[str, str, str]] = []
    try:
        for entry in entries:
            spec = plugins.spec(entry.name)
            if spec is None or not entry.enabled:
                continue
            for key, kind, message in await spec.probe(entry.config, runtime):
                findings.append((f"{entry.path}.config.{key}", kind, message))
    finally:
        for client in clients:
            await client.close()
    return findings


def idp_client(config: GatewayConfig, verify_tls: bool, keepalive: bool) -> HttpClient:
    """An HTTP client for a plugin's calls to an IdP: the system trust store plus every
    `ca_certificates` entry of the config (fastgw/trust.py)."""
    from fastgw.http.client import HttpClient  # only configs with such plugins need it

    client = HttpClient(verify_tls=verify_tls, keepalive=keepalive)
    if verify_tls and config.ca_certificates:
        # The client builds its context itself and takes no CA list yet; adding the CAs to
        # that context is the one way in without changing the wire layer.
        client._ssl.load_verify_locations(cadata=pem_bundle(config.ca_certificates))
    return client


def client_connection_limit(fd_limit: int | None = None) -> int:
    """Client connections one listener may hold, given the process's open-file (soft) limit."""
    if fd_limit is None:
        fd_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if fd_limit == resource.RLIM_INFINITY:
            return 1 << 62
    return max(1, fd_limit - max(FD_RESERVE_MIN, fd_limit // FD_RESERVE_DIVISOR))


def raise_open_file_limit() -> tuple[int, int]:
    """Raise the soft open-file limit to the hard one (as nginx's worker_rlimit_nofile would).

    Returns (before, after). Idle keep-alive connections each hold a descriptor, and the usual
    soft default of 1024 would cap the gateway at about 900 clients.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft == hard:
        return soft, soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (OSError, ValueError):
        return soft, soft
    return soft, hard


def _bound(servers: list[asyncio.base_events.Server]) -> list[tuple[str, int]]:
    result = []
    for server in servers:
        for sock in server.sockets:
            address = sock.getsockname()
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                result.append((address[0], address[1]))
    return result
