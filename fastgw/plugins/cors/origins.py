"""Which request origins a `cors` instance allows, as Kong tells them apart: "*", a plain origin
(compared normalized), or a regex (anchored, matched against the host or the whole origin).

Compiled once per instance; a request costs a normalization of its Origin and the comparisons.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

ANY: Final = "*"
# Kong's test of a plain origin: nothing but these characters (else the entry is a regex).
_PLAIN: Final = re.compile(r"^[A-Za-z0-9.:/-]+$")
_DEFAULT_PORTS: Final = {"http": "80", "https": "443"}


class OriginError(ValueError):
    """An origin that is neither "*" nor a regex that compiles."""


@dataclass(frozen=True, slots=True)
class Origin:
    """A normalized origin: `domain` is scheme://host[:port] without a default port (the
    whole text when it has no host), `host` its host."""

    domain: str
    host: str


def normalize_origin(text: str) -> Origin:
    """Kong's normalize_origin (socket.url's parse): nothing is lower-cased."""
    scheme, separator, rest = text.partition("://")
    if not separator:
        if not text.startswith("//"):
            return Origin(text, text)
        scheme, rest = "", text[2:]
    authority = _authority(rest)
    host, port = authority, ""
    if authority.startswith("["):
        closing = authority.find("]")
        if closing > 0:
            host, tail = authority[: closing + 1], authority[closing + 1 :]
            port = tail[1:] if tail.startswith(":") else ""
    elif ":" in authority:
        host, _, port = authority.rpartition(":")
    if not host:
        return Origin(text, text)
    if port and _DEFAULT_PORTS.get(scheme) == port:
        port = ""
    domain = (f"{scheme}://" if scheme else "") + host + (f":{port}" if port else "")
    return Origin(domain, host)


def _authority(rest: str) -> str:
    """What follows "scheme://" up to the path, query or fragment, without user info."""
    end = len(rest)
    for mark in "/?#":
        found = rest.find(mark, 0, end)
        if found >= 0:
            end = found
    return rest[:end].rpartition("@")[2]


class Matcher:
    """One configured origin, compiled."""

    __slots__ = ("by_host", "domain", "regex")

    def __init__(self, entry: str) -> None:
        self.regex: re.Pattern[str] | None = None
        self.domain = ""
        # Kong: an entry without ":" names hosts; a regex one is matched against the host alone
        self.by_host = ":" not in entry
        if _PLAIN.match(entry):
            self.domain = normalize_origin(entry).domain
            return
        # Kong 0.x did not anchor regexes: Kong anchors both ends, once, whatever the user wrote
        body = entry[1:] if entry.startswith("^") else entry
        if not body.endswith("$"):
            body += "$"
        try:
            self.regex = re.compile(re.sub(r"\(\?<(?![=!])", "(?P<", body))
        except re.error as error:
            raise OriginError(str(error)) from None

    def matches(self, origin: Origin) -> bool:
        regex = self.regex
        if regex is None:
            return origin.domain == self.domain
        return regex.match(origin.host if self.by_host else origin.domain) is not None


def compile_origin(entry: str) -> Matcher | None:
    """The matcher of one configured origin (None for "*"). Raises OriginError."""
    if entry == ANY:
        return None
    return Matcher(entry)


def is_plain(entry: str) -> bool:
    """Kong's single-origin shortcut: an origin that is not a regex is sent as it is."""
    return _PLAIN.match(entry) is not None
