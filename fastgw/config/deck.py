"""What decK writes around the entities: `_info`, `_konnect`, `_workspace`, empty entity lists.

- `_info.select_tags` and `_info.default_lookup_tags` scope what `deck gateway sync` manages
  on a Kong control plane; a gateway that loads the file whole has no use for them, so they
  are accepted and ignored (checked for shape).
- `_info.defaults.service` / `.route` give values to services and routes that do not set them,
  as decK does when it syncs (`apply_defaults`, before the entities are read); `upstream` and
  `target` defaults are not supported yet.
- `_konnect` (`control_plane_name`, `runtime_group_name`) and `_workspace` name where decK
  syncs to: accepted and ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fastgw.config.schema import (
    FALSY,
    TAGS,
    Declared,
    Reader,
    Record,
    Schema,
    Text,
    Unsupported,
    read_schema,
    values_of,
)

# Kong entities a decK dump lists (often empty) that this gateway has no use for yet: an empty
# list is accepted, a non-empty one is "not supported yet" (never "unknown field").
UNSUPPORTED_ENTITIES = (
    "consumer_group_consumers",
    "consumer_groups",
    "custom_entities",
    "degraphql_routes",
    "filter_chains",
    "graphql_ratelimiting_cost_decorations",
    "key_sets",
    "keys",
    "licenses",
    "partials",
    "rbac_roles",
    "snis",
    "workspaces",
)
# Keys a service or route default may not give: they name or hold entities, not settings
_NOT_DEFAULTABLE = frozenset({"id", "name", "routes", "plugins", "service", "tags"})
# a service with a `url` takes protocol, host, port and path from it, never from defaults
_URL_PARTS = frozenset({"protocol", "host", "port", "path"})


@dataclass(frozen=True, slots=True)
class Defaults:
    """`_info.defaults`: raw values merged under each service and route."""

    service: Mapping[str, Any] = field(default_factory=dict)
    route: Mapping[str, Any] = field(default_factory=dict)

    def for_service(self, raw: object) -> object:
        if not self.service or not isinstance(raw, Mapping):
            return raw
        defaults = self.service
        if raw.get("url") is not None:
            defaults = {key: value for key, value in defaults.items() if key not in _URL_PARTS}
        return {**defaults, **raw}

    def for_route(self, raw: object) -> object:
        if not self.route or not isinstance(raw, Mapping):
            return raw
        return {**self.route, **raw}


class EntityDefaults(Declared):
    """The defaults of one entity: any of its keys but those that name or hold entities."""

    __slots__ = ()

    def read(self, reader: Reader, key: str) -> dict[str, Any]:
        nested = reader.mapping(key)
        values: dict[str, Any] = {}
        for name, value in nested.raw.items():
            nested.ignore(str(name))
            if name in _NOT_DEFAULTABLE:
                nested.error(str(name), "cannot be given a default")
            elif value is not None:
                values[str(name)] = value
        nested.finish()
        return values


class TagsByEntity(Declared):
    """`_info.default_lookup_tags`: an array of tags per entity name."""

    __slots__ = ()

    def read(self, reader: Reader, key: str) -> None:
        lookup = reader.mapping(key)
        for name in list(lookup.raw):
            lookup.strings(str(name))
        lookup.finish()


def _defaults(reader: Reader, values: dict[str, Any]) -> Defaults:
    return Defaults(values["service"], values["route"])


_SET_EACH = "not supported yet (set it on each upstream or target)"

DEFAULTS = Schema(
    {
        "service": EntityDefaults(),
        "route": EntityDefaults(),
        "upstream": Unsupported(_SET_EACH, accepts=FALSY),
        "target": Unsupported(_SET_EACH, accepts=FALSY),
    },
    build=_defaults,
)


def _info(reader: Reader, values: dict[str, Any]) -> Defaults:
    defaults: Defaults = values["defaults"]
    return defaults


INFO = Schema(
    {"select_tags": TAGS, "default_lookup_tags": TagsByEntity(), "defaults": Record(DEFAULTS)},
    build=_info,
)
KONNECT = Schema(
    {"control_plane_name": Text(), "runtime_group_name": Text()},
    build=values_of,
)

# decK's keys of the document, read with Kong's (fastgw/config/loader.py)
METADATA: dict[str, Declared] = {
    "_workspace": Text(),
    "_konnect": Record(KONNECT),
    "_info": Record(INFO),
    **{name: Unsupported(array=True) for name in UNSUPPORTED_ENTITIES},
}


def apply_defaults(document: object) -> object:
    """`document` with `_info.defaults` merged under every service and route (nested or not).

    The defaults are taken quietly here: what is wrong in `_info` is reported once, when the
    document is read; a default that cannot be used is simply not applied.
    """
    if not isinstance(document, Mapping):
        return document
    info = document.get("_info")
    if not isinstance(info, Mapping):
        return document
    defaults = read_schema(Reader(info.get("defaults"), "", []), DEFAULTS)
    if not defaults.service and not defaults.route:
        return document
    result = dict(document)
    services = document.get("services")
    if isinstance(services, list):
        result["services"] = [_service_with(defaults, raw) for raw in services]
    routes = document.get("routes")
    if isinstance(routes, list):
        result["routes"] = [defaults.for_route(raw) for raw in routes]
    return result


def _service_with(defaults: Defaults, raw: object) -> object:
    service = defaults.for_service(raw)
    if not isinstance(service, Mapping) or not isinstance(service.get("routes"), list):
        return service
    return {**service, "routes": [defaults.for_route(route) for route in service["routes"]]}
