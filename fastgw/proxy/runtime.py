"""One config made runnable: router, chains, upstream targets and plugin instances, immutable.

`build_runtime` builds it from a validated config, carrying over from the previous runtime what a
reload must not lose: plugin instances whose config did not change (their token caches), upstream
pools of unchanged services (their keep-alive connections), request counters of unchanged routes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import orjson

from fastgw import plugins
from fastgw.config import GatewayConfig, Limits, PluginEntry, Route, Service
from fastgw.config.patterns import compile_path_regex, is_regex_path
from fastgw.http.timers import Ticker
from fastgw.http.upstream import UpstreamPool
from fastgw.observability.counters import RouteStats
from fastgw.plugins import building as plugin_api
from fastgw.plugins.api import Plugin, RouteInfo
from fastgw.proxy import pools
from fastgw.proxy.chain import Chain, ConsumerScoped
from fastgw.proxy.dispatch import RouteLog, RouteTarget
from fastgw.proxy.forwarding import Direct, ServiceForwarding
from fastgw.proxy.routing import Router
from fastgw.proxy.targets import UpstreamTarget
from fastgw.proxy.upstreams import UpstreamSet

# Request headers every logger redacts, whatever the plugins (Kong redacts the first two).
REDACTED_HEADERS = frozenset({b"authorization", b"proxy-authorization", b"cookie"})

PluginKey = tuple[str, bytes]  # (name, the config as written, canonical JSON)
# what a service's pool depends on: protocol, host, port, the keep-alive limits, TLS trust
PoolKey = tuple[str, str, int, int, float, int, bool, tuple[str, ...]]


@dataclass(frozen=True, slots=True)
class PluginSlot:
    """A plugin instance, where it is configured, and the clients the gateway made for it."""

    key: PluginKey
    path: str  # e.g. "services[0].plugins[0]"
    plugin: Plugin
    clients: list[plugin_api.HttpClient] = field(default_factory=list)


@dataclass(slots=True)
class Runtime:
    """What serves requests for one config. `fresh` lists the plugins this runtime started
    using (new instances, to start); `retired_*` what the previous runtime had and this one
    dropped (to stop once the requests still using them are done)."""

    config: GatewayConfig
    router: Router[RouteTarget]
    unrouted: RouteLog | None
    slots: tuple[PluginSlot, ...]
    pools: list[tuple[PoolKey, UpstreamPool]]
    edge: UpstreamSet  # the Kong upstreams: their targets' pools, balancers, health checks
    route_stats: dict[tuple[str, str], RouteStats]
    fresh: list[Plugin] = field(default_factory=list)
    retired_plugins: list[PluginSlot] = field(default_factory=list)
    retired_pools: list[UpstreamPool] = field(default_factory=list)

    @property
    def plugins(self) -> list[Plugin]:
        return [slot.plugin for slot in self.slots]


def plugin_key(entry: PluginEntry) -> PluginKey:
    try:
        raw = orjson.dumps(entry.raw_config, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        raw = repr(entry.raw_config).encode()
    return entry.name, raw


def service_label(service: Service) -> str:
    """Kong's `service` label: the name, else the host."""
    return service.name or service.host


def route_label(route: Route) -> str:
    """Kong's `route` label: the name, else (where Kong has an id) where it is configured."""
    return route.name or route.path


def build_runtime(
    config: GatewayConfig,
    ticker: Ticker,
    plugin_runtime: Callable[[], plugin_api.PluginRuntime],
    previous: Runtime | None = None,
) -> Runtime:
    """A runtime for `config`. Raises what a plugin's build raises (nothing is started).

    `plugin_runtime()` makes what one new plugin instance is built with (its `clients` are
    that instance's to close when it retires)."""
    slots, fresh = _instances(config, plugin_runtime, previous)
    built = {slot.path: slot.plugin for slot in slots}
    service_pools = _Pools(config.settings.limits, ticker, previous)
    # A reload builds the upstreams afresh (their targets' health state starts again).
    edge = UpstreamSet(config, ticker)
    old_stats = previous.route_stats if previous is not None else {}
    route_stats: dict[tuple[str, str], RouteStats] = {}
    entries: list[tuple[Route, Callable[[str | None], RouteTarget]]] = []
    for service in config.services:
        balanced = edge.service_destination(service)
        target: UpstreamTarget | None
        forwarding: ServiceForwarding
        if balanced is None:
            target = service_pools.target(service)
            forwarding = Direct(target, service.retries)
        else:
            target, forwarding = balanced
        for route in service.routes:
            chain = _chain(config, built, service, route)
            hook = _route_log(service, route, chain, old_stats, route_stats)
            destination = _Destination(route, service, target, forwarding, chain, hook)
            entries.append((route, destination.for_path))

    global_chain = _chain_of([built[e.path] for e in config.plugins if e.path in built])
    unrouted = None
    if global_chain is not None and global_chain.log_plugins:
        info = RouteInfo("", "", None, None, _sensitive(global_chain))
        unrouted = RouteLog(info, None, global_chain.log_plugins)

    in_use = {id(slot.plugin) for slot in slots}
    retired_plugins = (
        [slot for slot in previous.slots if id(slot.plugin) not in in_use]
        if previous is not None
        else []
    )
    return Runtime(
        config=config,
        router=Router(entries),
        unrouted=unrouted,
        slots=tuple(slots),
        pools=service_pools.used,
        edge=edge,
        route_stats=route_stats,
        fresh=fresh,
        retired_plugins=retired_plugins,
        retired_pools=service_pools.unused(),
    )


def _instances(
    config: GatewayConfig,
    plugin_runtime: Callable[[], plugin_api.PluginRuntime],
    previous: Runtime | None,
) -> tuple[list[PluginSlot], list[Plugin]]:
    """A slot per enabled plugin entry, carrying over the previous runtime's instance of an
    unchanged config; and the instances built fresh (to start)."""
    reusable: dict[PluginKey, list[PluginSlot]] = {}
    if previous is not None:
        for slot in previous.slots:
            reusable.setdefault(slot.key, []).append(slot)
    fresh: list[Plugin] = []
    slots: list[PluginSlot] = []
    scopes = _scopes(config)
    for entry in config.plugin_entries():
        if not entry.enabled:
            continue
        key = plugin_key(entry)
        spec = plugins.spec(entry.name)
        assert spec is not None  # config validation rejected unknown names
        # a plugin holding other entities (credentials) is built again on every reload
        kept = reusable.get(key) if getattr(spec, "reusable", True) else None
        if kept:
            # the one configured at the same place first: it is attached to the same scope
            same = [index for index, slot in enumerate(kept) if slot.path == entry.path]
            old = kept.pop(same[0] if same else 0)
            plugin, clients = old.plugin, old.clients
        else:
            runtime = plugin_runtime()
            runtime.scope = scopes.get(id(entry), runtime.scope)
            plugin = spec.build(entry.config, runtime)
            clients = runtime.clients
            fresh.append(plugin)
        plugin.instance_name = entry.path
        slots.append(PluginSlot(key, entry.path, plugin, clients))
    return slots, fresh


def _scopes(config: GatewayConfig) -> dict[int, plugin_api.PluginScope]:
    """What each service's and route's plugin entries are attached to (by the entry's id)."""
    scopes: dict[int, plugin_api.PluginScope] = {}
    for service in config.services:
        for entry in service.plugins:
            scopes[id(entry)] = plugin_api.PluginScope(service=service)
        for route in service.routes:
            for entry in route.plugins:
                scopes[id(entry)] = plugin_api.PluginScope(route=route)
    return scopes


class _Destination:
    """Where one route's requests go; `for_path` makes the router's payload of each path."""

    def __init__(
        self,
        route: Route,
        service: Service,
        target: UpstreamTarget | None,
        forwarding: ServiceForwarding,
        chain: Chain | None,
        hook: RouteLog | None,
    ) -> None:
        self.route = route
        self.service_path = service.path.encode()
        self.target = target
        self.forwarding = forwarding
        self.chain = chain
        self.hook = hook

    def for_path(self, path: str | None) -> RouteTarget:
        route = self.route
        strip = path is not None and route.strip_path
        regex = path is not None and is_regex_path(path)
        prefix_len = len(path.encode()) if (path and strip and not regex) else 0
        strip_regex = compile_path_regex(path) if (path and strip and regex) else None
        return RouteTarget(
            self.target,
            self.forwarding,
            self.chain,
            prefix_len,
            self.service_path,
            route.preserve_host,
            self.hook,
            strip_regex=strip_regex,
            path_handling_v1=route.path_handling == "v1",
            https_redirect=(route.https_redirect_status_code if route.requires_tls else 0),
        )


def _chain(
    config: GatewayConfig, built: dict[str, Plugin], service: Service, route: Route
) -> Chain | None:
    """Kong's precedence, per plugin name: route beats service beats global; a consumer's own
    instance beats them as Kong ranks it (route + consumer > service + consumer > route +
    service > consumer alone > route > service > global). Only names some consumer has an
    instance of become a `ConsumerScoped` step."""
    chosen: dict[str, Plugin] = {}
    with_service: set[str] = set()  # names whose route instance also names the service
    for scope in (config.plugins, service.plugins, route.plugins):
        for entry in scope:
            plugin = built.get(entry.path)
            if plugin is not None:
                chosen[entry.name] = plugin.for_route(service, route)
                if entry.route_and_service:
                    with_service.add(entry.name)
            elif not entry.enabled:
                chosen.pop(entry.name, None)  # disabled at a narrower scope switches it off
    steps: dict[str, Plugin] = dict(chosen)
    for name, by_consumer in _consumer_instances(config, built, service, route, with_service):
        steps[name] = ConsumerScoped(chosen.get(name), by_consumer)
    return _chain_of(list(steps.values()))


# how narrow a consumer-scoped instance is: the narrowest for a (name, consumer) wins
_CONSUMER_ONLY, _SERVICE_AND_CONSUMER, _ROUTE_AND_CONSUMER = 1, 2, 3


def _consumer_instances(
    config: GatewayConfig,
    built: dict[str, Plugin],
    service: Service,
    route: Route,
    with_service: set[str],
) -> list[tuple[str, dict[str, Plugin | None]]]:
    """For each plugin name some consumer has its own instance of on this route: consumer id
    -> that instance (None: disabled for it). A consumer-only instance does not beat a route
    instance that names its service too (Kong's order)."""
    narrowest: dict[tuple[str, str], tuple[int, Plugin | None]] = {}
    for rank, entries in (
        (_CONSUMER_ONLY, config.consumer_plugins),
        (_SERVICE_AND_CONSUMER, service.consumer_plugins),
        (_ROUTE_AND_CONSUMER, route.consumer_plugins),
    ):
        for entry in entries:
            assert entry.consumer is not None  # the loader scoped it
            plugin = built.get(entry.path)
            bound = plugin.for_route(service, route) if plugin is not None else None
            narrowest[(entry.name, entry.consumer)] = (rank, bound)
    by_name: dict[str, dict[str, Plugin | None]] = {}
    for (name, consumer_id), (rank, instance) in narrowest.items():
        if rank == _CONSUMER_ONLY and name in with_service:
            continue
        by_name.setdefault(name, {})[consumer_id] = instance
    return list(by_name.items())


def _chain_of(chosen: list[Plugin]) -> Chain | None:
    return Chain(chosen) if chosen else None


def _sensitive(chain: Chain) -> frozenset[bytes]:
    names = set(REDACTED_HEADERS)
    for plugin in chain.plugins:
        names |= plugin.sensitive_headers
    return frozenset(names)


def _route_log(
    service: Service,
    route: Route,
    chain: Chain | None,
    old_stats: dict[tuple[str, str], RouteStats],
    route_stats: dict[tuple[str, str], RouteStats],
) -> RouteLog | None:
    if chain is None or (not chain.log_plugins and chain.stats_options is None):
        return None
    labels = (service_label(service), route_label(route))
    stats = None
    options = chain.stats_options
    if options is not None:
        stats = route_stats.get(labels) or old_stats.get(labels)
        if stats is None:
            stats = RouteStats(labels, options)
        else:
            stats.configure(options)
        route_stats[labels] = stats
    info = RouteInfo(labels[0], labels[1], service, route, _sensitive(chain))
    return RouteLog(info, stats, chain.log_plugins)


class _Pools:
    """Upstream pools for a runtime: an unchanged service keeps its pool (and connections)."""

    def __init__(self, limits: Limits, ticker: Ticker, previous: Runtime | None) -> None:
        self.limits = limits
        self.ticker = ticker
        self.available: dict[PoolKey, list[UpstreamPool]] = {}
        if previous is not None:
            for key, pool in previous.pools:
                self.available.setdefault(key, []).append(pool)
        self.used: list[tuple[PoolKey, UpstreamPool]] = []

    def target(self, service: Service) -> UpstreamTarget:
        limits = self.limits
        key: PoolKey = (
            service.protocol,
            service.host,
            service.port,
            limits.upstream_pool_size,
            limits.upstream_idle_timeout,
            pools.max_requests(limits),
            service.tls_verify,
            tuple(ca.digest for ca in service.ca_certificates),
        )
        kept = self.available.get(key)
        if kept:
            pool = kept.pop(0)
        else:
            pool = pools.new_pool(
                service, service.host, service.port, service.host, limits, self.ticker
            )
        self.used.append((key, pool))
        return pools.target(
            pool, pools.host_header(service.host, service.port, service.protocol), service
        )

    def unused(self) -> list[UpstreamPool]:
        return [pool for pools in self.available.values() for pool in pools]
