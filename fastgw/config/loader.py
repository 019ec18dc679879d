"""Gateway configuration: Kong-style declarative YAML/JSON in, frozen and validated objects out.

The format is Kong's declarative one (`_format_version: "3.0"`: services with nested routes and
plugins, top-level routes and plugins that point at them by name) plus our own `_fastgw` section
for the listeners, worker count and wire limits. Loading goes:

1. the text: decK's templates rendered (fastgw/config/templates.py), then YAML or JSON parsed
   (fastgw/config/documents.py);
2. one substitution walk: `${VAR}` and vault references (fastgw/config/substitution.py), the
   `vaults:` entity first (fastgw/config/entities/vaults.py);
3. `_info.defaults` merged under services and routes (fastgw/config/deck.py);
4. the document read with its declared schema (`DOCUMENT`, one schema per entity in
   fastgw/config/entities/), each top-level entity linked as soon as it is read (a route to its
   service, a plugin to its scope: so problems come in the document's order);
5. the plugins' links to the other entities (`anonymous` naming a consumer), then the model
   (fastgw/config/model.py).

Every problem is collected with the path of its key (`services[0].routes[1].paths[0]: must
start with "/"`) and raised together as one ConfigError; what is only worth telling (a
deprecated key) ends in `GatewayConfig.warnings`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from fastgw.config.consumer_links import ConsumerLinks
from fastgw.config.consumers import Consumers
from fastgw.config.deck import METADATA, apply_defaults
from fastgw.config.documents import check_not_empty, load_document, read_text
from fastgw.config.entities.ca_certificates import CA_CERTIFICATE
from fastgw.config.entities.certificates import CERTIFICATE, add_certificate
from fastgw.config.entities.consumers import CONSUMER, CONSUMER_UNIQUE
from fastgw.config.entities.credentials import CREDENTIAL_ENTITIES, SCHEMAS
from fastgw.config.entities.drafts import RouteDraft, ServiceDraft
from fastgw.config.entities.plugins import TOP_LEVEL_PLUGIN, TopLevelPlugin, attach, linked
from fastgw.config.entities.routes import TOP_LEVEL_ROUTE, TopLevelRoute, add_to_service
from fastgw.config.entities.services import SERVICE
from fastgw.config.entities.settings import SETTINGS
from fastgw.config.entities.upstreams import UPSTREAM
from fastgw.config.entities.vaults import read_vaults
from fastgw.config.model import (
    CaCertificate,
    Certificate,
    Entities,
    GatewayConfig,
    PluginEntry,
    Service,
)
from fastgw.config.reader import Findings, Reader, join, raise_if
from fastgw.config.schema import (
    Boolean,
    Declared,
    Ignored,
    Record,
    Records,
    Schema,
    read_schema,
    values_of,
)
from fastgw.config.substitution import Substitution
from fastgw.config.templates import render
from fastgw.config.vocabulary import FORMAT_VERSIONS

# -- entry points ---------------------------------------------------------------------------------


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> GatewayConfig:
    """Read and validate the config file at `path` (YAML or JSON); raises ConfigError."""
    return parse_config(read_text(path), env, source=str(path))


def parse_config(
    raw_text: str, env: Mapping[str, str] | None = None, source: str = "<string>"
) -> GatewayConfig:
    """Validate a config document; `env` defaults to os.environ. Raises ConfigError."""
    environment = os.environ if env is None else env
    check_not_empty(raw_text)
    rendered = render(raw_text, environment)
    substitution_problems: Findings = []
    warnings: Findings = []
    substitution = Substitution(environment, rendered, substitution_problems)
    document = _substituted(load_document(rendered.text), substitution, warnings)
    problems: Findings = []
    config = _read(apply_defaults(document), source, problems, warnings)
    # a value whose substitution failed would also fail validation; report the cause only
    failed = {path for path, _ in substitution_problems}
    raise_if(substitution_problems + [problem for problem in problems if problem[0] not in failed])
    return config


def _substituted(document: Any, substitution: Substitution, warnings: Findings) -> Any:
    """The document with every value substituted; `vaults:` first, as the others may name
    its vaults (its own values are not vault references)."""
    if not isinstance(document, dict):
        result = substitution.walk(document, "", None)
    else:
        own = substitution.walk(document.get("vaults"), "vaults", None)
        vaults = read_vaults(own, substitution.problems, warnings)
        result = {
            key: own if key == "vaults" else substitution.walk(value, key, vaults)
            for key, value in document.items()
        }
    substitution.report_unplaced()
    return result


# -- the document ---------------------------------------------------------------------------------


class FormatVersion(Declared):
    """Kong's `_format_version`: a string; an unquoted 3.0 (a YAML number) says to quote it."""

    __slots__ = ()

    def read(self, reader: Reader, key: str) -> str | None:
        raw = reader.raw.get(key)
        if isinstance(raw, (int, float)) and not isinstance(raw, bool):
            reader.ignore(key)
            reader.error(key, f'must be a string: quote it, as in "{raw}"')
            return None
        version: str | None = reader.string(key, required=True, one_of=FORMAT_VERSIONS)
        return version


DOCUMENT = Schema(
    {
        "_format_version": FormatVersion(),
        "_transform": Boolean(True),
        **METADATA,
        "vaults": Ignored(),  # read before substitution (see _substituted)
        "_fastgw": Record(SETTINGS),
        "ca_certificates": Records(CA_CERTIFICATE, unique=("id",)),
        "consumers": Records(CONSUMER, unique=CONSUMER_UNIQUE),
        # Kong's top-level credentials, each naming its consumer (read after the consumers)
        **{kind: Records(SCHEMAS[kind]) for kind in CREDENTIAL_ENTITIES},
        "services": Records(SERVICE),
        "routes": Records(TOP_LEVEL_ROUTE),
        "plugins": Records(TOP_LEVEL_PLUGIN),
        "upstreams": Records(UPSTREAM, unique=("name",)),
        "certificates": Records(CERTIFICATE),
    },
    build=values_of,
    annotations=True,
)


def _read(document: Any, source: str, problems: Findings, warnings: Findings) -> GatewayConfig:
    # Kong's `_transform` (read and checked with the document): false keeps basic-auth
    # passwords as written, Kong's stored hashes
    transform = not (isinstance(document, Mapping) and document.get("_transform") is False)
    assembly = Assembly(problems, ConsumerLinks(transform, problems, warnings))
    values = read_schema(
        Reader(document, "", problems, warnings),
        DOCUMENT,
        each={
            "ca_certificates": assembly.add_ca_certificate,
            "consumers": assembly.consumers.add_consumer,
            **{kind: assembly.consumers.add_credential for kind in CREDENTIAL_ENTITIES},
            "services": assembly.add_service,
            "routes": assembly.add_route,
            "plugins": assembly.add_plugin,
            "certificates": assembly.add_certificate,
        },
    )
    consumers = Consumers(tuple(assembly.consumers.consumers))
    credentials = assembly.consumers.credentials()
    entities = Entities(
        consumers=consumers,
        credentials=credentials,
        memory_stores=values["_fastgw"].memory_stores,
    )

    def link(entries: list[PluginEntry]) -> tuple[PluginEntry, ...]:
        return tuple(linked(entry, entities, problems) for entry in entries)

    return GatewayConfig(
        services=assembly.services(entities),
        plugins=link(assembly.global_plugins),
        settings=values["_fastgw"],
        source=source,
        consumers=consumers,
        ca_certificates=tuple(values["ca_certificates"]),
        upstreams=tuple(values["upstreams"]),
        certificates=tuple(values["certificates"]),
        warnings=tuple(warnings),
        credentials=credentials,
        consumer_plugins=link(assembly.consumers.plugins),
    )


class Assembly:
    """The links between top-level entities, made as each is read: routes and plugins to the
    services, routes and consumers they name, services to the CA certificates they trust
    (what links to consumers: fastgw/config/consumer_links.py)."""

    def __init__(self, problems: Findings, consumers: ConsumerLinks) -> None:
        self.problems = problems
        self.consumers = consumers
        self.global_plugins: list[PluginEntry] = []
        self._services: list[ServiceDraft] = []
        self._services_by_name: dict[str, ServiceDraft] = {}
        self._routes_by_name: dict[str, RouteDraft] = {}
        self._ca_by_id: dict[str, CaCertificate] = {}
        self._sni_first_at: dict[str, str] = {}

    def add_ca_certificate(self, ca: CaCertificate) -> None:
        if ca.id is not None:
            self._ca_by_id[ca.id] = ca

    def add_service(self, draft: ServiceDraft) -> None:
        self._services.append(draft)
        for route in draft.nested_routes:
            add_to_service(route, draft, self._routes_by_name, self.problems)
        path = draft.service.path_in_config
        name = draft.service.name
        if name is not None:
            first = self._services_by_name.setdefault(name, draft)
            if first is not draft:
                where = first.service.path_in_config
                self.problems.append((join(path, "name"), f"is already used by {where}"))
        trusted: list[CaCertificate] = []
        for index, item in enumerate(draft.ca_certificates):
            found = self._ca_by_id.get(item) if isinstance(item, str) else None
            if found is None:
                self.problems.append(
                    (
                        join(join(path, "ca_certificates"), index),
                        f"unknown CA certificate {item!r} (give it as an id of one)",
                    )
                )
            else:
                trusted.append(found)
        draft.service = replace(draft.service, ca_certificates=tuple(trusted))

    def add_route(self, top: TopLevelRoute) -> None:
        where = join(top.draft.route.path, "service")
        if top.service is None:
            if not top.service_given:
                self.problems.append((where, "is required"))
            return
        service = self._services_by_name.get(top.service)
        if service is None:
            self.problems.append((where, f'unknown service "{top.service}"'))
            return
        add_to_service(top.draft, service, self._routes_by_name, self.problems)

    def add_plugin(self, top: TopLevelPlugin) -> None:
        """A top-level plugin: global, or attached to the service or route it names, for
        everyone or for the consumer it names."""
        consumer_id = None
        if top.consumer is not None:
            consumer = self.consumers.find(top.consumer, join(top.path, "consumer"))
            if consumer is None:
                return
            consumer_id = consumer.id
        scope = self.global_plugins
        consumer_scope = self.consumers.plugins
        service = None
        if top.service is not None:
            service = self._services_by_name.get(top.service)
            if service is None:
                self.problems.append(
                    (join(top.path, "service"), f'unknown service "{top.service}"')
                )
                return
            scope = service.plugins
            consumer_scope = service.consumer_plugins
        if top.route is not None:
            route = self._routes_by_name.get(top.route)
            if route is None:
                self.problems.append((join(top.path, "route"), f'unknown route "{top.route}"'))
                return
            if service is not None and route.service is not service:
                self.problems.append(
                    (
                        join(top.path, "route"),
                        f'route "{top.route}" is not on service "{top.service}"',
                    )
                )
                return
            scope = route.plugins
            consumer_scope = route.consumer_plugins
        entry = top.entry
        if entry is None:
            return
        if consumer_id is not None:
            self.consumers.scope(entry, consumer_id, consumer_scope)
            return
        if service is not None and top.route is not None:
            entry = replace(entry, route_and_service=True)
        attach(entry, scope, self.problems)

    def add_certificate(self, certificate: Certificate) -> None:
        add_certificate(certificate, self._sni_first_at, self.problems)

    def services(self, entities: Entities) -> tuple[Service, ...]:
        """The enabled services, frozen with their routes and plugins, linked."""
        return tuple(self._frozen(draft, entities) for draft in self._services if draft.enabled)

    def _frozen(self, draft: ServiceDraft, entities: Entities) -> Service:
        def link(entries: list[PluginEntry]) -> tuple[PluginEntry, ...]:
            return tuple(linked(entry, entities, self.problems) for entry in entries)

        routes = tuple(
            replace(
                route.route,
                plugins=link(route.plugins),
                consumer_plugins=link(route.consumer_plugins),
            )
            for route in draft.routes
        )
        return replace(
            draft.service,
            routes=routes,
            plugins=link(draft.plugins),
            consumer_plugins=link(draft.consumer_plugins),
        )
