"""What the layers above change in a response before its head goes out: header fields set (Kong's
`kong.response.set_header`) or added (`add_header`), and filters that watch the response.

A request no plugin touched has no `ResponseEdits` at all, and its response pays one attribute
test. The edits apply alike to the upstream's head and to a local answer.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from mypy_extensions import trait

log = logging.getLogger("fastgw.http")

_COLON = 0x3A  # b":"[0]


@trait
class ResponseFilter:
    """Watches one response on its way to the client (Kong's header_filter and body_filter
    phases, for a plugin that must see what the upstream answered, e.g. a response cache).

    `response_head` may still edit the head (through the request's edits). Exactly one of
    `response_complete` (every byte of the body went out) or `response_aborted` ends it.
    """

    __slots__ = ()

    def response_head(self, status: int, fields: bytes, edits: ResponseEdits) -> None:
        """The head is about to go out: `fields` are its field lines (CRLF-terminated)."""

    def response_body(self, data: bytes) -> None:
        """A piece of the body as the upstream sent it (unframed)."""

    def response_complete(self) -> None:
        """The whole response went out."""

    def response_aborted(self) -> None:
        """The response was cut off (or never came): nothing of it is complete."""


class ResponseEdits:
    """Header fields to set or add, and the filters of one response."""

    __slots__ = ("added", "filters", "replaced")

    def __init__(self) -> None:
        self.replaced: list[bytes] = []  # lower-case names whose upstream fields go
        self.added: list[tuple[bytes, bytes]] = []  # (lower-case name, value), in order
        self.filters: list[ResponseFilter] = []

    def set(self, name: bytes, value: bytes) -> None:
        """One field `name` of `value`, replacing the upstream's and earlier edits' (Kong's
        set_header). `name` is lower case."""
        if name not in self.replaced:
            self.replaced.append(name)
        self.added = [field for field in self.added if field[0] != name]
        self.added.append((name, value))

    def add(self, name: bytes, value: bytes) -> None:
        """One more field `name` (Kong's add_header): the upstream's stay."""
        self.added.append((name, value))

    def remove(self, name: bytes) -> None:
        """No field `name` at all (Kong's clear_header)."""
        if name not in self.replaced:
            self.replaced.append(name)
        self.added = [field for field in self.added if field[0] != name]

    def apply(self, fields: bytes) -> bytes:
        """The upstream's field lines (CRLF-terminated, as forwarded) with the edits made."""
        if self.replaced and fields:
            kept = [
                line for line in fields.split(b"\r\n")[:-1] if _name_of(line) not in self.replaced
            ]
            fields = b"".join(line + b"\r\n" for line in kept)
        if self.added:
            fields += b"".join(b"%b: %b\r\n" % field for field in self.added)
        return fields

    def apply_to(self, headers: Sequence[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """A local answer's (name, value) fields with the edits made."""
        kept = [field for field in headers if field[0].lower() not in self.replaced]
        return kept + self.added


def _name_of(line: bytes) -> bytes:
    colon = line.find(_COLON)
    return (line if colon < 0 else line[:colon]).lower()


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
