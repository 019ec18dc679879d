"""What Kong's authentication plugins share when a config loads: Kong's header-name check
(typedefs.header_name), the `anonymous` consumer, their error answers made once.

Not compiled: nothing here runs per request.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from fastgw.config.consumers import Consumer
from fastgw.config.model import Entities
from fastgw.config.schema import Declared, Reader
from fastgw.http.responses import JSON_CONTENT_TYPE, json_body

# Kong's typedefs.header_name (kong/db/schema/typedefs.lua validate_header_name)
_HEADER_NAME = re.compile(r"^[a-zA-Z0-9\-_]+$")


def header_name_problem(name: str) -> str | None:
    """Kong's message for a name that is not a header name, else None."""
    if not name:
        return "no header name provided"
    if _HEADER_NAME.match(name) is None:
        return f"bad header name '{name}', allowed characters are A-Z, a-z, 0-9, '_', and '-'"
    return None


class HeaderName(Declared):
    """One header name (Kong's typedefs.header_name); None when absent."""

    __slots__ = ()

    def read(self, reader: Reader, key: str) -> str | None:
        name: str | None = reader.string(key, allow_empty=True)
        if name is None:
            return None
        problem = header_name_problem(name)
        if problem is not None:
            reader.error(key, problem)
            return None
        return name


class HeaderNames(Declared):
    """An array of header names (key-auth's `key_names`), `default` when absent."""

    __slots__ = ("default",)

    def __init__(self, default: tuple[str, ...]) -> None:
        self.default = default

    def read(self, reader: Reader, key: str) -> tuple[str, ...]:
        reader.ignore(key)
        raw = reader.raw.get(key)
        if raw is None:
            return self.default
        if not isinstance(raw, list):
            reader.error(key, "must be an array of strings")
            return self.default
        names = []
        for index, item in enumerate(raw):
            where = f"{reader.key_path(key)}[{index}]"
            problem = header_name_problem(item) if isinstance(item, str) else "must be a string"
            if problem is not None:
                reader.problems.append((where, problem))
            else:
                names.append(item)
        if not raw:
            reader.error(key, "length must be at least 1")  # Kong: a required array
        return tuple(names)


def header_forms(name: str) -> tuple[bytes, ...]:
    """The request header names a Kong plugin reading header `name` finds (lower case; Kong's
    get_headers() also finds `a_b` as `a-b`)."""
    lower = name.lower().encode()
    hyphens = lower.replace(b"_", b"-")
    return (lower,) if hyphens == lower else (lower, hyphens)


def anonymous_consumer(anonymous: str | None, entities: Entities) -> Consumer | None:
    """The consumer `anonymous` names (Kong: its id, else its username; never custom_id), None
    when it names none (see `missing_anonymous`)."""
    if anonymous is None:
        return None
    return entities.consumers.reference(anonymous)


Answer = tuple[int, bytes, tuple[tuple[bytes, bytes], ...]]


def missing_anonymous(anonymous: str | None, consumer: Consumer | None) -> Answer | None:
    """Kong's answer to a request that would go on as an `anonymous` consumer the config does
    not have: Kong loads such a config (the reference is not checked) and answers 500 each
    request that fails authentication; None when `anonymous` is unset or names a consumer."""
    if anonymous is None or consumer is not None:
        return None
    return error_answer(500, f"anonymous consumer {anonymous} is configured but doesn't exist")


def error_answer(status: int, message: str, headers: Sequence[tuple[bytes, bytes]] = ()) -> Answer:
    """A JSON `{"message": ...}` answer (Kong's kong.response.error), made once."""
    return status, json_body(message), ((b"content-type", JSON_CONTENT_TYPE), *headers)
