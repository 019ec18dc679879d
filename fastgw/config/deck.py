"""What decK writes around the entities: `_info`, `_konnect`, `_workspace`, empty entity lists.

Read at config load; `_info.defaults` is merged into services and routes before they are read.

- `_info.select_tags` and `_info.default_lookup_tags` scope what `deck gateway sync` manages
  on a Kong control plane; a gateway that loads the file whole has no use for them, so they
  are accepted and ignored (checked for shape).
- `_info.defaults.service` / `.route` give values to services and routes that do not set them,
  as decK does when it syncs; `upstream` and `target` defaults are not supported yet.
- `_konnect` (`control_plane_name`, `runtime_group_name`) and `_workspace` name where decK
  syncs to: accepted and ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fastgw.config.schema import Reader

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


def read_metadata(reader: Reader) -> Defaults:
    """`_info`, `_konnect` and `_workspace` of the document `reader` reads."""
    reader.string("_workspace")
    konnect = reader.mapping("_konnect")
    konnect.string("control_plane_name")
    konnect.string("runtime_group_name")
    konnect.finish()
    info = reader.mapping("_info")
    info.strings("select_tags")
    lookup = info.mapping("default_lookup_tags")
    for key in list(lookup.raw):
        lookup.strings(str(key))
    lookup.finish()
    defaults = _read_defaults(info.mapping("defaults"))
    info.finish()
    for key in UNSUPPORTED_ENTITIES:
        value = reader.raw.get(key)
        reader.ignore(key)
        if value is None or value == []:
            continue
        if isinstance(value, list):
            reader.error(key, "not supported yet")
        else:
            reader.error(key, "must be an array")
    return defaults


def _read_defaults(reader: Reader) -> Defaults:
    service = _entity_defaults(reader, "service")
    route = _entity_defaults(reader, "route")
    for key in ("upstream", "target"):
        if reader.raw.get(key):
            reader.error(key, "not supported yet (set it on each upstream or target)")
        reader.ignore(key)
    reader.finish()
    return Defaults(service, route)


def _entity_defaults(reader: Reader, key: str) -> dict[str, Any]:
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
