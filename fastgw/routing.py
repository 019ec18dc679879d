"""Request routing: which route (and which of its paths) a method, Host, path and TLS SNI select.

Knows hosts, paths, methods and SNIs only; compiled once per config, matched per request without
regexes.

Kong's semantics, simplified. A route matches when each of its non-empty categories matches:

- methods: exact, upper case (`GET` never matches `get`).
- hosts: exact, case-insensitive, any `:port` in the Host header ignored; `*.example.com` matches
  `a.example.com` and `a.b.example.com` (not `example.com`); `example.*` matches `example.org`.
- paths: plain prefix match on the path the dispatcher hands over, which is already normalised
  (`normalize_path`: unreserved escapes decoded, dot segments removed, `//` merged) when it
  needed it. As in Kong, `/foo` matches `/foo`, `/foo/bar` and also `/foobar`.
- snis: the server name the client sent in its TLS handshake, matched like hosts (exact or one
  wildcard); as in Kong, a route's `snis` are not considered for a request that came without TLS.

Among the matching routes the winner is, in order: one matched by an exact host, then by a
wildcard host, then one without hosts; within that, the longest matching path prefix (a route
without paths counts as a prefix of length 0); then a route that has methods; then config order.

Hosts are indexed when the router is built: each exact host of the config gets one table of every
pair that can serve it (its own pairs, then those of the wildcards it matches, then the pairs
without hosts, each group best first), so a request naming a configured host costs one dict
lookup and one loop. A Host that no route names is resolved against the wildcards once and its
table remembered (bounded, see HOST_TABLES_CACHED).

Strip-path needs to know which of a route's paths matched, so the router stores one payload per
(route, path) pair: `Router(entries)` takes `(route, factory)` pairs and calls `factory(path)` once
per path of the route at compile time (`factory(None)` for a route without paths); `match` returns
the payload of the pair that won. Nothing is allocated per request beyond the lower-cased host.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Final, Generic, TypeVar

if TYPE_CHECKING:  # routing reads a Route's fields only; it needs none of the config machinery
    from fastgw.config import Route

T = TypeVar("T")

_SLASH: Final = 0x2F  # b"/"[0]
_DOT: Final = 0x2E  # b"."[0]
_PERCENT: Final = 0x25  # b"%"[0]

# Tables remembered for Host values no route names exactly: enough for every wildcard-matched
# name a real config sees, bounded so that made-up Host headers cannot grow it.
HOST_TABLES_CACHED: Final = 1024

# A host or SNI pattern: (exact name or wildcard prefix, wildcard suffix, is a wildcard):
# "a.com" -> (b"a.com", b"", False), "*.example.com" -> (b"", b".example.com", True),
# "example.*" -> (b"example.", b"", True).
_Pattern = tuple[bytes, bytes, bool]
# one (route, path) pair: (path prefix, allowed methods or None for any, SNI patterns or None for
# any, payload), in tables sorted best first
_Candidate = tuple[bytes, tuple[bytes, ...] | None, tuple[_Pattern, ...] | None, T]
# a pair before ranking: (sort key, its route's host patterns, the candidate)
_Compiled = tuple[tuple[int, bool, int, int], tuple[_Pattern, ...], _Candidate[T]]


def _pattern(host: str) -> _Pattern:
    name = host.lower().encode("idna") if not host.isascii() else host.lower().encode()
    if name.startswith(b"*."):
        return b"", name[1:], True
    if name.endswith(b".*"):
        return name[:-1], b"", True
    return name, b"", False


def _wildcard_matches(pattern: _Pattern, name: bytes) -> bool:
    prefix, suffix, _ = pattern
    return (
        len(name) > len(prefix) + len(suffix) and name.startswith(prefix) and name.endswith(suffix)
    )


def _is_wildcard(pattern: _Pattern) -> bool:
    return pattern[2]


def _matches_any(patterns: tuple[_Pattern, ...], name: bytes) -> bool:
    for pattern in patterns:
        if _is_wildcard(pattern):
            if _wildcard_matches(pattern, name):
                return True
        elif pattern[0] == name:
            return True
    return False


class Router(Generic[T]):
    """Routes compiled into per-host tables, each sorted best first."""

    __slots__ = (
        "_any_host",
        "_has_hosts",
        "_host_tables",
        "_host_tables_limit",
        "_paths_only",
        "_wildcard_ranked",
        "has_snis",
    )

    def __init__(self, entries: Iterable[tuple[Route, Callable[[str | None], T]]]) -> None:
        keyed: list[_Compiled[T]] = []
        for order, (route, factory) in enumerate(entries):
            methods = tuple(method.encode("ascii") for method in route.methods) or None
            hosts = tuple(dict.fromkeys(_pattern(host) for host in route.hosts))
            snis = tuple(dict.fromkeys(_pattern(sni) for sni in route.snis)) or None
            paths: tuple[str | None, ...] = route.paths or (None,)
            for path_index, path in enumerate(paths):
                prefix = path.encode() if path is not None else b""
                sort_key = (-len(prefix), methods is None, order, path_index)
                keyed.append((sort_key, hosts, (prefix, methods, snis, factory(path))))
        keyed.sort(key=lambda item: item[0])

        exact: dict[bytes, list[_Candidate[T]]] = {}
        wildcard_ranked: list[tuple[_Candidate[T], tuple[_Pattern, ...]]] = []
        any_host: list[_Candidate[T]] = []
        for _, hosts, candidate in keyed:
            if not hosts:
                any_host.append(candidate)
            for pattern in hosts:
                if not _is_wildcard(pattern):
                    exact.setdefault(pattern[0], []).append(candidate)
            wildcards = tuple(pattern for pattern in hosts if _is_wildcard(pattern))
            if wildcards:
                wildcard_ranked.append((candidate, wildcards))
        self._any_host = tuple(any_host)
        self._wildcard_ranked = tuple(wildcard_ranked)
        self._has_hosts = bool(exact or wildcard_ranked)
        self.has_snis = any(candidate[2] is not None for _, _, candidate in keyed)
        self._host_tables: dict[bytes, tuple[_Candidate[T], ...]] = {
            name: tuple(table) + self._wildcard_table(name) for name, table in exact.items()
        }
        self._host_tables_limit = len(exact) + HOST_TABLES_CACHED
        # the common small config (no hosts, methods or snis): a bare list of prefixes, best first
        self._paths_only: tuple[tuple[bytes, T], ...] | None = None
        if not self._has_hosts and all(c[1] is None and c[2] is None for c in any_host):
            self._paths_only = tuple((c[0], c[3]) for c in any_host)

    def _wildcard_table(self, name: bytes) -> tuple[_Candidate[T], ...]:
        """The pairs of every wildcard `name` matches, best first, then the pairs without hosts."""
        matched = [
            candidate
            for candidate, patterns in self._wildcard_ranked
            if any(_wildcard_matches(pattern, name) for pattern in patterns)
        ]
        return tuple(matched) + self._any_host if matched else self._any_host

    def match(self, method: bytes, host: bytes, path: bytes, sni: bytes | None = None) -> T | None:
        """The payload of the best (route, path) pair for this request, or None.

        `sni`: the TLS server name (lower case), b"" over TLS without one, None without TLS.
        """
        paths_only = self._paths_only
        if paths_only is not None:
            for prefix, payload in paths_only:
                if path.startswith(prefix):
                    return payload
            return None

        table = self._any_host
        if host and self._has_hosts:
            # strip a ":port" (not the colons of "[::1]") and lower-case; inlined: per request
            colon = host.rfind(b":")
            name = host[:colon] if colon != -1 and host.find(b"]", colon) == -1 else host
            if not name.islower():
                name = name.lower()
            found = self._host_tables.get(name)
            if found is None:
                found = self._wildcard_table(name)
                if len(self._host_tables) < self._host_tables_limit:
                    self._host_tables[name] = found
            table = found
        for prefix, methods, snis, payload in table:
            if (
                path.startswith(prefix)
                and (methods is None or method in methods)
                and (snis is None or sni is None or _matches_any(snis, sni))
            ):
                return payload
        return None


def upstream_path(prefix_len: int, service_path: str | bytes, path: bytes) -> bytes:
    """The path sent upstream: Kong's `path_handling: v0` join of service path and request path.

    `prefix_len` is how much of `path` to strip: the matched route path's length when strip_path
    is on, else 0 (for a route without paths the two agree, as in Kong). Ported from Kong's
    `get_upstream_uri_v0`, trailing-slash rules included: one "/" between the service path and
    the rest, and with nothing left after the prefix, the request's trailing slash is mirrored
    ("/s" + "/api/" -> "/s/"; "/s/" + "/api" -> "/s"). Pass `service_path` as bytes on the hot
    path (encode it once at config load); "" means "/". The query string is the caller's.
    """
    base = (service_path.encode() if isinstance(service_path, str) else service_path) or b"/"
    if not prefix_len:
        if base[-1] == _SLASH:
            return path if base == b"/" else base + path[1:]
        return base if path == b"/" else base + path

    rest = _sanitize_rest(path[prefix_len:])
    if base[-1] == _SLASH:
        if not rest:
            if base == b"/":
                return b"/"
            return base if path.endswith(b"/") else base[:-1]
        return base[:-1] + rest if rest[0] == _SLASH else base + rest
    if not rest:
        return base + b"/" if len(path) > 1 and path.endswith(b"/") else base
    return base + rest if rest[0] == _SLASH else b"".join((base, b"/", rest))


def _sanitize_rest(rest: bytes) -> bytes:
    """Kong's `sanitize_uri_postfix`: "/api../x" under route "/api" must not climb out of the
    service path, so a leading "./" or "../" (or a bare "." / "..") left by the strip goes."""
    if not rest or rest[0] != _DOT:
        return rest
    if rest in (b".", b".."):
        return b""
    if rest.startswith(b"./"):
        return rest[2:]
    if rest.startswith(b"../"):
        return rest[3:]
    return rest


# Characters RFC 3986 §2.3 calls unreserved: their percent-encoded form means the same thing,
# so it is decoded before matching (otherwise "/%61dmin" would slip past a route for "/admin").
_UNRESERVED: Final = frozenset(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
)
_HEX: Final = frozenset(b"0123456789abcdefABCDEF")


def needs_normalizing(path: bytes) -> bool:
    """Cheap test for the hot path: only paths with dot segments or escapes need the slow path."""
    # An int needle is a memchr; `b"%" in path` tries the needle as an int first and builds and
    # clears a TypeError, and find() parses its arguments: both cost a hundred times more.
    if _PERCENT in path:
        return True
    if _DOT in path and path.find(b"/.") >= 0:
        return True
    return path.find(b"//") >= 0


def normalize_path(path: bytes) -> bytes | None:
    """The path Kong routes on: unreserved escapes decoded, dot segments removed, `//` merged.

    Returns None when the path is not acceptable (a malformed escape, or `..` above the root),
    which the caller answers with 400. Reserved escapes such as `%2F` stay encoded.
    """
    if path.find(b"%") >= 0:
        decoded = bytearray()
        index = 0
        length = len(path)
        while index < length:
            byte = path[index]
            if byte == 0x25:  # "%"
                if index + 2 >= length:
                    return None
                high, low = path[index + 1], path[index + 2]
                if high not in _HEX or low not in _HEX:
                    return None
                value = int(path[index + 1 : index + 3], 16)
                if value in _UNRESERVED:
                    decoded.append(value)
                else:
                    decoded += b"%" + path[index + 1 : index + 3].upper()
                index += 3
            else:
                decoded.append(byte)
                index += 1
        path = bytes(decoded)
    trailing = path.endswith((b"/", b"/.", b"/.."))
    segments: list[bytes] = []
    for segment in path.split(b"/")[1:]:
        if segment == b"..":
            if not segments:
                return None
            segments.pop()
        elif segment and segment != b".":
            segments.append(segment)
    result = b"/" + b"/".join(segments)
    if trailing and segments:
        result += b"/"
    return result
