"""The `request-transformer` config: Kong's keys, defaults and checks
(kong/plugins/request-transformer/schema.lua), declared once and read into `TransformerConfig`.

Every entry is `name:value` as Kong parses it (the name ends at the first colon, every colon
after it is eaten, the value keeps its leading spaces); values are templates (templates.py),
parsed here once. Header names the gateway writes itself (framing, X-Forwarded-*) cannot be
set: they would be sent twice.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

from fastgw.config.schema import Declared, Reader, Record, Schema, join
from fastgw.http.request_reader import REQUEST_SPECIAL_HEADERS

from .templates import Template, TemplateError, parse

# Kong's validate_header_name
_HEADER_NAME: Final = re.compile(r"^[a-zA-Z0-9_-]+$")
_ENTRY: Final = re.compile(r"^([^:]+):*(.*)$", re.DOTALL)  # Kong's "^([^:]+):*(.-)$"
_UPPER: Final = re.compile(r"^[A-Z]+$")  # typedefs.http_method
# What kong.service.request.set_method accepts (anything else fails every request in Kong)
METHODS: Final = (
    "GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS", "MKCOL", "COPY", "MOVE", "PROPFIND",
    "PROPPATCH", "LOCK", "UNLOCK", "PATCH", "TRACE",
)  # fmt: skip
HOST: Final = "host"
# Fields the gateway itself writes upstream (request framing, hop-by-hop, X-Forwarded-*)
_GATEWAY_FIELDS: Final = frozenset(
    name.decode() for name in REQUEST_SPECIAL_HEADERS if name != b"host"
)


@dataclass(frozen=True, slots=True)
class Entry:
    """One `name:value` entry; `value` is None for a name alone (what remove reads)."""

    name: str
    value: Template | None


@dataclass(frozen=True, slots=True)
class Family:
    """The entries of one operation (remove, rename, ...) for body, headers and querystring."""

    body: tuple[Entry, ...] = ()
    headers: tuple[Entry, ...] = ()
    querystring: tuple[Entry, ...] = ()


@dataclass(frozen=True, slots=True)
class TransformerConfig:
    http_method: str | None
    remove: Family
    rename: Family
    replace: Family
    add: Family
    append: Family
    uri: Template | None  # replace.uri

    def families(self) -> tuple[Family, ...]:
        return (self.remove, self.rename, self.replace, self.add, self.append)


def split_entry(entry: str) -> tuple[str, str] | None:
    """Kong's parse of an entry: (name, value); None when it does not start with a name."""
    found = _ENTRY.match(entry)
    return (found.group(1), found.group(2)) if found else None


class Entries(Declared):
    """An array of entries (default []), checked as Kong checks that array.

    `shape`: "names" (remove: only the name counts), "header_names" (remove.headers: a valid
    header name), "values" (body and querystring: a value is required), "headers" (`name:value`
    with a valid header name), "header_pairs" (rename.headers: both sides valid header names).
    `operation` names what the entries do to headers (for the names fastgw refuses)."""

    __slots__ = ("operation", "shape")

    def __init__(self, shape: str, operation: str = "") -> None:
        self.shape = shape
        self.operation = operation

    def read(self, reader: Reader, key: str) -> tuple[Entry, ...]:
        items = reader.strings(key, scalar_ok=True)
        entries = []
        for index, item in enumerate(items):
            where = join(reader.key_path(key), index)
            entry, problem = self._entry(item)
            if problem is not None:
                reader.problems.append((where, problem))
            elif entry is not None:
                entries.append(entry)
        return tuple(entries)

    def _entry(self, item: str) -> tuple[Entry | None, str | None]:
        shape = self.shape
        parts = split_entry(item)
        if parts is None or (shape in ("headers", "header_pairs") and ":" not in item):
            return None, f"invalid value: {item}"
        name, value = parts
        if shape != "names" and shape != "values":
            problem = _header_problem(name, self.operation)
            if problem is None and shape == "header_pairs":
                problem = _header_problem(value, self.operation)
            if problem is not None:
                return None, problem
            name = name.lower()
        if shape == "names" or shape == "header_names":
            return Entry(name, None), None
        if shape == "header_pairs":
            return Entry(name, Template((value.lower(),))), None
        if not value:
            if shape == "headers":
                return Entry(name, None), None  # Kong accepts it: a no-op at run time
            return None, f"key '{name}' has no value"
        try:
            return Entry(name, parse(value)), None
        except TemplateError as error:
            return None, f"value '{value}' is not in supported format, error:{error}"


def _header_problem(name: str, operation: str) -> str | None:
    if not _HEADER_NAME.match(name):
        return f"'{name}' is not a valid header"
    lower = name.lower()
    if operation and lower in _GATEWAY_FIELDS:
        return f"'{name}' is not supported: the gateway writes that header itself"
    if operation == "append" and lower == HOST:
        return "'host' is not supported: a request has one Host (replace it instead)"
    return None


def _family(reader: Reader, values: dict[str, Any]) -> Family:
    return Family(values["body"], values["headers"], values["querystring"])


def _family_schema(operation: str, value_shape: str, header_shape: str) -> Schema[Family]:
    return Schema(
        {
            "body": Entries(value_shape),
            "headers": Entries(header_shape, operation),
            "querystring": Entries(value_shape),
        },
        build=_family,
    )


class Uri(Declared):
    """`replace.uri`: a template of the whole upstream path (Kong's set_path: it must start
    with "/")."""

    __slots__ = ()

    def read(self, reader: Reader, key: str) -> Template | None:
        text = reader.string(key)
        if text is None:
            return None
        try:
            template = parse(text)
        except TemplateError as error:
            reader.error(key, f"value '{text}' is not in supported format, error:{error}")
            return None
        first = template.parts[0] if template.parts else ""
        if isinstance(first, str) and not first.startswith("/"):
            reader.error(key, "must start with /")
            return None
        return template


def _replace(reader: Reader, values: dict[str, Any]) -> tuple[Family, Template | None]:
    return _family(reader, values), values["uri"]


_REPLACE = Schema(
    {**_family_schema("replace", "values", "headers").fields, "uri": Uri()}, build=_replace
)


class HttpMethod(Declared):
    """typedefs.http_method, and a method the gateway can send instead of the client's."""

    __slots__ = ()

    def read(self, reader: Reader, key: str) -> str | None:
        method: str | None = reader.string(key)
        if method is None:
            return None
        if not _UPPER.match(method):
            reader.error(key, f"invalid value: {method}")
        elif method == "HEAD":
            reader.error(
                key,
                "HEAD is not supported: the client would wait for a body the upstream does not "
                "send",
            )
        elif method not in METHODS:
            reader.error(key, f"invalid method: {method}")
        else:
            return method
        return None


def _config(reader: Reader, values: dict[str, Any]) -> TransformerConfig:
    replace, uri = values["replace"]
    return TransformerConfig(
        http_method=values["http_method"],
        remove=values["remove"],
        rename=values["rename"],
        replace=replace,
        add=values["add"],
        append=values["append"],
        uri=uri,
    )


TRANSFORMER: Schema[TransformerConfig] = Schema(
    {
        "http_method": HttpMethod(),
        "remove": Record(_family_schema("", "names", "header_names")),
        "rename": Record(_family_schema("rename", "values", "header_pairs")),
        "replace": Record(_REPLACE),
        "add": Record(_family_schema("add", "values", "headers")),
        "append": Record(_family_schema("append", "values", "headers")),
    },
    build=_config,
)

__all__ = ["TRANSFORMER", "Entry", "Family", "TransformerConfig", "split_entry"]
