"""How a plugin package declares itself (`PluginSpec`) and what the gateway hands a plugin when it
builds one: an HTTP client for calls to other services, a spawner, the consumers, the client
address, where the instance is attached.

Not compiled: test doubles and plugin specs subclass these classes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from fastgw.config.consumers import Consumers
from fastgw.config.model import DEFAULT_LISTEN, DEFAULT_NAMESPACE, Entities, Route, Service
from fastgw.config.schema import Reader
from fastgw.plugins.api import Plugin
from fastgw.plugins.common.client_address import ClientAddress


class HttpResponse(Protocol):
    """A response as plugins read it (fastgw.http.client.Response is one: frozen, so the
    members are read-only here)."""

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...  # lower-case names

    @property
    def body(self) -> bytes: ...


class HttpClient(Protocol):
    """The small async HTTP client a plugin uses to talk to other services (e.g. an IdP): the
    one declaration of its interface. fastgw.http.client.HttpClient implements it (mypy checks
    that where the gateway hands one out); test doubles subclass this protocol, so mypy checks
    them against it too."""

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
        timeout: float = 10.0,
        max_body: int = 1 << 20,
    ) -> HttpResponse: ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class PluginScope:
    """What a plugin instance is attached to (Kong's plugin.service / plugin.route): both None
    for a global one."""

    service: Service | None = None
    route: Route | None = None


@dataclass
class PluginRuntime:
    """What the gateway hands a plugin when building it."""

    # builds an HTTP client: (verify_tls, keepalive) -> client
    http_client: Callable[[bool, bool], HttpClient]
    # runs `coro` in the background, tied to the gateway's lifetime
    spawn: Callable[[Awaitable[Any]], Any] = field(default=lambda awaitable: None)
    consumers: Consumers = field(default_factory=Consumers)
    # the clients `http_client` made: the gateway closes them when the instance retires
    clients: list[HttpClient] = field(default_factory=list)
    # the client's address as Kong's plugins see it (kong.conf's trusted_ips, real_ip_header)
    client_address: ClientAddress = field(default_factory=ClientAddress)
    # `_fastgw.namespace`: the prefix of what the instance writes to a store the fleet shares
    namespace: str = DEFAULT_NAMESPACE
    scope: PluginScope = field(default_factory=PluginScope)
    # the first listener's address (Kong's $server_addr / $server_port, for correlation-id)
    server_address: tuple[str, int] = DEFAULT_LISTEN
    # the config's CA certificates (PEM), which the clients `http_client` makes trust beside
    # the system's: for a plugin that builds a client of its own (http-log's keep-alive time)
    ca_pem: str | None = None
    # what plugins keep for the whole gateway, across their instances and reloads, each under
    # a key of its own (proxy-cache's named memory stores: Kong's shared dicts)
    shared: dict[str, Any] = field(default_factory=dict)


class PluginSpec(Protocol):
    name: str

    def parse_config(self, reader: Reader) -> Any:
        """Read and validate `config` (record problems on `reader`; call `reader.finish()`)."""

    def link(
        self, config: Any, entities: Entities, path: str, problems: list[tuple[str, str]]
    ) -> Any:
        """`config` checked against the other entities (once all are read); may bind them."""

    def build(self, config: Any, runtime: PluginRuntime) -> Plugin:
        """A plugin instance for one configured occurrence."""

    async def probe(self, config: Any, runtime: PluginRuntime) -> list[tuple[str, str, str]]:
        """`fastgw check`'s look at what the config depends on outside (an IdP): (config key,
        kind, message), kind "error" (the config cannot work) or "note" (not checked, why)."""


class SpecBase:
    """What a plugin spec does by default: nothing to link, nothing to probe; scoped to a
    consumer when a config says so; an instance kept across reloads while its config is
    unchanged."""

    # Kong's `consumer = typedefs.no_consumer`: the plugin cannot be scoped to a consumer
    no_consumer = False
    # False: the instance depends on other entities (credentials), so a reload builds it again
    reusable = True

    def link(
        self, config: Any, entities: Entities, path: str, problems: list[tuple[str, str]]
    ) -> Any:
        return config

    async def probe(self, config: Any, runtime: PluginRuntime) -> list[tuple[str, str, str]]:
        return []
