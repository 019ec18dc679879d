"""What proxy-cache reads in requests and responses, as Kong reads it: Cache-Control directives
(kong.tools.http's parse_directive_header), a response's freshness lifetime
(calculate_resource_ttl: s-maxage, else max-age, else Expires) and media types
(kong.tools.mime_type: the type, the subtype and the parameters must all be equal).

Only misses and stores read a response; a request's Cache-Control is read only with
`cache_control: true`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Final

WILDCARD: Final = "*"

Directives = dict[str, int | str | bool]


def parse_directives(values: list[bytes]) -> Directives:
    """`max-age=60, no-cache` -> {"max-age": 60, "no-cache": True}: names lower-cased, numbers
    as integers, other values as text (unquoted); every field line of the header counts."""
    directives: Directives = {}
    for value in values:
        for item in value.split(b","):
            name, equals, argument = item.strip().partition(b"=")
            if not name:
                continue
            key = name.strip().lower().decode("latin-1")
            if not equals:
                directives[key] = True
                continue
            text = argument.strip().strip(b'"').decode("latin-1")
            directives[key] = int(text) if text.isdigit() else text
    return directives


def seconds(directives: Directives, name: str) -> int | None:
    """A directive's number of seconds, None when absent or not a number."""
    value = directives.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def resource_ttl(directives: Directives, expires: bytes | None, now: float) -> float:
    """How long a response stays fresh (Kong's calculate_resource_ttl; 0: not at all)."""
    max_age = seconds(directives, "s-maxage")
    if max_age is None:
        max_age = seconds(directives, "max-age")
    if max_age is not None:
        return float(max(max_age, 0))
    if expires is None:
        return 0.0
    try:
        expiry = parsedate_to_datetime(expires.decode("latin-1")).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return 0.0  # RFC 9111 §5.3: an invalid date is in the past
    return max(expiry - now, 0.0)


def wall_clock() -> float:
    return time.time()


@dataclass(frozen=True, slots=True)
class MediaType:
    type: str
    subtype: str
    params: tuple[tuple[str, str], ...]  # sorted; names lower case, values as written


def parse_media_type(text: str) -> MediaType | None:
    """`application/json; charset=utf-8` (Kong's parse_mime_type); None when it is none."""
    head, *rest = text.split(";")
    head = head.strip()
    if head == WILDCARD:
        kind, subtype = WILDCARD, WILDCARD
    else:
        kind, slash, subtype = head.partition("/")
        if not slash or not _token(kind) or not _token(subtype):
            return None
    params = []
    for param in rest:
        name, equals, value = param.strip().partition("=")
        if not equals or not _token(name.strip()):
            return None
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        params.append((name.strip().lower(), value))
    return MediaType(kind.lower(), subtype.lower(), tuple(sorted(params)))


def _token(text: str) -> bool:
    return bool(text) and not any(c in '()<>@,;:\\"/[]?={} \t' or ord(c) < 32 for c in text)


def media_type_matches(configured: MediaType, actual: MediaType) -> bool:
    """Kong's content_type check: the types match (or the configured one is "*"), and the
    parameters are exactly the configured ones (so `application/json` does not match
    `application/json; charset=utf-8`)."""
    if configured.type != WILDCARD and configured.type != actual.type:
        return False
    if configured.subtype != WILDCARD and configured.subtype != actual.subtype:
        return False
    return configured.params == actual.params
