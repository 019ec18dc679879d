"""Request routing: which route (and which of its paths) a method, Host and path select.

Knows hosts, paths and methods only; compiled once per config, matched per request without regexes.

Kong's semantics, simplified. A route matches when each of its non-empty categories matches:

- methods: exact, upper case (`GET` never matches `get`).
- hosts: exact, case-insensitive, any `:port` in the Host header ignored; `*.example.com` matches
  `a.example.com` and `a.b.example.com` (not `example.com`); `example.*` matches `example.org`.
- paths: plain prefix match on the raw path bytes. As in Kong, `/foo` matches `/foo`, `/foo/bar`
  and also `/foobar`. No normalisation happens here (percent-encoding, dot segments).

Among the matching routes the winner is, in order: one matched by an exact host, then by a
wildcard host, then one without hosts; within that, the longest matching path prefix (a route
without paths counts as a prefix of length 0); then a route that has methods; then config order.

Strip-path needs to know which of a route's paths matched, so the router stores one payload per
(route, path) pair: `Router(entries)` takes `(route, factory)` pairs and calls `factory(path)` once
per path of the route at compile time (`factory(None)` for a route without paths); `match` returns
the payload of the pair that won. Nothing is allocated per request beyond the lower-cased host.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Final, Generic, TypeVar

if TYPE_CHECKING:  # routing reads a Route's fields only; it needs none of the config machinery
    from fastgw.config import Route

T = TypeVar("T")

_SLASH: Final = 0x2F  # b"/"[0]
_DOT: Final = 0x2E  # b"."[0]
_PERCENT: Final = 0x25  # b"%"[0]
_NO_RANK: Final = sys.maxsize  # worse than any real rank

# one (route, path) pair: (path prefix, allowed methods or None for any, rank, payload);
# ranks order every pair by path length, then methods, then config order (lower is better)
_Candidate = tuple[bytes, tuple[bytes, ...] | None, int, T]
# a pair before ranking: (sort key, its route's hosts, path prefix, methods, payload)
_Compiled = tuple[tuple[int, bool, int, int], tuple[str, ...], bytes, tuple[bytes, ...] | None, T]


class Router(Generic[T]):
    """Routes compiled into per-host tables, each sorted best first."""

    __slots__ = (
        "_any_host",
        "_exact",
        "_has_hosts",
        "_host_prefixes",
        "_host_suffixes",
        "_paths_only",
    )

    def __init__(self, entries: Iterable[tuple[Route, Callable[[str | None], T]]]) -> None:
        keyed: list[_Compiled[T]] = []
        for order, (route, factory) in enumerate(entries):
            methods = tuple(method.encode("ascii") for method in route.methods) or None
            hosts = tuple(dict.fromkeys(host.lower() for host in route.hosts))
            paths: tuple[str | None, ...] = route.paths or (None,)
            for path_index, path in enumerate(paths):
                prefix = path.encode() if path is not None else b""
                sort_key = (-len(prefix), methods is None, order, path_index)
                keyed.append((sort_key, hosts, prefix, methods, factory(path)))
        keyed.sort(key=lambda item: item[0])

        exact: dict[bytes, list[_Candidate[T]]] = {}
        suffixes: dict[bytes, list[_Candidate[T]]] = {}  # "*.example.com" -> b".example.com"
        prefixes: dict[bytes, list[_Candidate[T]]] = {}  # "example.*" -> b"example."
        any_host: list[_Candidate[T]] = []
        for rank, (_, hosts, prefix, methods, payload) in enumerate(keyed):
            candidate = (prefix, methods, rank, payload)
            if not hosts:
                any_host.append(candidate)
            for host in hosts:
                if host.startswith("*."):
                    suffixes.setdefault(host[1:].encode(), []).append(candidate)
                elif host.endswith(".*"):
                    prefixes.setdefault(host[:-1].encode(), []).append(candidate)
                else:
                    exact.setdefault(host.encode(), []).append(candidate)

        self._exact = {host: tuple(table) for host, table in exact.items()}
        self._host_suffixes = tuple((key, tuple(table)) for key, table in suffixes.items())
        self._host_prefixes = tuple((key, tuple(table)) for key, table in prefixes.items())
        self._any_host = tuple(any_host)
        self._has_hosts = bool(exact or suffixes or prefixes)
        # the common small config (no hosts, no methods): a bare list of prefixes, best first
        self._paths_only: tuple[tuple[bytes, T], ...] | None = None
        if not keyed or all(not hosts and methods is None for _, hosts, _, methods, _ in keyed):
            self._paths_only = tuple((prefix, payload) for prefix, _, _, payload in any_host)

    def match(self, method: bytes, host: bytes, path: bytes) -> T | None:
        """The payload of the best (route, path) pair for this request, or None."""
        paths_only = self._paths_only
        if paths_only is not None:
            for prefix, payload in paths_only:
                if path.startswith(prefix):
                    return payload
            return None

        if host and self._has_hosts:
            # strip a ":port" (not the colons of "[::1]") and lower-case; inlined: per request
            colon = host.rfind(b":")
            name = host[:colon] if colon != -1 and host.find(b"]", colon) == -1 else host
            if not name.islower():
                name = name.lower()
            table = self._exact.get(name)
            if table is not None:
                for prefix, methods, _, payload in table:
                    if path.startswith(prefix) and (methods is None or method in methods):
                        return payload
            best_rank = _NO_RANK
            best: T | None = None
            for suffix, table in self._host_suffixes:
                if len(name) > len(suffix) and name.endswith(suffix):
                    for prefix, methods, rank, payload in table:
                        if rank >= best_rank:
                            break
                        if path.startswith(prefix) and (methods is None or method in methods):
                            best_rank, best = rank, payload
                            break
            for host_prefix, table in self._host_prefixes:
                if len(name) > len(host_prefix) and name.startswith(host_prefix):
                    for prefix, methods, rank, payload in table:
                        if rank >= best_rank:
                            break
                        if path.startswith(prefix) and (methods is None or method in methods):
                            best_rank, best = rank, payload
                            break
            if best_rank != _NO_RANK:
                return best

        for prefix, methods, _, payload in self._any_host:
            if path.startswith(prefix) and (methods is None or method in methods):
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
