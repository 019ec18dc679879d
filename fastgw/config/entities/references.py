"""How one entity names another in a document: `service: X` or `service: {name: X}` (decK
writes either); the loader looks the name up once the named entities are read."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastgw.config.schema import Declared, Reader, Schema, Text, read_schema


def _name(reader: Reader, values: dict[str, Any]) -> str | None:
    name: str | None = values["name"]
    return name


NAMED = Schema({"name": Text(required=True)}, build=_name)


class Reference(Declared):
    """The name in a reference to another entity; None when absent or unusable (said so)."""

    __slots__ = ()

    def read(self, reader: Reader, key: str) -> str | None:
        reader.ignore(key)
        raw = reader.raw.get(key)
        if raw is None:
            return None
        if isinstance(raw, str) and raw:
            return raw
        if isinstance(raw, Mapping):
            return read_schema(reader.child(raw, key), NAMED)
        reader.error(key, "must be a name, or a mapping with a name")
        return None
