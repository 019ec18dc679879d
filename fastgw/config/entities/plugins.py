"""Kong's `plugins:` entity: one plugin occurrence, nested in a service, a route or a consumer,
or at the top level (global, or naming the service, route and/or consumer it applies to).

Its `config` is read with the plugin's own declared schema, found in the plugin registry
(fastgw.plugins): the one import of config from a layer above, because only a plugin knows the
keys of its config.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from fastgw.config.entities.credentials import ConsumerReference
from fastgw.config.entities.references import Reference
from fastgw.config.model import Entities, PluginEntry
from fastgw.config.schema import (
    FALSY,
    TAGS,
    Boolean,
    Checked,
    Declared,
    Findings,
    Ignored,
    Reader,
    Reading,
    Schema,
    Strings,
    Text,
    Unsupported,
    join,
)
from fastgw.plugins import names as plugin_names
from fastgw.plugins import spec as plugin_spec


def _known_plugin(reader: Reader, values: dict[str, Any]) -> None:
    name = values["name"]
    if name is not None and plugin_spec(name) is None:
        available = ", ".join(plugin_names())
        reader.error("name", f'unknown plugin "{name}" (available: {available})')
        values["name"] = None


class PluginConfig(Declared):
    """A plugin's `config`, read by the spec of the plugin `name` names (nothing to read it
    when the name is missing or unknown: accepted unread, the name's problem says why)."""

    __slots__ = ()

    def read_in(self, reader: Reader, key: str, reading: Reading) -> Any:
        name = reading.values.get("name")
        spec = plugin_spec(name) if name is not None else None
        if spec is None:
            reader.ignore(key)
            return None
        return spec.parse_config(reader.mapping(key))


def no_consumer(name: str) -> bool:
    """Kong's `consumer = typedefs.no_consumer`: the plugin cannot be scoped to a consumer
    (the authentication plugins and acl: they run before anyone is known)."""
    spec = plugin_spec(name)
    return bool(getattr(spec, "no_consumer", False))


def _entry(reader: Reader, values: dict[str, Any]) -> PluginEntry | None:
    if values["name"] is None:
        return None
    return PluginEntry(
        name=values["name"],
        config=values["config"],
        enabled=values["enabled"],
        path=reader.path,
        raw_config=reader.raw.get("config"),
    )


# Kong: a nested entity's links are its parent's; naming another one is an error
_NESTED_LINK = "value must be null (a plugin naming several entities goes at the top level)"

PLUGIN: Schema[PluginEntry | None] = Schema(
    {
        "name": Checked(Text(required=True), _known_plugin),
        "config": PluginConfig(),
        "enabled": Boolean(True),
        "tags": TAGS,
        "instance_name": Text(),
        "protocols": Strings(lone=False),
        "id": Ignored(),
        "created_at": Ignored(),
        "updated_at": Ignored(),
        # Kong Enterprise's dynamic plugin ordering; an empty record is what decK writes for none
        "ordering": Unsupported(accepts=FALSY),
        **{link: Unsupported(_NESTED_LINK) for link in ("service", "route", "consumer")},
        "consumer_group": Unsupported(_NESTED_LINK),
    },
    build=_entry,
    annotations=True,
)
# nested under a consumer: the same keys (the consumer is its parent)
CONSUMER_PLUGIN = PLUGIN


@dataclass(frozen=True, slots=True)
class TopLevelPlugin:
    """A top-level plugin before it is attached: to the route, else the service it names, else
    global. `entry` is None when the plugin itself is unusable (its problem is recorded)."""

    entry: PluginEntry | None
    service: str | None
    route: str | None
    consumer: str | None  # the consumer's id or username, as written
    path: str


def _top_level(reader: Reader, values: dict[str, Any]) -> TopLevelPlugin:
    return TopLevelPlugin(
        _entry(reader, values), values["service"], values["route"], values["consumer"], reader.path
    )


TOP_LEVEL_PLUGIN = PLUGIN.extended(
    {
        "service": Reference(),
        "route": Reference(),
        "consumer": ConsumerReference(),
        "consumer_group": Unsupported("not supported yet (consumer groups)"),
    },
    build=_top_level,
)


def attach(entry: PluginEntry, scope: list[PluginEntry], problems: Findings) -> None:
    """Add `entry` to one scope (global, a service or a route, each for everyone or for one
    consumer); a name appears once per scope and consumer."""
    for existing in scope:
        if existing.name == entry.name and existing.consumer == entry.consumer:
            problems.append(
                (
                    join(entry.path, "name"),
                    f'"{entry.name}" is already configured at {existing.path}',
                )
            )
            return
    scope.append(entry)


def scoped(entries: list[PluginEntry], problems: Findings) -> list[PluginEntry]:
    """The plugins nested in one entity, each name once."""
    scope: list[PluginEntry] = []
    for entry in entries:
        attach(entry, scope, problems)
    return scope


def linked(entry: PluginEntry, entities: Entities, problems: Findings) -> PluginEntry:
    """Let the plugin check and bind what its config names in other entities (consumers)."""
    spec = plugin_spec(entry.name)
    if spec is None or entry.config is None:
        return entry
    return replace(entry, config=spec.link(entry.config, entities, entry.path, problems))
