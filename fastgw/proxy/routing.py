"""Request routing: which route (and which of its paths) a method, Host, path, headers and TLS SNI
select.

Compiled once per config; plain prefixes are matched without regexes, and a regex runs only for
the routes that declare one (compiled at config load).

Kong 3's rules (its default `traditional_compatible` router, "Route priority" in Kong's docs).
A route matches when each of its non-empty categories matches:

- methods: exact, upper case (`GET` never matches `get`).
- hosts: exact, case-insensitive, any `:port` in the Host header ignored; `*.example.com` matches
  `a.example.com` and `a.b.example.com` (not `example.com`); `example.*` matches `example.org`.
- headers: every configured name is present with one of its values, compared case-insensitively;
  a value written `~*regex` is a case-insensitive regex searched in the header's value.
- paths: a plain prefix of the path the dispatcher hands over, already normalised
  (`normalize_path`: unreserved escapes decoded, dot segments removed, `//` merged) when it
  needed it; as in Kong `/foo` matches `/foobar` too. Or, written `~regex`, a regex anchored at
  the start of the path.
- snis: the server name the client sent in its TLS handshake, matched like hosts (exact or one
  wildcard); as in Kong, a route's `snis` are not considered for a request that came without TLS.

Among the matching (route, path) pairs the winner is the one with the highest Kong priority, as
Kong 3's default router computes it (`get_priority` in Kong's `kong/router/transform.lua`: a 64-bit
number whose fields, most significant first, are compared here as a tuple):
1. the match weight: how many of methods, hosts, headers, paths and snis the route sets;
2. `PLAIN_HOST_ONLY`: the route has hosts and none of them is a wildcard. A route without hosts
   does not have it, so a hosts-only route beats a catch-all `paths: ["/"]` route of the same
   weight whatever the path lengths;
3. the number of header names;
4. a regex path before a plain one;
5. a regex path's `regex_priority` (higher first), a plain path's length in bytes (longer first);
6. config order (Kong leaves this tie to route ids; ours is the file's order).

Hosts are indexed when the router is built: each exact host of the config gets one table of every
pair that can serve it (its own pairs, those of the wildcards it matches and those without hosts),
sorted by the priority above, so a request naming a configured host costs one dict lookup and one
loop. A Host that no route names is resolved against the wildcards once and its table remembered
(bounded, see HOST_TABLES_CACHED).

Strip-path needs to know which of a route's paths matched, so the router stores one payload per
(route, path) pair: `Router(entries)` takes `(route, factory)` pairs and calls `factory(path)` once
per path of the route at compile time (`factory(None)` for a route without paths); `match` returns
the payload of the pair that won. Nothing is allocated per request beyond the lower-cased host.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Final, Generic, TypeVar

from fastgw.config.patterns import (
    HEADER_REGEX_MARK,
    compile_header_regex,
    compile_path_regex,
    is_regex_path,
)

if TYPE_CHECKING:  # routing reads a Route's fields only; it needs none of the config machinery
    from fastgw.config.model import Route

T = TypeVar("T")

_SLASH: Final = 0x2F  # b"/"[0]
_DOT: Final = 0x2E  # b"."[0]
_PERCENT: Final = 0x25  # b"%"[0]


# Tables remembered for Host values no route names exactly: enough for every wildcard-matched
# name a real config sees, bounded so that made-up Host headers cannot grow it.
HOST_TABLES_CACHED: Final = 1024

# a header condition: (lower-case name, lower-cased plain values, regexes)
_HeaderRule = tuple[bytes, frozenset[bytes], tuple[re.Pattern[bytes], ...]]
# A host or SNI pattern: (exact name or wildcard prefix, wildcard suffix, is a wildcard):
# "a.com" -> (b"a.com", b"", False), "*.example.com" -> (b"", b".example.com", True),
# "example.*" -> (b"example.", b"", True).
_Pattern = tuple[bytes, bytes, bool]
# one (route, path) pair: (plain prefix, regex or None, allowed methods or None for any,
# header conditions or None, SNI patterns or None for any, rank, payload); ranks order every
# pair by the priority in the docstring (lower is better)
_Candidate = tuple[
    bytes,
    re.Pattern[bytes] | None,
    tuple[bytes, ...] | None,
    tuple[_HeaderRule, ...] | None,
    tuple[_Pattern, ...] | None,
    int,
    T,
]
# a pair before ranking: (sort key, its route's host patterns, the candidate without its rank)
_Compiled = tuple[
    tuple[int, ...],
    tuple[_Pattern, ...],
    tuple[
        bytes,
        re.Pattern[bytes] | None,
        tuple[bytes, ...] | None,
        tuple[_HeaderRule, ...] | None,
        tuple[_Pattern, ...] | None,
        T,
    ],
]


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


def _matches_any(patterns: tuple[_Pattern, ...], name: bytes) -> bool:
    for pattern in patterns:
        if pattern[2]:
            if _wildcard_matches(pattern, name):
                return True
        elif pattern[0] == name:
            return True
    return False


def _header_rules(route: Route) -> tuple[_HeaderRule, ...] | None:
    rules: list[_HeaderRule] = []
    for name, values in route.headers:
        plain = frozenset(
            value.lower().encode() for value in values if not value.startswith(HEADER_REGEX_MARK)
        )
        patterns = tuple(
            compile_header_regex(value) for value in values if value.startswith(HEADER_REGEX_MARK)
        )
        rules.append((name.lower().encode(), plain, patterns))
    return tuple(rules) or None


# Kong caps the header count it ranks by at 255 (MAX_HEADER_COUNT in transform.lua: 8 bits).
MAX_RANKED_HEADERS: Final = 255


def _sort_key(route: Route, path: str | None, order: int, path_index: int) -> tuple[int, ...]:
    """Kong's priority of one (route, path) pair as a sort key, best first (see the docstring)."""
    weight = sum(
        bool(field)
        for field in (route.methods, route.hosts, route.headers, route.paths, route.snis)
    )
    plain_host_only = bool(route.hosts) and not any("*" in host for host in route.hosts)
    regex = path is not None and is_regex_path(path)
    plain_length = len(path.encode()) if path is not None and not regex else 0
    within = -route.regex_priority if regex else -plain_length
    headers = min(len(route.headers), MAX_RANKED_HEADERS)
    return (-weight, not plain_host_only, -headers, not regex, within, order, path_index)


def _matches(
    candidate: _Candidate[T],
    method: bytes,
    path: bytes,
    headers: Sequence[tuple[bytes, bytes]],
    sni: bytes | None,
) -> bool:
    prefix, regex, methods, rules, snis, _, _ = candidate
    if regex is None:
        if not path.startswith(prefix):
            return False
    elif regex.match(path) is None:
        return False
    if methods is not None and method not in methods:
        return False
    if snis is not None and sni is not None and not _matches_any(snis, sni):
        return False
    return rules is None or _headers_match(rules, headers)


def _headers_match(rules: tuple[_HeaderRule, ...], headers: Sequence[tuple[bytes, bytes]]) -> bool:
    for name, plain, patterns in rules:
        for header_name, value in headers:
            if header_name == name and (
                value.lower() in plain or any(pattern.search(value) for pattern in patterns)
            ):
                break
        else:
            return False
    return True


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
            rules = _header_rules(route)
            paths: tuple[str | None, ...] = route.paths or (None,)
            for path_index, path in enumerate(paths):
                regex = None
                prefix = b""
                if path is not None and is_regex_path(path):
                    regex = compile_path_regex(path)
                elif path is not None:
                    prefix = path.encode()
                sort_key = _sort_key(route, path, order, path_index)
                fields = (prefix, regex, methods, rules, snis, factory(path))
                keyed.append((sort_key, hosts, fields))
        keyed.sort(key=lambda item: item[0])

        exact: dict[bytes, list[_Candidate[T]]] = {}
        wildcard_ranked: list[tuple[_Candidate[T], tuple[_Pattern, ...]]] = []
        any_host: list[_Candidate[T]] = []
        for rank, (_, hosts, (prefix, regex, methods, rules, snis, payload)) in enumerate(keyed):
            candidate = (prefix, regex, methods, rules, snis, rank, payload)
            if not hosts:
                any_host.append(candidate)
            for pattern in hosts:
                if not pattern[2]:
                    exact.setdefault(pattern[0], []).append(candidate)
            wildcards = tuple(pattern for pattern in hosts if pattern[2])
            if wildcards:
                wildcard_ranked.append((candidate, wildcards))

        self._any_host = tuple(any_host)
        self._wildcard_ranked = tuple(wildcard_ranked)
        self._has_hosts = bool(exact or wildcard_ranked)
        self.has_snis = any(fields[4] is not None for _, _, fields in keyed)
        self._host_tables: dict[bytes, tuple[_Candidate[T], ...]] = {
            name: self._table(name, own) for name, own in exact.items()
        }
        self._host_tables_limit = len(exact) + HOST_TABLES_CACHED
        # the common small config (plain prefixes only: no hosts, methods, headers, regexes or
        # snis): a bare list of prefixes, best first
        self._paths_only: tuple[tuple[bytes, T], ...] | None = None
        if not self._has_hosts and all(
            c[1] is None and c[2] is None and c[3] is None and c[4] is None for c in any_host
        ):
            self._paths_only = tuple((c[0], c[6]) for c in any_host)

    def _table(self, name: bytes, own: list[_Candidate[T]]) -> tuple[_Candidate[T], ...]:
        """Every pair that can serve Host `name`, best first: `own` (its exact pairs), the pairs
        of the wildcards it matches, and the pairs without hosts."""
        matched = [
            candidate
            for candidate, patterns in self._wildcard_ranked
            if any(_wildcard_matches(pattern, name) for pattern in patterns)
        ]
        if not own and not matched:
            return self._any_host
        table = {candidate[5]: candidate for candidate in (*own, *matched, *self._any_host)}
        return tuple(table[rank] for rank in sorted(table))

    def match(
        self,
        method: bytes,
        host: bytes,
        path: bytes,
        headers: Sequence[tuple[bytes, bytes]] = (),
        sni: bytes | None = None,
    ) -> T | None:
        """The payload of the best (route, path) pair for this request, or None.

        `headers`: the request's (lower-case name, value) pairs; only routes with `headers` read
        them. `sni`: the TLS server name (lower case), b"" over TLS without one, None without TLS.
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
                found = self._table(name, [])
                if len(self._host_tables) < self._host_tables_limit:
                    self._host_tables[name] = found
            table = found
        for candidate in table:
            if _matches(candidate, method, path, headers, sni):
                return candidate[6]
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


def upstream_path_v1(prefix_len: int, service_path: bytes, path: bytes) -> bytes:
    """The path sent upstream under Kong's `path_handling: v1` (deprecated in Kong 3, kept for
    the configs that use it): the service path is a plain prefix of what follows.

    With the matched prefix stripped (`prefix_len` > 0) the rest is appended as is ("/s" +
    "/tv1/" + "/tv1/req" -> "/sreq"), one of two touching slashes dropped; without a strip the
    request path goes after the service path minus its leading slash ("/s" + "/fv1" -> "/sfv1").
    """
    base = service_path or b"/"
    if not prefix_len:
        return base + path[1:]
    rest = _sanitize_rest(path[prefix_len:])
    if base[-1] == _SLASH and rest[:1] == b"/":
        return base[:-1] + rest
    return base + rest


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
