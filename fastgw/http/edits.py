"""The header fields the layers above set, add or remove in one response (Kong's
kong.response.set_header / add_header / clear_header), and their application to the upstream's
field lines or to a local answer's.

Compiled with the hot path (fastgw/build_info.py). A plugin that sets the same fields on every
request (rate-limiting) may hand them over as lines it rendered itself (`set_lines`): one call,
and the upstream's head is searched once for what they replace.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Final

log = logging.getLogger("fastgw.http")

_COLON: Final = 0x3A  # b":"[0]
_LF: Final = 0x0A  # b"\n"[0]
_CRLF: Final = b"\r\n"
_SEPARATOR: Final = b": "


class ResponseEdits:
    """Header fields to set or add, and the filters of one response."""

    __slots__ = ("added", "filters", "line_names", "lines", "probe", "replaced")

    def __init__(self) -> None:
        self.replaced: list[bytes] = []  # lower-case names whose upstream fields go
        self.added: list[tuple[bytes, bytes]] = []  # (lower-case name, value), in order
        # fastgw.http.response_edits.ResponseFilter instances (that module imports this one)
        self.filters: list[Any] = []
        # fields set as rendered lines (`set_lines`), after `added`: their names and a piece
        # of text every one of those names holds
        self.lines = b""
        self.line_names: tuple[bytes, ...] = ()
        self.probe = b""

    def set_lines(self, lines: bytes, names: tuple[bytes, ...], probe: bytes) -> None:
        """Fields `names` (distinct, lower case) set at once (each as `set` would), given as
        their CRLF-terminated field lines. `probe`: lower-case text each of `names` contains
        (the upstream's head is searched for it alone: most often it is not there)."""
        if self.lines or self.added or self.replaced:
            self._materialize()
            for name, value in _fields_of(lines):
                self.set(name, value)
            return
        self.lines = lines
        self.line_names = names
        self.probe = probe

    def set_all(self, fields: Sequence[tuple[bytes, bytes]]) -> None:
        """`set` for each (name, value) of `fields` (distinct names), in one call."""
        if not self.replaced and not self.added and not self.lines:
            self.replaced = [name for name, _ in fields]  # nothing earlier to replace
            self.added = list(fields)
            return
        for name, value in fields:
            self.set(name, value)

    def set(self, name: bytes, value: bytes) -> None:
        """One field `name` of `value`, replacing the upstream's and earlier edits' (Kong's
        set_header). `name` is lower case."""
        if self.lines:
            self._materialize()
        if name not in self.replaced:
            self.replaced.append(name)
        self.added = [field for field in self.added if field[0] != name]
        self.added.append((name, value))

    def add(self, name: bytes, value: bytes) -> None:
        """One more field `name` (Kong's add_header): the upstream's stay."""
        if self.lines:
            self._materialize()
        self.added.append((name, value))

    def remove(self, name: bytes) -> None:
        """No field `name` at all (Kong's clear_header)."""
        if self.lines:
            self._materialize()
        if name not in self.replaced:
            self.replaced.append(name)
        self.added = [field for field in self.added if field[0] != name]

    def _materialize(self) -> None:
        """Rendered lines become ordinary edits (another edit came after them)."""
        lines = self.lines
        if not lines:
            return
        self.lines = b""
        for name in self.line_names:
            if name not in self.replaced:
                self.replaced.append(name)
        self.added += _fields_of(lines)
        self.line_names = ()

    def apply(self, fields: bytes) -> bytes:
        """The upstream's field lines (CRLF-terminated, as forwarded) with the edits made."""
        if fields and self._replaces_some(fields):
            replaced = set(self.replaced) | set(self.line_names)
            kept = [line for line in fields.split(_CRLF)[:-1] if _name_of(line) not in replaced]
            fields = b"".join(line + _CRLF for line in kept)
        added = self.added
        if not added:
            return fields + self.lines if self.lines else fields
        parts = [fields]
        for name, value in added:
            parts.append(name)
            parts.append(_SEPARATOR)
            parts.append(value)
            parts.append(_CRLF)
        parts.append(self.lines)
        return b"".join(parts)

    def _replaces_some(self, fields: bytes) -> bool:
        """Whether a field the edits replace may be among `fields` (most often none is: the
        upstream's fields go as they came, unsplit)."""
        replaced = self.replaced
        probe = self.probe
        if not replaced and not probe:
            return False
        lowered = fields.lower()
        if probe and lowered.find(probe) >= 0:
            return True
        for name in replaced:
            at = lowered.find(name)
            while at >= 0:
                line_start = at == 0 or lowered[at - 1] == _LF
                if line_start and lowered.startswith(b":", at + len(name)):
                    return True
                at = lowered.find(name, at + 1)
        return False

    def apply_to(self, headers: Sequence[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """A local answer's (name, value) fields with the edits made."""
        self._materialize()
        kept = [field for field in headers if field[0].lower() not in self.replaced]
        return kept + self.added


def _name_of(line: bytes) -> bytes:
    colon = line.find(_COLON)
    return (line if colon < 0 else line[:colon]).lower()


def _fields_of(lines: bytes) -> list[tuple[bytes, bytes]]:
    """Rendered field lines as (name, value) pairs."""
    fields = []
    for line in lines.split(_CRLF)[:-1]:
        name, _, value = line.partition(b":")
        fields.append((name.lower(), value.strip(b" \t")))
    return fields


# -- applied by the exchange (fastgw/http/exchange.py) ------------------------------------------


def edited_fields(edits: ResponseEdits, status: int, fields: bytes) -> bytes:
    """The upstream's field lines as the plugins' edits and filters leave them."""
    for response_filter in edits.filters:
        response_filter.response_head(status, fields, edits)
    return edits.apply(fields)


def filter_body(edits: ResponseEdits, data: bytes) -> None:
    """A piece of the upstream's body to each filter; a failing filter sees no more of it."""
    for response_filter in edits.filters:
        try:
            response_filter.response_body(data)
        except Exception:
            log.exception("response filter failed; it sees no more of this response")
            edits.filters = [f for f in edits.filters if f is not response_filter]


def end_filters(edits: ResponseEdits, complete: bool) -> None:
    """Tell the filters once how their response ended."""
    filters = edits.filters
    edits.filters = []
    for response_filter in filters:
        try:
            if complete:
                response_filter.response_complete()
            else:
                response_filter.response_aborted()
        except Exception:
            log.exception("response filter failed")
