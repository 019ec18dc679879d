"""The embeddable gateway: builds pools, plugins and routes from a config and runs the listeners.

`Gateway(config)` works inside any running asyncio loop: `await start()`, read `addresses`,
`await stop()`. The CLI runs one per worker process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Literal

from fastgw import plugins
from fastgw.admin import AdminHandler
from fastgw.config import CertificatePair, GatewayConfig, Listener, Settings
from fastgw.config.trust import pem_bundle
from fastgw.http import tls
from fastgw.http.server import Server
from fastgw.http.timers import Ticker
from fastgw.http.tls import sni_contexts
from fastgw.http.upstream import UpstreamPool
from fastgw.observability.process_memory import resident_bytes
from fastgw.observability.snapshot import GatewayStats, PluginStatus, PoolStats
from fastgw.observability.stores import collect
from fastgw.plugins import building as plugin_api
from fastgw.plugins.api import Plugin
from fastgw.plugins.common.client_address import ClientAddress
from fastgw.process.limits import client_connection_limit
from fastgw.process.listeners import Listening, ProxyListeners, bound_addresses
from fastgw.process.memory import HeapTrimmer
from fastgw.proxy.dispatch import Dispatcher, owned_fields
from fastgw.proxy.path_rules import PathRules
from fastgw.proxy.runtime import PluginSlot, build_runtime

if TYPE_CHECKING:
    from fastgw.http.client import HttpClient
    from fastgw.process.control import Siblings

log = logging.getLogger("fastgw")


Address = tuple[str, int]


class Gateway:
    """One gateway instance: a proxy listener, an optional admin listener, and their state.

    `listen` and `admin_listen` override the config's addresses; `admin_listen="off"` runs
    no admin listener (as `--admin-listen off` does). `reload(config)` swaps routes, services
    and plugins while it serves; `siblings` (the other workers of a `--workers N` instance)
    make the admin listener answer for the whole instance.
    """

    def __init__(
        self,
        config: GatewayConfig,
        *,
        listen: Address | tuple[Listener, ...] | None = None,
        admin_listen: Address | Literal["off"] | None = None,
        reuse_port: bool = False,
        node_id: str | None = None,
        siblings: Siblings | None = None,
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
        self._listen_overridden = listen is not None
        self._admin_overridden = admin_listen is not None
        self.reuse_port = reuse_port
        self.node_id = node_id or str(uuid.uuid4())
        self.ticker = Ticker()
        self._background: set[asyncio.Task[Any]] = set()
        self._admin_servers: list[Listening] = []  # the proxy's are in _listeners
        self._stopped = asyncio.Event()
        self._started = False
        self.tls = (
            _server_context(config) if any(listener.ssl for listener in self.listeners) else None
        )
        # replaced by a reload, stopped or closed after a drain
        self._retiring: list[PluginSlot] = []
        self._retiring_pools: list[UpstreamPool] = []
        self._reload_lock = asyncio.Lock()
        self.generation = 0
        # what plugins keep across instances and reloads (PluginRuntime.shared)
        self._plugin_shared: dict[str, Any] = {}
        self.runtime = build_runtime(config, self.ticker, partial(self._plugin_runtime, config))
        self.dispatcher = Dispatcher(
            self.runtime.router, self.runtime.unrouted, path_rules_of(settings)
        )
        # the bound method, not the instance: calling an instance's __call__ costs more
        self.proxy = Server(self.dispatcher.handle, settings.limits, self.ticker)
        self.proxy.own_fields(*owned_fields(self.runtime.plugins))
        self.admin = Server(AdminHandler(self.stats, siblings).handle, settings.limits, self.ticker)
        self.heap = HeapTrimmer(lambda: self.proxy.admission.open)
        self._listeners = ProxyListeners(self.proxy, reuse_port)

    # -- building --------------------------------------------------------------------------------

    def _plugin_runtime(self, config: GatewayConfig) -> plugin_api.PluginRuntime:
        """What one new plugin instance of `config` is built with."""
        return plugin_runtime(config, self.spawn, self._plugin_shared)

    @property
    def plugins(self) -> list[Plugin]:
        """The plugin instances the current config runs."""
        return self.runtime.plugins

    @property
    def pools(self) -> list[UpstreamPool]:
        """The upstream pools of the current config's services, in config order."""
        return [pool for _, pool in self.runtime.pools]

    def stats(self) -> GatewayStats:
        proxy = self.proxy
        admission = proxy.admission
        runtime = self.runtime
        return GatewayStats(
            connections_active=len(proxy.connections),
            connections_refused=proxy.admission.refused_total,
            requests_total=proxy.requests_total,
            upstreams=tuple(
                PoolStats(f"{pool.host}:{pool.port}", len(pool.idle), len(pool.busy))
                for pool in self.pools
            )
            + self.runtime.edge.target_stats(PoolStats),
            plugins=tuple(sorted({plugin.name for plugin in self.plugins})),
            plugin_metrics=tuple(family for plugin in self.plugins for family in plugin.metrics()),
            connections_accepted=proxy.admission.accepted_total,
            connection_states=proxy.connection_states(),
            route_stats=tuple(runtime.route_stats.values()),
            plugin_status=tuple(
                PluginStatus(slot.plugin.name, slot.path, slot.plugin.status())
                for slot in runtime.slots
            ),
            node_id=self.node_id,
            config_generation=self.generation,
            stores=collect(plugin.stores() for plugin in self.plugins),
            pid=os.getpid(),
            memory_bytes=resident_bytes(),
            client_addresses=(len(admission.addresses), admission.max_connections),
            tls_handshakes=admission.handshakes,
        )

    # -- reloading -------------------------------------------------------------------------------

    async def reload(self, config: GatewayConfig) -> None:
        """Serve `config` from the next request on (a validated config: `load_config`).

        Plugin instances whose config is unchanged carry on (token caches included), new ones
        start first; requests under way finish on the config they began with, and what the
        new config dropped is stopped `drain_timeout` later. Raises what building raises, and
        then nothing changed.
        """
        async with self._reload_lock:
            runtime = build_runtime(
                config, self.ticker, partial(self._plugin_runtime, config), self.runtime
            )
            started: list[Plugin] = []
            try:
                if self._started:
                    for plugin in runtime.fresh:
                        await plugin.start()
                        started.append(plugin)
                    await self._change_listeners(config)  # all or none: an OSError undoes it
            except BaseException:
                for plugin in started:
                    with contextlib.suppress(Exception):
                        await plugin.stop()
                for slot in runtime.slots:
                    if slot.plugin in runtime.fresh:
                        await _close_clients(slot.clients)
                raise
            previous = self.runtime
            self._warn_restart_needed(config)
            self.config = config
            self.runtime = runtime
            self.dispatcher.swap(runtime.router, runtime.unrouted, path_rules_of(config.settings))
            self.proxy.own_fields(*owned_fields(runtime.plugins))
            # new connections get the new limits; open ones keep theirs
            self.proxy.set_limits(config.settings.limits)
            old_pools = {id(pool) for _, pool in previous.pools}
            for _, pool in runtime.pools:
                if id(pool) not in old_pools and self._started:
                    self.ticker.add(pool.sweep)
            if self._started:
                for pool in runtime.edge.pools:
                    self.ticker.add(pool.sweep)
                runtime.edge.start()
            self.generation += 1
            self._retire(
                runtime.retired_plugins,
                [*runtime.retired_pools, *previous.edge.pools],
                config,
                previous.edge.stop_checks,
            )

    async def _change_listeners(self, config: GatewayConfig) -> None:
        """A reload's listen set (unless the command line gave one): the new listeners open,
        the dropped ones stop accepting and drain their connections with the drain's grace."""
        listeners = config.settings.listeners
        if self._listen_overridden or listeners == self.listeners:
            return
        tls = self.tls
        if tls is None and any(listener.ssl for listener in listeners):
            tls = _server_context(config)
        await self._listeners.change(listeners, tls, config.settings.limits.ssl_handshake_timeout)
        self.tls = tls
        self.listeners = listeners
        self.listen = (listeners[0].host, listeners[0].port)
        self.proxy.port = self.addresses[0][1]
        log.info("reload: listening on %s", ", ".join(str(item) for item in self.bound_listeners))

    def _warn_restart_needed(self, config: GatewayConfig) -> None:
        old, new = self.config.settings, config.settings
        changed = []
        if new.admin_listen != old.admin_listen and not self._admin_overridden:
            changed.append("admin_listen")
        if new.workers != old.workers:
            changed.append("workers")
        if changed:
            log.warning(
                "reload: _fastgw %s changed; the admin listener and the worker count stay as "
                "they are until a restart",
                ", ".join(changed),
            )

    def _retire(
        self,
        slots: list[PluginSlot],
        pools: list[UpstreamPool],
        config: GatewayConfig,
        stop_checks: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        for pool in pools:
            # no more keep-alive: released connections close, idle ones go now
            pool.size = 0
            idle, pool.idle = pool.idle, []
            for conn in idle:
                conn.close()
        self._retiring += slots
        self._retiring_pools += pools
        if not slots and not pools:
            return

        async def later() -> None:
            if stop_checks is not None:
                await stop_checks()  # the old upstreams' active health checks
            await asyncio.sleep(config.settings.limits.drain_timeout)
            for pool in pools:
                self._close_pool(pool)
            for slot in slots:
                await self._stop_slot(slot)

        self.spawn(later())

    def _close_pool(self, pool: UpstreamPool) -> None:
        if pool in self._retiring_pools:
            self._retiring_pools.remove(pool)
        self.ticker.remove(pool.sweep)
        pool.close()

    async def _stop_slot(self, slot: PluginSlot) -> None:
        if slot in self._retiring:
            self._retiring.remove(slot)
        try:
            await slot.plugin.stop()
        except Exception:
            log.exception("plugin %s failed to stop", slot.plugin.name)
        await _close_clients(slot.clients)

    def reopen(self) -> None:
        """SIGUSR1: plugins that write files reopen them (after logrotate moved them)."""
        for plugin in self.plugins:
            try:
                plugin.reopen()
            except Exception:
                log.exception("plugin %s failed to reopen its files", plugin.name)

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
        # refusing a little earlier (fastgw/http/admission.py) leaves fds for upstreams and
        # says so.
        self.proxy.admission.max_connections = client_connection_limit()
        self.admin.admission.max_connections = self.proxy.admission.max_connections
        self.ticker.start()
        self.ticker.add(self.proxy.sweep)
        self.ticker.add(self.admin.sweep)
        # after a flood of connections (TLS handshakes above all), RSS comes back down
        self.ticker.add(self.heap.sweep)
        for pool in (*self.pools, *self.runtime.edge.pools):
            self.ticker.add(pool.sweep)
        for plugin in self.plugins:
            await plugin.start()
        await self._listeners.open(
            self.listeners, self.tls, self.config.settings.limits.ssl_handshake_timeout
        )
        self.proxy.port = self.addresses[0][1]
        self.runtime.edge.start()
        if self.admin_listen is not None:
            admin_host, admin_port = self.admin_listen
            admin = await loop.create_server(
                self.admin.protocol_factory,
                admin_host or None,
                admin_port,
                reuse_port=self.reuse_port or None,
            )
            self._admin_servers.append(admin)

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """The bound proxy addresses (useful with port 0), in listener order."""
        return bound_addresses(self._listeners.servers)

    @property
    def bound_listeners(self) -> list[Listener]:
        """The proxy listeners with the ports they bound (useful with port 0)."""
        bound = []
        for listener, server in self._listeners.bound:
            for address in bound_addresses([server]):
                bound.append(Listener(address[0], address[1], listener.ssl))
        return bound

    @property
    def admin_addresses(self) -> list[tuple[str, int]]:
        return bound_addresses(self._admin_servers)

    async def stop(self, drain_timeout: float | None = None) -> None:
        """Stop accepting, let in-flight requests finish (bounded), then release everything."""
        if not self._started:
            return
        self._started = False
        timeout = (
            self.config.settings.limits.drain_timeout if drain_timeout is None else drain_timeout
        )
        self._listeners.close()
        for server in self._admin_servers:
            server.close()
        self.proxy.start_draining()
        self.admin.start_draining()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (
            self.proxy.connections or self.proxy.admission.handshakes or self.admin.connections
        ) and loop.time() < deadline:
            await asyncio.sleep(0.05)
        self._listeners.abort_handshakes()
        self.proxy.abort_all()
        self.admin.abort_all()
        await self._listeners.wait_closed()
        for server in self._admin_servers:
            await server.wait_closed()
        self._admin_servers.clear()
        for task in tuple(self._background):
            task.cancel()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        for slot in (*self.runtime.slots, *self._retiring):
            await self._stop_slot(slot)
        for pool in (*self.pools, *self._retiring_pools):
            self._close_pool(pool)
        await self.runtime.edge.stop()
        self.ticker.stop()
        self._stopped.set()

    async def serve_forever(self) -> None:
        await self.start()
        await self._stopped.wait()


async def probe_plugins(config: GatewayConfig) -> list[tuple[str, str, str]]:
    """(config path, kind, message) for what each enabled plugin finds outside the config
    (`PluginSpec.probe`); the HTTP clients it used are closed before returning."""
    runtime = plugin_runtime(config)
    findings: list[tuple[str, str, str]] = []
    try:
        for entry in config.plugin_entries():
            spec = plugins.spec(entry.name)
            if spec is None or not entry.enabled:
                continue
            for key, kind, message in await spec.probe(entry.config, runtime):
                findings.append((f"{entry.path}.config.{key}", kind, message))
    finally:
        await _close_clients(runtime.clients)
    return findings


def plugin_runtime(
    config: GatewayConfig,
    spawn: Callable[[Awaitable[Any]], Any] | None = None,
    shared: dict[str, Any] | None = None,
) -> plugin_api.PluginRuntime:
    """What a plugin instance of `config` is built with; the HTTP clients it makes are listed
    in the runtime's `clients` (closed when the instance retires). `shared`: the gateway's
    state plugins keep across instances (a fresh one when None: `fastgw check`)."""
    clients: list[plugin_api.HttpClient] = []

    def http_client(verify_tls: bool, keepalive: bool) -> plugin_api.HttpClient:
        client = idp_client(config, verify_tls, keepalive)
        clients.append(client)
        return client

    runtime = plugin_api.PluginRuntime(
        http_client=http_client,
        consumers=config.consumers,
        clients=clients,
        client_address=ClientAddress(config.settings.real_ip),
        namespace=config.settings.namespace,
        server_address=config.settings.listen,
        ca_pem=pem_bundle(config.ca_certificates) or None,
    )
    if spawn is not None:
        runtime.spawn = spawn
    if shared is not None:
        runtime.shared = shared
    return runtime


def idp_client(config: GatewayConfig, verify_tls: bool, keepalive: bool) -> HttpClient:
    """An HTTP client for a plugin's calls to an IdP: the system trust store plus every
    `ca_certificates` entry of the config (fastgw/config/trust.py)."""
    from fastgw.http.client import HttpClient  # only configs with such plugins need it

    return HttpClient(
        verify_tls=verify_tls,
        keepalive=keepalive,
        ca_pem=pem_bundle(config.ca_certificates) or None,
    )


async def _close_clients(clients: Iterable[plugin_api.HttpClient]) -> None:
    for client in clients:
        try:
            await client.close()
        except Exception:
            log.exception("closing an HTTP client failed")


def path_rules_of(settings: Settings) -> PathRules | None:
    return PathRules.of(settings.path_with_escaped_slashes_action, settings.path_backslash_action)


@dataclass(frozen=True, slots=True)
class _WireCertificate:
    pair: tls.CertificatePair
    snis: tuple[str, ...]


def _wire_pair(pair: CertificatePair) -> tls.CertificatePair:
    """Config's certificate pair as the wire's type (the wire imports nothing of config)."""
    return tls.CertificatePair(pair.cert, pair.key, pair.cert_alt, pair.key_alt)


def _server_context(config: GatewayConfig) -> ssl.SSLContext:
    """The HTTPS listeners' context: the default certificate, and each certificate entity's."""
    default = config.settings.ssl_certificate
    return sni_contexts(
        None if default is None else _wire_pair(default),
        [_WireCertificate(_wire_pair(item.pair), item.snis) for item in config.certificates],
    )
