"""The `proxy-cache` config: Kong's keys, types, defaults and checks
(kong/plugins/proxy-cache/schema.lua), declared once and read into `CacheConfig`.

`memory.dictionary_name` must name a memory bound: Kong's check that the shared dict exists
("missing shared dict"), here against `_fastgw.memory_stores` (kong_db_cache is always there).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Final

from fastgw.config.model import Entities
from fastgw.config.schema import (
    Boolean,
    Declared,
    Integer,
    Reader,
    Record,
    Schema,
    Strings,
    Text,
    join,
    values_of,
)

from .directives import MediaType, parse_media_type

STRATEGIES: Final = ("memory",)  # Kong's (redis is Kong Enterprise's proxy-cache-advanced)
METHODS: Final = ("HEAD", "GET", "POST", "PATCH", "PUT")
DEFAULT_DICTIONARY: Final = "kong_db_cache"
STATUS_RANGE: Final = (100, 900)  # Kong's bounds of response_code


@dataclass(frozen=True, slots=True)
class CacheConfig:
    response_code: tuple[int, ...]
    request_method: tuple[str, ...]
    content_type: tuple[MediaType, ...]
    cache_ttl: int
    strategy: str
    cache_control: bool
    ignore_uri_case: bool
    storage_ttl: int | None
    dictionary_name: str
    vary_query_params: tuple[str, ...]
    vary_headers: tuple[str, ...]
    show_age: bool  # response_headers.age
    show_status: bool  # response_headers["X-Cache-Status"]
    show_key: bool  # response_headers["X-Cache-Key"]
    capacity: int = 0  # the named bound's size in bytes (set when linked)


class Statuses(Declared):
    """An array of status codes, each within STATUS_RANGE, at least one."""

    __slots__ = ("default",)

    def __init__(self, default: tuple[int, ...]) -> None:
        self.default = default

    def read(self, reader: Reader, key: str) -> tuple[int, ...]:
        if not reader.has(key):
            reader.ignore(key)
            return self.default
        low, high = STATUS_RANGE
        codes = []
        for index, item in enumerate(reader.sequence(key)):
            if isinstance(item, bool) or not isinstance(item, int) or not low <= item <= high:
                where = join(reader.key_path(key), index)
                reader.problems.append((where, f"must be an integer between {low} and {high}"))
            else:
                codes.append(item)
        if reader.raw.get(key) == []:
            reader.error(key, "must not be empty")  # Kong's len_min 1
        return tuple(codes)


class MediaTypes(Declared):
    """An array of media types (`application/json`, `text/*`)."""

    __slots__ = ("default",)

    def __init__(self, default: tuple[str, ...]) -> None:
        self.default = default

    def read(self, reader: Reader, key: str) -> tuple[MediaType, ...]:
        types = []
        for index, text in enumerate(reader.strings(key, self.default, scalar_ok=True)):
            parsed = parse_media_type(text)
            if parsed is None:
                where = join(reader.key_path(key), index)
                reader.problems.append((where, f"'{text}' is not a media type"))
            else:
                types.append(parsed)
        return tuple(types)


_MEMORY = Schema({"dictionary_name": Text(DEFAULT_DICTIONARY)}, build=values_of)
_RESPONSE_HEADERS = Schema(
    {"age": Boolean(True), "X-Cache-Status": Boolean(True), "X-Cache-Key": Boolean(True)},
    build=values_of,
)


def _config(reader: Reader, values: dict[str, Any]) -> CacheConfig:
    shown = values["response_headers"]
    return CacheConfig(
        response_code=values["response_code"],
        request_method=values["request_method"],
        content_type=values["content_type"],
        cache_ttl=values["cache_ttl"],
        strategy=values["strategy"],
        cache_control=values["cache_control"],
        ignore_uri_case=values["ignore_uri_case"],
        storage_ttl=values["storage_ttl"],
        dictionary_name=values["memory"]["dictionary_name"],
        vary_query_params=values["vary_query_params"],
        vary_headers=values["vary_headers"],
        show_age=shown["age"],
        show_status=shown["X-Cache-Status"],
        show_key=shown["X-Cache-Key"],
    )


CACHE: Schema[CacheConfig] = Schema(
    {
        "response_code": Statuses((200, 301, 404)),
        "request_method": Strings(("GET", "HEAD"), one_of=METHODS),
        "content_type": MediaTypes(("text/plain", "application/json")),
        "cache_ttl": Integer(300, minimum=1),
        "strategy": Text(required=True, one_of=STRATEGIES),
        "cache_control": Boolean(False),
        "ignore_uri_case": Boolean(False),
        # Kong's is any integer; 0 keeps entries until they are evicted, as a shared dict's 0
        "storage_ttl": Integer(minimum=0),
        "memory": Record(_MEMORY),
        "vary_query_params": Strings(),
        "vary_headers": Strings(),
        "response_headers": Record(_RESPONSE_HEADERS),
    },
    build=_config,
)


def linked(
    config: CacheConfig, entities: Entities, path: str, problems: list[tuple[str, str]]
) -> CacheConfig:
    """Kong's check that the dictionary exists, and its bound."""
    capacity = entities.memory_store(config.dictionary_name)
    if capacity is None:
        problems.append(
            (
                f"{path}.config.memory.dictionary_name",
                f"missing shared dict '{config.dictionary_name}' (declare its size in "
                "_fastgw.memory_stores)",
            )
        )
        return config
    return replace(config, capacity=capacity)
