"""Services and routes while the document is assembled: top-level routes and plugins are
attached to their service by name after every entity is read, then frozen into the model."""

from __future__ import annotations

from dataclasses import dataclass, field

from fastgw.config.model import PluginEntry, Route, Service


@dataclass(slots=True)
class RouteDraft:
    """A route while the document is assembled: its plugins still a list; `service` is set
    when it is attached to one."""

    route: Route  # plugins still empty
    plugins: list[PluginEntry]
    service: ServiceDraft | None = field(default=None, repr=False)
    consumer_plugins: list[PluginEntry] = field(default_factory=list)


@dataclass(slots=True)
class ServiceDraft:
    """A service while top-level routes and plugins are still being attached."""

    service: Service  # routes, plugins and CA certificates still empty
    enabled: bool
    nested_routes: list[RouteDraft]  # its own, in `routes:`; the loader attaches them first
    plugins: list[PluginEntry]
    ca_certificates: list[object]  # ids of Kong's ca_certificates, looked up by the loader
    routes: list[RouteDraft] = field(default_factory=list)  # every route attached to it
    consumer_plugins: list[PluginEntry] = field(default_factory=list)
