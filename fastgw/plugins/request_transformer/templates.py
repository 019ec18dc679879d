"""Kong's request-transformer templates: text with `$(...)` placeholders, rendered per request.

In Kong a placeholder holds a Lua expression (Penlight templates, in a sandbox). fastgw runs no
Lua: it renders the expressions Kong's documentation shows, parsed once at config load —
`headers.NAME`, `headers["NAME"]`, `query_params.NAME`, `uri_captures.NAME`, `uri_captures[1]`,
`shared.NAME`, string literals (`$('$(escaped)')`), and `a or b or "default"` fallbacks. Anything
else (a function, an operator, a method call) is a config error saying it is not supported.
As in Kong, a missing value renders as "" and a query flag (`?debug`) as "true".
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

# The tables a placeholder may read (Kong's lazily loaded template environment).
TABLES: Final = ("headers", "query_params", "uri_captures", "shared")
_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_INTEGER: Final = re.compile(r"-?[0-9]+")
_ESCAPES: Final = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'"}

# What a table gives for a key: a string, True (a query flag), or None (absent).
Value = str | bool | None
# (table, key) -> the value, for one request
Lookup = Callable[[str, str | int], Value]


class TemplateError(ValueError):
    """A value Kong would accept but fastgw cannot render (or that is not a template)."""


@dataclass(frozen=True, slots=True)
class Operand:
    """One side of an `or`: a table's key, or a literal (`table` is "")."""

    table: str
    key: str | int


@dataclass(frozen=True, slots=True)
class Template:
    """Literal pieces and placeholders (each a tuple of `or`ed operands), in order."""

    parts: tuple[str | tuple[Operand, ...], ...]

    @property
    def literal(self) -> str | None:
        """The text when there is no placeholder at all."""
        if all(isinstance(part, str) for part in self.parts):
            return "".join(part for part in self.parts if isinstance(part, str))
        return None

    def tables(self) -> set[str]:
        return {
            operand.table
            for part in self.parts
            if not isinstance(part, str)
            for operand in part
            if operand.table
        }

    def render(self, lookup: Lookup) -> str:
        pieces: list[str] = []
        for part in self.parts:
            if isinstance(part, str):
                pieces.append(part)
                continue
            value: Value = None
            for operand in part:
                value = (
                    str(operand.key) if not operand.table else lookup(operand.table, operand.key)
                )
                if value is not None and value is not False:
                    break  # Lua's `or`: only nil and false give way
            pieces.append(_text(value))
        return "".join(pieces)


def _text(value: Value | int) -> str:
    """Lua's tostring(value or '')."""
    if value is None or value is False:
        return ""
    if value is True:
        return "true"
    return str(value)


def parse(text: str) -> Template:
    """`text` as a template. Raises TemplateError."""
    parts: list[str | tuple[Operand, ...]] = []
    start = 0
    while True:
        opening = text.find("$(", start)
        if opening < 0:
            break
        closing = _balanced_end(text, opening + 1)
        if closing < 0:
            raise TemplateError("a $( has no matching )")
        if opening > start:
            parts.append(text[start:opening])
        parts.append(_expression(text[opening + 2 : closing]))
        start = closing + 1
    if start < len(text):
        parts.append(text[start:])
    return Template(tuple(parts))


def _balanced_end(text: str, at: int) -> int:
    """The index of the ")" closing the "(" at `at` (Lua's %b(): quotes are not special)."""
    depth = 0
    for index in range(at, len(text)):
        char = text[index]
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return index
    return -1


def _unsupported(expression: str) -> TemplateError:
    return TemplateError(
        f"$({expression}) is not supported: fastgw runs no Lua; a placeholder may read "
        "headers.NAME, query_params.NAME, uri_captures.NAME or uri_captures[N], shared.NAME, "
        'hold a string literal, and fall back with `or` ($(headers.x or "default"))'
    )


def _expression(expression: str) -> tuple[Operand, ...]:
    operands = []
    rest = expression.strip()
    while True:
        operand, rest = _operand(rest, expression)
        operands.append(operand)
        rest = rest.lstrip()
        if not rest:
            return tuple(operands)
        if not (rest.startswith("or") and rest[2:3] in (" ", "\t", "(", "'", '"')):
            raise _unsupported(expression)
        rest = rest[2:].lstrip()


def _operand(text: str, expression: str) -> tuple[Operand, str]:
    if text[:1] in ("'", '"'):
        literal, rest = _string(text, expression)
        return Operand("", literal), rest
    name = _NAME.match(text)
    if name is None or name.group() not in TABLES:
        raise _unsupported(expression)
    table, rest = name.group(), text[name.end() :].lstrip()
    if rest.startswith("."):
        key = _NAME.match(rest[1:].lstrip())
        if key is None:
            raise _unsupported(expression)
        return Operand(table, key.group()), rest[1:].lstrip()[key.end() :]
    if rest.startswith("["):
        inner = rest[1:].lstrip()
        if inner[:1] in ("'", '"'):
            literal, after = _string(inner, expression)
            index: str | int = literal
        else:
            number = _INTEGER.match(inner)
            if number is None:
                raise _unsupported(expression)
            index, after = int(number.group()), inner[number.end() :]
        after = after.lstrip()
        if not after.startswith("]"):
            raise _unsupported(expression)
        return Operand(table, index), after[1:]
    raise _unsupported(expression)  # a whole table renders as Lua's "table: 0x..."


def _string(text: str, expression: str) -> tuple[str, str]:
    """A Lua short string literal at the start of `text`, and what follows it."""
    quote = text[0]
    chars: list[str] = []
    index = 1
    while index < len(text):
        char = text[index]
        if char == quote:
            return "".join(chars), text[index + 1 :]
        if char == "\\":
            escaped = _ESCAPES.get(text[index + 1 : index + 2])
            if escaped is None:
                raise _unsupported(expression)
            chars.append(escaped)
            index += 2
            continue
        chars.append(char)
        index += 1
    raise _unsupported(expression)
