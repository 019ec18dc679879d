"""The schema engine with small declared schemas: shorthands (Kong's deprecated keys), keys not
supported yet, exclusive keys, unique items, annotations, and the warnings channel."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import pytest

from fastgw.config.schema import (
    EMPTY,
    Boolean,
    Checked,
    ExclusiveWith,
    Findings,
    Integer,
    Reader,
    Record,
    Records,
    Schema,
    Shorthand,
    Text,
    Unsupported,
    apply_shorthands,
    read_declared,
    read_schema,
    values_of,
)

# A record shaped like Kong's rate-limiting config: `redis_host` / `redis_port` are Kong 3's
# deprecated spellings of `redis.host` / `redis.port`, `timeout` a deprecated key in seconds.
REDIS = Schema(
    {"host": Text("127.0.0.1"), "port": Integer(6379, minimum=1, maximum=65535)},
    build=values_of,
)
LIMITS = Schema(
    {
        "redis": Record(REDIS),
        "password": Text(),
        "connect_timeout": Integer(2000, minimum=1),  # milliseconds
    },
    build=values_of,
    shorthands=(
        Shorthand("redis_host", ("redis", "host"), Text()),
        Shorthand("redis_port", ("redis", "port"), Integer()),
        Shorthand("redis_password", ("password",), Text()),
        Shorthand(
            "timeout",
            ("connect_timeout",),
            Integer(minimum=1),
            translate=lambda seconds: seconds * 1000,
            message="is deprecated (seconds), please use connect_timeout (milliseconds)",
        ),
    ),
)


def read(raw: object, schema: Schema[Any] = LIMITS) -> tuple[Any, Findings, Findings]:
    problems: Findings = []
    warnings: Findings = []
    value = read_schema(Reader(raw, "plugins[0].config", problems, warnings), schema)
    return value, problems, warnings


def test_a_deprecated_key_moves_to_its_replacement_with_a_warning() -> None:
    values, problems, warnings = read({"redis_host": "cache.internal", "timeout": 3})
    assert problems == []
    assert values["redis"] == {"host": "cache.internal", "port": 6379}
    assert values["connect_timeout"] == 3000
    assert warnings == [
        ("plugins[0].config.redis_host", "is deprecated, please use redis.host instead"),
        (
            "plugins[0].config.timeout",
            "is deprecated (seconds), please use connect_timeout (milliseconds)",
        ),
    ]


def test_the_replacement_keeps_its_other_keys() -> None:
    values, problems, _ = read({"redis_port": 6380, "redis": {"host": "a"}})
    assert problems == []
    assert values["redis"] == {"host": "a", "port": 6380}


def test_both_keys_with_the_same_value_are_fine_and_different_ones_an_error() -> None:
    values, problems, warnings = read({"redis_host": "a", "redis": {"host": "a"}})
    assert (values["redis"]["host"], problems, len(warnings)) == ("a", [], 1)
    _, problems, warnings = read({"redis_password": "s3cret-1", "password": "s3cret-2"})
    assert problems == [
        (
            "plugins[0].config.redis_password",
            "both deprecated and new field are used but their values mismatch: "
            "redis_password vs password",
        )
    ]
    assert warnings == []
    assert "s3cret" not in repr(problems)  # values may be secrets: never quoted


def test_a_bad_deprecated_value_is_reported_at_the_key_written() -> None:
    values, problems, warnings = read({"redis_port": "x"})
    assert problems == [("plugins[0].config.redis_port", "must be an integer")]
    assert (values["redis"]["port"], warnings) == (6379, [])


def test_a_replacement_under_a_key_of_another_shape_is_that_keys_problem() -> None:
    _, problems, _ = read({"redis_host": "a", "redis": "not a record"})
    assert problems == [("plugins[0].config.redis", "must be a mapping")]


def test_deprecated_keys_are_not_unknown_fields_and_unknown_ones_still_are() -> None:
    _, problems, _ = read({"redis_host": "a", "redis_hots": "b"})
    assert problems == [("plugins[0].config.redis_hots", "unknown field")]


@dataclass(frozen=True)
class PluginConfig:
    """A plugin schema in the declared-dataclass style (plugins/openid_connect/schema.py)."""

    host: Annotated[str, Text("127.0.0.1")]
    ssl: Annotated[bool, Boolean(False)]


PLUGIN_SHORTHANDS = (Shorthand("redis_ssl", ("ssl",), Boolean(False)),)


def test_a_declared_dataclass_schema_takes_shorthands_too() -> None:
    problems: Findings = []
    warnings: Findings = []
    reader = Reader({"redis_ssl": True}, "config", problems, warnings)
    apply_shorthands(reader, PLUGIN_SHORTHANDS)
    config = PluginConfig(**read_declared(reader, PluginConfig))
    reader.finish()
    assert (config, problems) == (PluginConfig("127.0.0.1", True), [])
    assert warnings == [("config.redis_ssl", "is deprecated, please use ssl instead")]


def test_nested_readers_share_the_warnings_channel() -> None:
    items = Schema({"limits": Records(LIMITS)}, build=values_of)
    _, problems, warnings = read({"limits": [{}, {"redis_host": "b"}]}, items)
    assert problems == []
    assert warnings == [
        ("plugins[0].config.limits[1].redis_host", "is deprecated, please use redis.host instead")
    ]


# -- the other declarations -----------------------------------------------------------------------

ENTITY = Schema(
    {
        "url": Text(),
        "host": ExclusiveWith("url", Text(required=True)),
        "retries": Checked(Integer(5), lambda reader, values: None),
        "sources": Unsupported(accepts=EMPTY),
        "expression": Unsupported("not supported yet (the expressions router)"),
        "keys": Unsupported(array=True),
    },
    build=values_of,
    annotations=True,
)


def problems_of(raw: object) -> Findings:
    return read(raw, ENTITY)[1]


def test_unsupported_keys_accept_what_deck_writes_for_them_unused() -> None:
    assert problems_of({"host": "a", "sources": [], "expression": None, "keys": []}) == []
    assert problems_of({"host": "a", "sources": [{"ip": "192.0.2.1"}], "keys": {}}) == [
        ("plugins[0].config.sources", "not supported yet"),
        ("plugins[0].config.keys", "must be an array"),
    ]
    assert problems_of({"host": "a", "sources": False, "expression": ""}) == [
        ("plugins[0].config.sources", "not supported yet"),
        ("plugins[0].config.expression", "not supported yet (the expressions router)"),
    ]


def test_an_exclusive_key_is_skipped_and_refused_when_the_other_is_set() -> None:
    values, problems, _ = read({"url": "http://a", "host": 5}, ENTITY)
    assert problems == [("plugins[0].config.host", "cannot be set together with url")]
    assert values["host"] is None
    assert problems_of({}) == [("plugins[0].config.host", "is required")]


def test_annotations_are_kongs_comment_string_and_ignore_array() -> None:
    assert problems_of({"host": "a", "_comment": "why", "_ignore": [1, {"x": None}]}) == []
    assert problems_of({"host": "a", "_comment": 5, "_ignore": "x"}) == [
        ("plugins[0].config._comment", "must be a string"),
        ("plugins[0].config._ignore", "must be an array"),
    ]
    assert read({"_comment": "a"}, REDIS)[1] == [("plugins[0].config._comment", "unknown field")]


@dataclass(frozen=True)
class Item:
    name: str | None
    path: str


ITEM = Schema({"name": Text()}, build=lambda reader, values: Item(values["name"], reader.path))
LIST = Schema({"items": Records(ITEM, unique=("name",))}, build=values_of)


def test_unique_items_keep_the_first_and_name_it() -> None:
    values, problems, _ = read({"items": [{"name": "a"}, {}, {"name": "a"}, {}]}, LIST)
    assert [item.path for item in values["items"]] == [
        "plugins[0].config.items[0]",
        "plugins[0].config.items[1]",
        "plugins[0].config.items[3]",
    ]
    assert problems == [
        ("plugins[0].config.items[2].name", "is already used by plugins[0].config.items[0]")
    ]


def test_the_hook_of_a_list_sees_each_item_as_it_is_read() -> None:
    seen: list[tuple[str, int]] = []
    problems: Findings = []
    reader = Reader({"items": [{"name": "a"}, {"name": 1}, {"name": "b"}]}, "", problems)
    read_schema(reader, LIST, each={"items": lambda item: seen.append((item.name, len(problems)))})
    # the second item's problem was recorded before the third item was handed over
    assert seen == [("a", 0), (None, 1), ("b", 1)]


@pytest.mark.parametrize("raw", [None, {}])
def test_an_absent_record_reads_as_its_defaults(raw: object) -> None:
    values, problems, _ = read({"redis": raw})
    assert (values["redis"], problems) == ({"host": "127.0.0.1", "port": 6379}, [])
