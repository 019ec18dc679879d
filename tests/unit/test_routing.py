"""Routing: hosts, paths and methods to the payload of the winning (route, path) pair.

Payloads are "route-name:path" strings, so each assertion names the route and the path that won.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest

from fastgw.config import Route
from fastgw.proxy.routing import Router, needs_normalizing, normalize_path, upstream_path


def route(
    name: str,
    paths: Sequence[str] = (),
    hosts: Sequence[str] = (),
    methods: Sequence[str] = (),
) -> Route:
    return Route(
        name=name,
        paths=tuple(paths),
        hosts=tuple(hosts),
        methods=tuple(methods),
        strip_path=True,
        preserve_host=False,
        plugins=(),
        path=f"routes[{name}]",
    )


def labelled(name: str) -> Callable[[str | None], str]:
    return lambda path: f"{name}:{path}"


def router(*routes: Route) -> Router[str]:
    return Router((r, labelled(r.name or "")) for r in routes)


# -- paths -----------------------------------------------------------------------------------------


def test_longest_prefix_wins_whatever_the_config_order() -> None:
    table = router(route("root", ["/"]), route("api", ["/api"]), route("v2", ["/api/v2"]))
    assert table.match(b"GET", b"", b"/api/v2/users") == "v2:/api/v2"
    assert table.match(b"GET", b"", b"/api/v1") == "api:/api"
    assert table.match(b"GET", b"", b"/other") == "root:/"


def test_prefix_match_follows_kong_including_foobar() -> None:
    table = router(route("foo", ["/foo"]))
    assert table.match(b"GET", b"", b"/foo") == "foo:/foo"
    assert table.match(b"GET", b"", b"/foo/bar") == "foo:/foo"
    assert table.match(b"GET", b"", b"/foobar") == "foo:/foo"
    assert table.match(b"GET", b"", b"/fo") is None
    assert table.match(b"GET", b"", b"/FOO") is None


def test_the_payload_names_which_path_of_the_route_matched() -> None:
    calls: list[str | None] = []

    def factory(path: str | None) -> str:
        calls.append(path)
        return f"multi:{path}"

    table: Router[str] = Router([(route("multi", ["/a", "/b/c"]), factory)])
    assert calls == ["/a", "/b/c"]  # once per path, at compile time
    assert table.match(b"GET", b"", b"/b/c/d") == "multi:/b/c"
    assert table.match(b"GET", b"", b"/a") == "multi:/a"
    assert calls == ["/a", "/b/c"]


def test_route_without_paths_gets_none_and_matches_any_path() -> None:
    table = router(route("by-host", hosts=["a.example"]), route("by-method", methods=["DELETE"]))
    assert table.match(b"GET", b"a.example", b"/anything") == "by-host:None"
    assert table.match(b"DELETE", b"b.example", b"/x") == "by-method:None"


def test_no_match_is_none() -> None:
    assert router().match(b"GET", b"", b"/") is None
    table = router(route("api", ["/api"], hosts=["a.example"], methods=["GET"]))
    assert table.match(b"GET", b"b.example", b"/api") is None
    assert table.match(b"POST", b"a.example", b"/api") is None
    assert table.match(b"GET", b"a.example", b"/ap") is None
    assert table.match(b"GET", b"", b"/api") is None


def test_equal_prefixes_fall_back_to_config_order() -> None:
    table = router(route("first", ["/x"]), route("second", ["/x"]))
    assert table.match(b"GET", b"", b"/x") == "first:/x"


# -- methods ---------------------------------------------------------------------------------------


def test_methods_are_exact_and_upper_case() -> None:
    table = router(route("read", ["/r"], methods=["GET", "HEAD"]))
    assert table.match(b"GET", b"", b"/r") == "read:/r"
    assert table.match(b"HEAD", b"", b"/r") == "read:/r"
    assert table.match(b"get", b"", b"/r") is None
    assert table.match(b"POST", b"", b"/r") is None


def test_route_with_methods_beats_one_without_at_equal_prefix() -> None:
    table = router(route("any", ["/x"]), route("posts", ["/x"], methods=["POST"]))
    assert table.match(b"POST", b"", b"/x") == "posts:/x"
    assert table.match(b"GET", b"", b"/x") == "any:/x"


def test_more_match_categories_beat_a_longer_prefix() -> None:
    # Kong's match weight: methods + paths (2) outranks paths alone (1), whatever the lengths
    table = router(route("posts", ["/x"], methods=["POST"]), route("deep", ["/x/y"]))
    assert table.match(b"POST", b"", b"/x/y") == "posts:/x"
    assert table.match(b"GET", b"", b"/x/y") == "deep:/x/y"


# -- hosts -----------------------------------------------------------------------------------------


def test_host_match_ignores_port_and_case() -> None:
    table = router(route("a", ["/"], hosts=["api.example.com"]))
    assert table.match(b"GET", b"api.example.com", b"/") == "a:/"
    assert table.match(b"GET", b"API.Example.COM:8443", b"/") == "a:/"
    assert table.match(b"GET", b"api.example.com.evil", b"/") is None


def test_route_hosts_are_compared_case_insensitively() -> None:
    table = router(route("a", ["/"], hosts=["API.example.com"]))
    assert table.match(b"GET", b"api.EXAMPLE.com", b"/") == "a:/"


def test_ipv6_host_with_and_without_port() -> None:
    table = router(route("v6", hosts=["[::1]"]))
    assert table.match(b"GET", b"[::1]:8000", b"/") == "v6:None"
    assert table.match(b"GET", b"[::1]", b"/") == "v6:None"


def test_exact_host_beats_wildcard_beats_no_host() -> None:
    table = router(
        route("plain", ["/long/prefix"]),
        route("wild", ["/"], hosts=["*.example.com"]),
        route("exact", ["/"], hosts=["api.example.com"]),
    )
    assert table.match(b"GET", b"api.example.com", b"/long/prefix") == "exact:/"
    assert table.match(b"GET", b"www.example.com", b"/long/prefix") == "wild:/"
    assert table.match(b"GET", b"other.org", b"/long/prefix") == "plain:/long/prefix"


def test_host_match_falls_through_when_its_paths_do_not_match() -> None:
    table = router(
        route("exact", ["/admin"], hosts=["api.example.com"]),
        route("wild", ["/docs"], hosts=["*.example.com"]),
        route("plain", ["/"]),
    )
    assert table.match(b"GET", b"api.example.com", b"/admin") == "exact:/admin"
    assert table.match(b"GET", b"api.example.com", b"/docs") == "wild:/docs"
    assert table.match(b"GET", b"api.example.com", b"/x") == "plain:/"


def test_suffix_wildcard_needs_at_least_one_more_label() -> None:
    table = router(route("wild", hosts=["*.example.com"]))
    assert table.match(b"GET", b"a.example.com", b"/") == "wild:None"
    assert table.match(b"GET", b"a.b.example.com:80", b"/") == "wild:None"
    assert table.match(b"GET", b"example.com", b"/") is None
    assert table.match(b"GET", b".example.com", b"/") is None
    assert table.match(b"GET", b"badexample.com", b"/") is None


def test_prefix_wildcard() -> None:
    table = router(route("wild", hosts=["example.*"]))
    assert table.match(b"GET", b"example.org", b"/") == "wild:None"
    assert table.match(b"GET", b"EXAMPLE.co.uk:443", b"/") == "wild:None"
    assert table.match(b"GET", b"example.", b"/") is None
    assert table.match(b"GET", b"www.example.org", b"/") is None


def test_among_wildcards_the_longest_path_then_config_order_wins() -> None:
    table = router(
        route("suffix", ["/"], hosts=["*.example.org"]),
        route("prefix", ["/api"], hosts=["api.*"]),
        route("later", ["/"], hosts=["api.*"]),
    )
    assert table.match(b"GET", b"api.example.org", b"/api/x") == "prefix:/api"
    assert table.match(b"GET", b"api.example.org", b"/x") == "suffix:/"
    assert table.match(b"GET", b"api.other.net", b"/x") == "later:/"


def test_a_more_specific_wildcard_does_not_beat_a_longer_path() -> None:
    table = router(
        route("broad", ["/api"], hosts=["*.example.org"]),
        route("narrow", ["/"], hosts=["*.b.example.org"]),
    )
    assert table.match(b"GET", b"x.b.example.org", b"/api") == "broad:/api"
    assert table.match(b"GET", b"x.b.example.org", b"/web") == "narrow:/"


def test_request_without_host_only_reaches_routes_without_hosts() -> None:
    table = router(route("hosted", ["/"], hosts=["a.example"]), route("open", ["/open"]))
    assert table.match(b"GET", b"", b"/open") == "open:/open"
    assert table.match(b"GET", b"", b"/") is None


def test_a_route_listing_a_host_twice_still_matches_once() -> None:
    table = router(route("dup", ["/"], hosts=["a.example", "A.EXAMPLE", "*.x", "*.x"]))
    assert table.match(b"GET", b"a.example", b"/") == "dup:/"
    assert table.match(b"GET", b"b.x", b"/") == "dup:/"


def test_router_accepts_routes_from_a_parsed_config() -> None:
    from fastgw.config import parse_config

    config = parse_config(
        '_format_version: "3.0"\n'
        "services:\n"
        "- {name: s, url: 'http://u/base', routes: [{name: r, paths: [/api], hosts: [A.com]}]}\n",
        env={},
    )
    table = Router((r, lambda path, s=s: (s.path, len(path or ""))) for s, r in config.routes())
    assert table.match(b"GET", b"a.com", b"/api/x") == ("/base", 4)


# -- upstream_path ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prefix_len", "service_path", "path", "expected"),
    [
        # Kong's own path_handling table (v0 rows): service /s, routes /tv0 /tv0/ /fv0 /fv0/
        (4, "/s", b"/tv0req", b"/s/req"),
        (4, "/s", b"/tv0", b"/s"),
        (5, "/s", b"/tv0/req", b"/s/req"),
        (5, "/s", b"/tv0/", b"/s/"),
        (0, "/s", b"/fv0req", b"/s/fv0req"),
        (0, "/s", b"/fv0", b"/s/fv0"),
        (0, "/s", b"/fv0/req", b"/s/fv0/req"),
        (0, "/s", b"/fv0/", b"/s/fv0/"),
        # strip_path on, more shapes
        (4, "", b"/api", b"/"),
        (4, "", b"/api/x", b"/x"),
        (4, "", b"/apix", b"/x"),
        (4, "", b"/api/", b"/"),
        (4, "/base", b"/api/x", b"/base/x"),
        (4, "/base/", b"/api/x", b"/base/x"),
        (4, "/base/", b"/apix", b"/base/x"),
        (4, "/base", b"/api", b"/base"),
        (4, "/base", b"/api/", b"/base/"),
        (4, "/base/", b"/api", b"/base"),
        (4, "/base/", b"/api/", b"/base/"),
        (4, "/", b"/api/x", b"/x"),
        (4, "/", b"/api", b"/"),
        (1, "/base", b"/", b"/base"),
        # a leading "./" or "../" left after the strip is dropped (Kong's sanitize_uri_postfix)
        (4, "/base", b"/api../etc", b"/base/etc"),
        (4, "/base", b"/api./x", b"/base/x"),
        (4, "/base", b"/api..", b"/base"),
        (4, "/base", b"/api.x", b"/base/.x"),
        # strip_path off (or a route without paths): the whole request path is kept
        (0, "", b"/api/x", b"/api/x"),
        (0, "", b"/", b"/"),
        (0, "/base", b"/api/x", b"/base/api/x"),
        (0, "/base/", b"/api/x", b"/base/api/x"),
        (0, "/base", b"/", b"/base"),
        (0, "/base/", b"/", b"/base/"),
        (0, "/", b"/api", b"/api"),
    ],
)
def test_upstream_path(prefix_len: int, service_path: str, path: bytes, expected: bytes) -> None:
    assert upstream_path(prefix_len, service_path, path) == expected
    assert upstream_path(prefix_len, service_path.encode(), path) == expected


def test_upstream_path_without_strip_or_service_path_returns_the_same_bytes() -> None:
    path = b"/unchanged/path"
    assert upstream_path(0, b"", path) is path
    assert upstream_path(0, "/", path) is path


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"/a/../b", b"/b"),
        (b"/%61dmin", b"/admin"),
        (b"/a/./b/", b"/a/b/"),
        (b"//a//b", b"/a/b"),
        (b"/a/%2fb", b"/a/%2Fb"),  # reserved escapes stay encoded
        (b"/a/%2e%2e/b", b"/b"),
        (b"/a/b/..", b"/a/"),
        (b"/", b"/"),
        (b"/api/../../admin", None),  # climbs above the root
        (b"/%zz", None),
        (b"/a%4", None),
    ],
)
def test_normalize_path(raw: bytes, expected: bytes | None) -> None:
    assert normalize_path(raw) == expected


def test_needs_normalizing_only_for_suspicious_paths() -> None:
    assert not needs_normalizing(b"/api/v1/users")
    assert needs_normalizing(b"/api/../admin")
    assert needs_normalizing(b"/%61dmin")
    assert needs_normalizing(b"//x")
