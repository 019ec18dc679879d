"""proxy-cache's cache key, after Kong's cache_key.lua: `prefix|method|path|query|headers`.

The prefix is who and where: the route (Kong: its id; here a digest of what defines it, so
that a reload that changes or reorders routes never serves one route's answers on another)
and, for an authenticated request, its consumer (Kong's rule; here the credential too when no
consumer is mapped). The query part is every argument sorted by name, or the `vary_query_params`
in config order; the headers part the `vary_headers`. X-Cache-Key is the key's SHA-256 in hex,
as Kong's; the store is looked up with the key itself, so a hit hashes nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, Final

from fastgw.plugins.api import Authenticated
from fastgw.plugins.query_args import Value, decode_args

_SEPARATOR: Final = b"|"


def route_prefix(service: Any, route: Any) -> bytes:
    """The key prefix of one route: stable across workers and restarts (X-Cache-Key is the
    same everywhere), different for any two routes or destinations."""
    if route is None:
        return b"default"
    described = repr(
        (
            route.name or route.path,
            route.paths,
            route.hosts,
            route.methods,
            route.headers,
            route.snis,
            service.protocol,
            service.host,
            service.port,
            service.path,
        )
    )
    return hashlib.sha256(described.encode()).hexdigest()[:32].encode()


def identity(principal: Authenticated | None) -> bytes | None:
    """Whose cache an authenticated request reads: its consumer's, else its credential's."""
    if principal is None:
        return None
    if principal.consumer is not None:
        return principal.consumer.id.encode()
    credential = principal.credential
    if credential is not None:
        return b"%b:%b" % (credential.kind.encode(), credential.id.encode())
    return None


def _argument(name: str, value: Value | list[Value]) -> str:
    """Kong's generate_key_from for one name: `name=v`, `name` (a flag), `name=a,b` (sorted)."""
    if isinstance(value, list):
        return name + "=" + ",".join(sorted("true" if v is True else str(v) for v in value))
    if value is True:
        return name
    return f"{name}={value}"


def query_part(query: bytes, vary: Sequence[str]) -> bytes:
    if not query:
        return b""
    args = decode_args(query)
    names: Sequence[str] = vary if vary else sorted(args)
    parts = [_argument(name, args[name]) for name in names if name in args]
    return ":".join(parts).encode("utf-8", "surrogateescape")


def headers_part(headers: Sequence[tuple[bytes, bytes]], vary: Sequence[bytes]) -> bytes:
    """The `vary_headers` (lower case) as `name=value`, repeated ones sorted and joined."""
    parts = []
    for name in vary:
        values = [value for field, value in headers if field == name]
        if len(values) == 1:
            parts.append(name + b"=" + values[0])
        elif values:
            parts.append(name + b"=" + b",".join(sorted(values)))
    return b":".join(parts)


def cache_key(prefix: bytes, method: bytes, path: bytes, query: bytes, headers: bytes) -> bytes:
    return _SEPARATOR.join((prefix, method, path, query, headers))


def key_hex(key: bytes) -> bytes:
    """X-Cache-Key: 64 lower-case hex characters, as Kong's."""
    return hashlib.sha256(key).hexdigest().encode()
