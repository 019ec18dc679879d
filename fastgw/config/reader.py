"""Typed reading of one config mapping: every problem is collected with the path of its key.

The primitive under the declarations of fastgw/config/schema.py (and of every plugin's schema),
so errors read alike everywhere: `plugins[0].config.cache_ttl: must be an integer >= 0`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from fastgw.errors import ConfigError

_MISSING: Any = object()

# (key path, message) pairs: what is wrong (problems) or only worth telling (warnings)
Findings = list[tuple[str, str]]


def join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def raise_if(problems: Findings) -> None:
    if problems:
        raise ConfigError(problems)


class Reader:
    """Reads one mapping found at `path`; unknown keys are errors when `finish` is called.

    Every getter returns a usable value even when the input is bad (the default, or an empty
    value) and records the problem, so one pass reports every error at once. `warnings` is the
    channel for what is accepted but worth telling (a deprecated key); readers made with
    `child` or `mapping` share both lists with their parent.
    """

    def __init__(
        self, raw: object, path: str, problems: Findings, warnings: Findings | None = None
    ) -> None:
        self.path = path
        self.problems = problems
        self.warnings: Findings = [] if warnings is None else warnings
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

    def warn(self, key: str | int, message: str) -> None:
        self.warnings.append((self.key_path(key) if key != "" else self.path or "(root)", message))

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

    def child(self, raw: object, key: str | int) -> Reader:
        """A reader of `raw`, found at `key` of this mapping, sharing problems and warnings."""
        return Reader(raw, self.key_path(key), self.problems, self.warnings)

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
        return self.child(self.raw.get(key), key)
