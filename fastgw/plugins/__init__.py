"""The plugin registry: plugin names, how each parses its config, and how it is built.

A plugin package exposes a `SPEC` object satisfying `PluginSpec`; the registry imports it lazily
so a config that does not use a plugin does not pay for importing it.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from fastgw.consumers import Consumers
from fastgw.metrics import Family
from fastgw.pipeline import Plugin
from fastgw.schema import Reader

# name -> module holding `SPEC`
_MODULES: dict[str, str] = {
    "file-log": "fastgw.plugins.file_log",
    "openid-connect": "fastgw.plugins.openid_connect",
    "prometheus": "fastgw.plugins.prometheus",
    "request-termination": "fastgw.plugins.request_termination",
}


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
class Entities:
    """The config's other entities, which a plugin's config may name (Kong's `anonymous`)."""

    consumers: Consumers = field(default_factory=Consumers)


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
    """What a plugin spec does by default: nothing to link, nothing to probe."""

    def link(
        self, config: Any, entities: Entities, path: str, problems: list[tuple[str, str]]
    ) -> Any:
        return config

    async def probe(self, config: Any, runtime: PluginRuntime) -> list[tuple[str, str, str]]:
        return []


class GatewayMetrics(Protocol):
    """A spec that exports instance-wide series once, however many instances are configured
    (the prometheus plugin's Kong series): `gateway_metrics(view)` with a fastgw.gateway
    GatewayStats."""

    def gateway_metrics(self, view: Any) -> list[Family]: ...


def names() -> tuple[str, ...]:
    return tuple(sorted(_MODULES))


def spec(name: str) -> PluginSpec | None:
    module = _MODULES.get(name)
    if module is None:
        return None
    return importlib.import_module(module).SPEC  # type: ignore[no-any-return]
