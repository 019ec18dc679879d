"""What the layers above change in a response before its head goes out: header fields set (Kong's
`kong.response.set_header`) or added (`add_header`), and filters that watch the response.

A request no plugin touched has no `ResponseEdits` at all, and its response pays one attribute
test. The edits apply alike to the upstream's head and to a local answer. `ResponseFilter` stays
out of the compiled build (plugins and tests outside it subclass it); the edits themselves are
fastgw/http/edits.py, compiled.
"""

from __future__ import annotations

from mypy_extensions import trait

from fastgw.http.edits import ResponseEdits

__all__ = ["ResponseEdits", "ResponseFilter"]


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
