"""The schema engine: how each config key is read, declared once, the way Kong's schema.lua
files are declarations and not code.

Every entity of the document (a `Schema` read by `read_schema`) and every plugin's config (a
dataclass whose fields are `Annotated[type, Text()]`, read by `read_declared`) use the same
kinds, so types, defaults, Kong's names, "not supported yet", deprecated keys and "unknown
field" all come from the declaration:

    TARGET = Schema(
        {
            "target": Text(required=True),
            "weight": Integer(DEFAULT_WEIGHT, minimum=0, maximum=MAX_WEIGHT),
            "tags": TAGS,
            "id": Ignored(),
        },
        build=build_target,
        annotations=True,  # Kong's _comment and _ignore
    )

A kind reads one key (the scalar kinds, `Strings`, `Record`, `Records`, `Unsupported`,
`Ignored`; a module adds its own kinds for values of their own shape); `Checked` runs a check
across keys right after one is read, `Schema.checks` after all of them; `build` makes the model
object from what was read. A `Shorthand` is one of Kong's `shorthand_fields`: a deprecated key
still accepted, moved to its replacement with a warning.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from fastgw.config.reader import Findings, Reader, join, raise_if

__all__ = [
    "EMPTY",
    "FALSY",
    "TAGS",
    "Array",
    "Boolean",
    "Check",
    "Checked",
    "Declared",
    "ExclusiveWith",
    "Findings",
    "Ignored",
    "Integer",
    "Number",
    "Reader",
    "Reading",
    "Record",
    "Records",
    "Schema",
    "Shorthand",
    "Strings",
    "Text",
    "Unsupported",
    "apply_shorthands",
    "join",
    "raise_if",
    "read_declared",
    "read_schema",
    "values_of",
]

T = TypeVar("T")
U = TypeVar("U")

# A check across keys: it reads what was read so far (`values`, by key), records problems on
# the reader, and may replace a value it rejects (by its default), so that building goes on.
Check = Callable[[Reader, dict[str, Any]], None]
# What `read_schema` hands each item of a list as soon as it is read (Records; the loader
# links a top-level route to its service there, so problems come in the document's order).
ItemHook = Callable[[Any], object]


@dataclass(slots=True)
class Reading:
    """One mapping being read with a schema: the values so far and the hooks for its lists."""

    values: dict[str, Any] = field(default_factory=dict)
    each: Mapping[str, ItemHook] = field(default_factory=dict)


class Declared:
    """How one config key is read: a subclass per kind of value."""

    __slots__ = ()

    def read(self, reader: Reader, key: str) -> Any:
        raise NotImplementedError

    def read_in(self, reader: Reader, key: str, reading: Reading) -> Any:
        """`read`, for kinds that need the keys read before them (they override this)."""
        return self.read(reader, key)


# -- scalars and arrays of strings ----------------------------------------------------------------


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
    """An integer, optionally one of `one_of`; None when absent and without a default."""

    __slots__ = ("default", "maximum", "minimum", "one_of", "required")

    def __init__(
        self,
        default: int | None = None,
        *,
        minimum: int | None = None,
        maximum: int | None = None,
        one_of: tuple[int, ...] | None = None,
        required: bool = False,
    ) -> None:
        self.default = default
        self.minimum = minimum
        self.maximum = maximum
        self.one_of = one_of
        self.required = required

    def read(self, reader: Reader, key: str) -> Any:
        value = reader.integer(
            key, self.default, required=self.required, minimum=self.minimum, maximum=self.maximum
        )
        if self.one_of is not None and value is not None and value not in self.one_of:
            choices = ", ".join(map(str, self.one_of))
            reader.error(key, f"must be one of {choices}; got {value}")
            return self.default
        return value


class Text(Declared):
    """A non-empty string (or any string, `allow_empty`), optionally one of `one_of`; None when
    absent and without a default."""

    __slots__ = ("allow_empty", "default", "one_of", "required")

    def __init__(
        self,
        default: str | None = None,
        *,
        one_of: tuple[str, ...] | None = None,
        required: bool = False,
        allow_empty: bool = False,
    ) -> None:
        self.default = default
        self.one_of = one_of
        self.required = required
        self.allow_empty = allow_empty

    def read(self, reader: Reader, key: str) -> Any:
        return reader.string(
            key,
            self.default,
            required=self.required,
            one_of=self.one_of,
            allow_empty=self.allow_empty,
        )


class Strings(Declared):
    """An array of non-empty strings. `lone`: a lone string is taken as one (Kong does, for
    plugin arrays); `non_empty`: an empty array given is an error."""

    __slots__ = ("default", "lone", "non_empty", "one_of", "required")

    def __init__(
        self,
        default: tuple[str, ...] = (),
        *,
        one_of: tuple[str, ...] | None = None,
        lone: bool = True,
        required: bool = False,
        non_empty: bool = False,
    ) -> None:
        self.default = default
        self.one_of = one_of
        self.lone = lone
        self.required = required
        self.non_empty = non_empty

    def read(self, reader: Reader, key: str) -> tuple[str, ...]:
        values = reader.strings(
            key, self.default, required=self.required, one_of=self.one_of, scalar_ok=self.lone
        )
        if self.non_empty and reader.has(key) and not values:
            reader.error(key, "must not be empty")
        return values


TAGS = Strings(lone=False)  # Kong's `tags` on every entity: accepted, no meaning here


class Array(Declared):
    """An array of anything, checked by whoever uses it ([] when absent)."""

    __slots__ = ()

    def read(self, reader: Reader, key: str) -> list[Any]:
        return list(reader.sequence(key))


# -- Kong's keys without a use here ---------------------------------------------------------------


class Ignored(Declared):
    """A Kong key accepted without reading it (`id`, `created_at`: no meaning here)."""

    __slots__ = ()

    def read(self, reader: Reader, key: str) -> None:
        reader.ignore(key)


# What decK writes for a key left unused, which an Unsupported key accepts (besides null)
EMPTY: tuple[object, ...] = ([], {})  # an empty list or record
FALSY: tuple[object, ...] = (False, 0, "", [], {})  # any false value: a switch off, too


def _among(value: object, accepted: tuple[object, ...]) -> bool:
    # by type as well: False == 0, but a false switch is not a zero count
    return any(type(value) is type(item) and value == item for item in accepted)


class Unsupported(Declared):
    """A Kong key fastgw does not support yet: accepted when null or one of `accepts` (what
    decK writes for it unused), else an error saying so (never "unknown field"). `array`: an
    entity list, accepted empty, "must be an array" when it is something else."""

    __slots__ = ("accepts", "array", "reason")

    def __init__(
        self,
        reason: str = "not supported yet",
        *,
        accepts: tuple[object, ...] = (),
        array: bool = False,
    ) -> None:
        self.reason = reason
        self.accepts = ([],) if array else accepts
        self.array = array

    def read(self, reader: Reader, key: str) -> None:
        reader.ignore(key)
        value = reader.raw.get(key)
        if value is None or _among(value, self.accepts):
            return
        if self.array and not isinstance(value, list):
            reader.error(key, "must be an array")
        else:
            reader.error(key, self.reason)


# -- records, lists of records, keys that depend on others ----------------------------------------


class Record(Declared, Generic[T]):
    """A nested mapping read with its own schema (absent: read as empty, so its defaults)."""

    __slots__ = ("schema",)

    def __init__(self, schema: Schema[T]) -> None:
        self.schema = schema

    def read(self, reader: Reader, key: str) -> T:
        return read_schema(reader.mapping(key), self.schema)


class Records(Declared, Generic[T]):
    """An array of mappings, each read with `schema`; an item whose build gave None is left
    out. `unique`: attributes of the built items no two items may share (Kong's unique keys);
    the later item is left out, with the problem at its key."""

    __slots__ = ("schema", "unique")

    def __init__(self, schema: Schema[T], *, unique: tuple[str, ...] = ()) -> None:
        self.schema = schema
        self.unique = unique

    def read_in(self, reader: Reader, key: str, reading: Reading) -> list[T]:
        hook = reading.each.get(key)
        items: list[T] = []
        first_at: dict[tuple[str, object], str] = {}
        for index, raw in enumerate(reader.sequence(key)):
            item_reader = reader.child(raw, join(key, index))
            item = read_schema(item_reader, self.schema)
            if item is None or self._repeats(item, item_reader, first_at):
                continue
            items.append(item)
            if hook is not None:
                hook(item)
        return items

    def read(self, reader: Reader, key: str) -> list[T]:
        return self.read_in(reader, key, Reading())

    def _repeats(self, item: T, reader: Reader, first_at: dict[tuple[str, object], str]) -> bool:
        for name in self.unique:
            value = getattr(item, name)
            if value is None:
                continue
            first = first_at.setdefault((name, value), reader.path)
            if first != reader.path:
                reader.error(name, f"is already used by {first}")
                return True
        return False


class ExclusiveWith(Declared):
    """`kind`, unless the key `other` (declared before) was given: then this key must be
    absent (a service's `url` and its `host`), and reads as None."""

    __slots__ = ("kind", "other")

    def __init__(self, other: str, kind: Declared) -> None:
        self.other = other
        self.kind = kind

    def read_in(self, reader: Reader, key: str, reading: Reading) -> Any:
        if reading.values.get(self.other) is None:
            return self.kind.read_in(reader, key, reading)
        reader.ignore(key)
        if reader.has(key):
            reader.error(key, f"cannot be set together with {self.other}")
        return None


class Checked(Declared):
    """`kind`, then `checks` across keys, right after it (so problems keep the reading order)."""

    __slots__ = ("checks", "kind")

    def __init__(self, kind: Declared, *checks: Check) -> None:
        self.kind = kind
        self.checks = checks

    def read_in(self, reader: Reader, key: str, reading: Reading) -> Any:
        reading.values[key] = self.kind.read_in(reader, key, reading)
        for check in self.checks:
            check(reader, reading.values)
        return reading.values[key]


# -- deprecated keys (Kong's shorthand_fields) ----------------------------------------------------


def _same(value: Any) -> Any:
    return value


@dataclass(frozen=True, slots=True)
class Shorthand:
    """A deprecated key Kong still accepts: its value, checked with `kind` at its own key, is
    moved to `replaced_by` (a key path from the same mapping, e.g. ("redis", "host"), and each
    path of `also`) through `translate`, and a warning names the replacement. Both given with
    different values is an error (Kong's rule for a shorthand that names its replacement; the
    values are not quoted, as they may be secrets) unless `mismatch_is_error` is false (Kong's
    older renames: the new key's value wins). An empty `replaced_by` is an option Kong dropped:
    accepted, checked, warned about, and has no effect."""

    name: str
    replaced_by: tuple[str, ...]
    kind: Declared
    translate: Callable[[Any], Any] = _same
    message: str | None = None  # the warning; default: "is deprecated, please use X instead"
    also: tuple[tuple[str, ...], ...] = ()
    mismatch_is_error: bool = True

    @property
    def replacement(self) -> str:
        return ", ".join(".".join(path) for path in (self.replaced_by, *self.also))


def apply_shorthands(reader: Reader, shorthands: tuple[Shorthand, ...]) -> None:
    """Rewrite `reader.raw` as if each deprecated key given were written as its replacement."""
    raw: dict[str, Any] = dict(reader.raw)
    for shorthand in shorthands:
        if raw.get(shorthand.name) is None:
            continue
        before = len(reader.problems)
        shorthand.kind.read(reader, shorthand.name)  # checks it, at the key the user wrote
        value = raw.pop(shorthand.name)
        if len(reader.problems) > before:
            continue
        message = shorthand.message or f"is deprecated, please use {shorthand.replacement} instead"
        if not shorthand.replaced_by:
            reader.warn(shorthand.name, message)
            continue
        new_value = shorthand.translate(value)
        paths = (shorthand.replaced_by, *shorthand.also)
        existing = [_at(raw, path) for path in paths]
        mismatch = any(item is not None and item != new_value for item in existing)
        if mismatch and shorthand.mismatch_is_error:
            reader.error(
                shorthand.name,
                "both deprecated and new field are used but their values mismatch: "
                f"{shorthand.name} vs {shorthand.replacement}",
            )
            continue
        for path, item in zip(paths, existing, strict=True):
            if item is not None:
                continue  # Kong: the new key's own value wins
            placed = _with_value(raw, path, new_value)
            if placed is not None:
                raw = placed
        reader.warn(shorthand.name, message)
    reader.raw = raw


def _at(raw: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = raw
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def _with_value(raw: Mapping[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any] | None:
    """A copy of `raw` with `value` at `path`; None when a mapping on the way is something
    else (the replacement's own reading reports that shape)."""
    head, rest = path[0], path[1:]
    copy = dict(raw)
    if not rest:
        copy[head] = value
        return copy
    inner = raw.get(head)
    if inner is None:
        inner = {}
    if not isinstance(inner, Mapping):
        return None
    placed = _with_value(inner, rest, value)
    if placed is None:
        return None
    copy[head] = placed
    return copy


# -- schemas --------------------------------------------------------------------------------------


def values_of(reader: Reader, values: dict[str, Any]) -> dict[str, Any]:
    """The build of a schema whose caller takes the values as read."""
    return values


# Kong's annotations, accepted at the top level and on every entity (declarative_config.lua):
# a comment must be a string, the ignored values an array of anything.
ANNOTATIONS: Mapping[str, Declared] = {"_comment": Text(allow_empty=True), "_ignore": Array()}


class Schema(Generic[T]):
    """The keys of one mapping, in the order they are read (problems come in that order)."""

    __slots__ = ("annotations", "build", "checks", "fields", "shorthands")

    def __init__(
        self,
        fields: Mapping[str, Declared],
        *,
        build: Callable[[Reader, dict[str, Any]], T],
        checks: tuple[Check, ...] = (),
        shorthands: tuple[Shorthand, ...] = (),
        annotations: bool = False,
    ) -> None:
        self.fields = dict(fields)
        self.build = build
        self.checks = checks
        self.shorthands = shorthands
        self.annotations = annotations

    def extended(
        self, fields: Mapping[str, Declared], build: Callable[[Reader, dict[str, Any]], U]
    ) -> Schema[U]:
        """This schema with more keys after its own (a top-level route: a route, and the
        service it names)."""
        return Schema(
            {**self.fields, **fields},
            build=build,
            checks=self.checks,
            shorthands=self.shorthands,
            annotations=self.annotations,
        )


def read_schema(
    reader: Reader, schema: Schema[T], *, each: Mapping[str, ItemHook] | None = None
) -> T:
    """Read the mapping of `reader` with `schema`: shorthands, every key in order, the checks,
    unknown keys, then the build. `each`: hooks by key for the items of its `Records`."""
    if schema.shorthands:
        apply_shorthands(reader, schema.shorthands)
    reading = Reading(each=each or {})
    for key, kind in schema.fields.items():
        reading.values[key] = kind.read_in(reader, key, reading)
    if schema.annotations:
        for key, kind in ANNOTATIONS.items():
            kind.read(reader, key)
    for check in schema.checks:
        check(reader, reading.values)
    reader.finish()
    return schema.build(reader, reading.values)


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
