"""Typed reading of config mappings: every problem is collected with the path of its key.

Used by the gateway config and by each plugin's own config schema, so errors read alike:
`plugins[0].config.cache_ttl: must be an integer >= 0`.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from fastgw.errors import ConfigError

_MISSING: Any = object()


def join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


class Reader:
    """Reads one mapping found at `path`; unknown keys are errors when `finish` is called.

    Every getter returns a usable value even when the input is bad (the default, or an empty
    value) and records the problem, so one pass reports every error at once.
    """

    def __init__(self, raw: object, path: str, problems: list[tuple[str, str]]) -> None:
        self.path = path
        self.problems = problems
        self.seen: set[str] = set()
        if raw is None:
            raw = {}
        if not isinstance(raw, Mapping):
            self.error("", "must be a mapping")
            raw = {}
        self.raw: Mapping[str, Any] = raw

    # -- bookkeeping ------------------------------------------------------------------------------

    def key_path(self, key: str | int) -> str:
        return join(self.path, key)

    def error(self, key: str | int, reason: str) -> None:
        self.problems.append((self.key_path(key) if key != "" else self.path or "(root)", reason))

    def has(self, key: str) -> bool:
        return self.raw.get(key) is not None

    def _take(self, key: str, default: Any, required: bool) -> Any:
        self.seen.add(key)
        value = self.raw.get(key)
        if value is None:
            if required:
                self.error(key, "is required")
            return _MISSING if default is _MISSING else default
        return value

    def ignore(self, *keys: str) -> None:
        """Accept `keys` without reading them (Kong fields with no meaning here)."""
        self.seen.update(keys)

    def finish(self) -> None:
        for key in self.raw:
            if key not in self.seen:
                self.error(str(key), "unknown field")

    # -- scalars ----------------------------------------------------------------------------------

    def string(
        self,
        key: str,
        default: str | None = None,
        *,
        required: bool = False,
        one_of: Iterable[str] | None = None,
        allow_empty: bool = False,
    ) -> Any:
        value = self._take(key, default, required)
        if value is _MISSING or value is default:
            return None if value is _MISSING else value
        if not isinstance(value, str):
            self.error(key, "must be a string")
            return default
        if not value and not allow_empty:
            self.error(key, "must not be empty")
            return default
        if one_of is not None:
            choices = tuple(one_of)
            if value not in choices:
                self.error(key, f"must be one of {', '.join(choices)}; got {value!r}")
                return default
        return value

    def integer(
        self,
        key: str,
        default: int | None = None,
        *,
        required: bool = False,
        minimum: int | None = None,
        maximum: int | None = None,
    ) -> Any:
        value = self._take(key, default, required)
        if value is _MISSING or value is default:
            return None if value is _MISSING else value
        if isinstance(value, bool) or not isinstance(value, int):
            self.error(key, "must be an integer")
            return default
        return self._bounded(key, value, default, minimum, maximum)

    def number(
        self,
        key: str,
        default: float | None = None,
        *,
        required: bool = False,
        minimum: float | None = None,
        maximum: float | None = None,
    ) -> Any:
        value = self._take(key, default, required)
        if value is _MISSING or value is default:
            return None if value is _MISSING else value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.error(key, "must be a number")
            return default
        return self._bounded(key, value, default, minimum, maximum)

    def _bounded(self, key: str, value: Any, default: Any, minimum: Any, maximum: Any) -> Any:
        if minimum is not None and value < minimum:
            self.error(key, f"must be >= {minimum}")
            return default
        if maximum is not None and value > maximum:
            self.error(key, f"must be <= {maximum}")
            return default
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self._take(key, default, False)
        if not isinstance(value, bool):
            self.error(key, "must be a boolean")
            return default
        return value

    # -- collections ------------------------------------------------------------------------------

    def sequence(self, key: str, *, required: bool = False) -> Sequence[Any]:
        """A list at `key` ([] when absent); elements are checked by the caller."""
        value = self._take(key, None, required)
        if value is None or value is _MISSING:
            return []
        if not isinstance(value, list):
            self.error(key, "must be an array")
            return []
        return value

    def strings(
        self,
        key: str,
        default: Sequence[str] = (),
        *,
        required: bool = False,
        one_of: Iterable[str] | None = None,
        scalar_ok: bool = False,
    ) -> tuple[str, ...]:
        """An array of non-empty strings; `scalar_ok` also takes a lone string (Kong does)."""
        raw = self._take(key, None, required)
        if raw is None or raw is _MISSING:
            return tuple(default)
        if scalar_ok and isinstance(raw, str):
            raw = [raw]
        if not isinstance(raw, list):
            self.error(key, "must be an array of strings")
            return tuple(default)
        choices = tuple(one_of) if one_of is not None else None
        result: list[str] = []
        for index, item in enumerate(raw):
            item_path = join(self.key_path(key), index)
            if not isinstance(item, str) or not item:
                self.problems.append((item_path, "must be a non-empty string"))
            elif choices is not None and item not in choices:
                self.problems.append(
                    (item_path, f"must be one of {', '.join(choices)}; got {item!r}")
                )
            else:
                result.append(item)
        return tuple(result)

    def mapping(self, key: str) -> Reader:
        """A nested mapping at `key`, read with its own Reader (call `finish` on it)."""
        self.seen.add(key)
        return Reader(self.raw.get(key), self.key_path(key), self.problems)


def raise_if(problems: list[tuple[str, str]]) -> None:
    if problems:
        raise ConfigError(problems)


# -- declarations ---------------------------------------------------------------------------------
# A config dataclass declares each plain field's type, default and bounds in its annotation,
# `leeway: Annotated[float, Number(0, minimum=0)]`, under the config's own key name (Kong's,
# where Kong has the key); `read_declared` reads them all, and the schema's parse function is
# left with the fields derived from several keys and the checks across keys. The way Kong's
# schema.lua files are declarations, not code.


class Declared:
    """How one config key is read: a subclass per kind of value."""

    __slots__ = ()

    def read(self, reader: Reader, key: str) -> Any:
        raise NotImplementedError


class Boolean(Declared):
    __slots__ = ("default",)

    def __init__(self, default: bool) -> None:
        self.default = default

    def read(self, reader: Reader, key: str) -> bool:
        return reader.boolean(key, self.default)


class Number(Declared):
    """A number; None when absent and without a default."""

    __slots__ = ("default", "maximum", "minimum")

    def __init__(
        self,
        default: float | None = None,
        *,
        minimum: float | None = None,
        maximum: float | None = None,
    ) -> None:
        self.default = default
        self.minimum = minimum
        self.maximum = maximum

    def read(self, reader: Reader, key: str) -> Any:
        return reader.number(key, self.default, minimum=self.minimum, maximum=self.maximum)


class Integer(Declared):
    """An integer; None when absent and without a default."""

    __slots__ = ("default", "maximum", "minimum")

    def __init__(
        self,
        default: int | None = None,
        *,
        minimum: int | None = None,
        maximum: int | None = None,
    ) -> None:
        self.default = default
        self.minimum = minimum
        self.maximum = maximum

    def read(self, reader: Reader, key: str) -> Any:
        return reader.integer(key, self.default, minimum=self.minimum, maximum=self.maximum)


class Text(Declared):
    """A non-empty string, optionally one of `one_of`; None when absent and without a default."""

    __slots__ = ("default", "one_of", "required")

    def __init__(
        self,
        default: str | None = None,
        *,
        one_of: tuple[str, ...] | None = None,
        required: bool = False,
    ) -> None:
        self.default = default
        self.one_of = one_of
        self.required = required

    def read(self, reader: Reader, key: str) -> Any:
        return reader.string(key, self.default, required=self.required, one_of=self.one_of)


class Strings(Declared):
    """An array of non-empty strings (a lone string is taken as one, as Kong does)."""

    __slots__ = ("default", "one_of")

    def __init__(
        self, default: tuple[str, ...] = (), *, one_of: tuple[str, ...] | None = None
    ) -> None:
        self.default = default
        self.one_of = one_of

    def read(self, reader: Reader, key: str) -> tuple[str, ...]:
        return reader.strings(key, self.default, one_of=self.one_of, scalar_ok=True)


def read_declared(reader: Reader, cls: type) -> dict[str, Any]:
    """Every declared field of dataclass `cls` (`name: Annotated[type, Declared(...)]`), read
    from `reader` under the field's name."""
    hints = typing.get_type_hints(cls, include_extras=True)
    values: dict[str, Any] = {}
    for item in dataclasses.fields(cls):
        for how in getattr(hints[item.name], "__metadata__", ()):
            if isinstance(how, Declared):
                values[item.name] = how.read(reader, item.name)
    return values
