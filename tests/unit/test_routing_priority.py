"""The router's ordering against Kong 3's own priority function.

`kong_priority` below transliterates `get_priority` from Kong's `kong/router/transform.lua` (the
`traditional_compatible` router, Kong 3's default) bit for bit: the 64-bit number Kong's ATC
router sorts routes by, highest first. Two kinds of checks use it:

- TABLE: hand-written orderings, each with the reason Kong's bits give, across hosts, wildcard
  hosts, paths, regex paths, methods, headers and snis (the issue-20 bypass among them);
- every pair of route shapes that can match one request: the router's winner is the route with
  the higher Kong priority (config order on a tie), in both config orders.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from fastgw.config import Route
from fastgw.proxy.routing import Router

# -- Kong's get_priority, transliterated ----------------------------------------------------------

PLAIN_HOST_ONLY_BIT = 1 << 60
REGEX_URL_BIT = 1 << 51
MAX_HEADER_COUNT = 255


def kong_priority(route: dict[str, Any]) -> int:
    """transform.lua get_priority for an http route with one group of paths (Kong splits a
    route's paths into groups of one length, or of regexes, and ranks each group alone)."""
    match_weight = 0
    if route.get("methods"):
        match_weight += 1
    hosts = route.get("hosts")
    if hosts:
        match_weight += 1
    headers_count = min(len(route.get("headers") or {}), MAX_HEADER_COUNT)
    if headers_count:
        match_weight += 1
    if route.get("snis"):
        match_weight += 1
    # `type(hosts) == "table"`: a route without hosts has ngx.null there, not a table
    plain_host_only = bool(hosts) and not any("*" in host for host in hosts)
    uri_length = 0
    regex_url = False
    paths = route.get("paths")
    if paths:
        match_weight += 1
        if paths[0].startswith("~"):
            regex_url = True
        else:
            uri_length = len(paths[0].encode())
    assert match_weight <= 7
    regex_priority = (route.get("regex_priority", 0) if regex_url else 0) << 19
    return (
        (match_weight << 61)
        | (PLAIN_HOST_ONLY_BIT if plain_host_only else 0)
        | (REGEX_URL_BIT if regex_url else 0)
        | (headers_count << 52)
        | regex_priority
        | (uri_length & 0x7FFFF)
    )


# -- the router under test ------------------------------------------------------------------------


def route_of(name: str, spec: dict[str, Any]) -> Route:
    return Route(
        name=name,
        paths=tuple(spec.get("paths", ())),
        hosts=tuple(spec.get("hosts", ())),
        methods=tuple(spec.get("methods", ())),
        strip_path=False,
        preserve_host=False,
        plugins=(),
        path=name,
        headers=tuple((key, tuple(values)) for key, values in spec.get("headers", {}).items()),
        regex_priority=spec.get("regex_priority", 0),
        protocols=("http", "https"),
        snis=tuple(spec.get("snis", ())),
    )


def winner(routes: list[tuple[str, dict[str, Any]]], request: dict[str, Any]) -> str | None:
    router: Router[str] = Router(
        (route_of(name, spec), lambda _path, name=name: name) for name, spec in routes
    )
    headers = [(k.encode(), v.encode()) for k, v in request.get("headers", {}).items()]
    sni = request.get("sni")
    return router.match(
        request.get("method", "GET").encode(),
        request.get("host", "").encode(),
        request["path"].encode(),
        headers,
        sni.encode() if sni is not None else None,
    )


# -- hand-written orderings, each with Kong's reason ----------------------------------------------

ADMIN = {"host": "admin.example.com", "path": "/admin/users"}
TABLE: list[tuple[str, dict[str, Any], dict[str, Any], dict[str, Any], str]] = [
    # (why, route a, route b, request, the winner)
    (
        "issue 20: equal weight (1); hosts-only has PLAIN_HOST_ONLY, above any path length",
        {"hosts": ["admin.example.com"]},
        {"paths": ["/"]},
        ADMIN,
        "a",
    ),
    (
        "PLAIN_HOST_ONLY outranks a long plain path too",
        {"hosts": ["admin.example.com"]},
        {"paths": ["/admin/users"]},
        ADMIN,
        "a",
    ),
    (
        "PLAIN_HOST_ONLY outranks a regex path (REGEX_URL_BIT is below it)",
        {"hosts": ["admin.example.com"]},
        {"paths": ["~/admin/.*"]},
        ADMIN,
        "a",
    ),
    (
        "PLAIN_HOST_ONLY outranks more headers (header count is below it)",
        {"hosts": ["admin.example.com"]},
        {"headers": {"x-a": ["1"]}},
        {**ADMIN, "headers": {"x-a": "1"}},
        "a",
    ),
    (
        "a wildcard host is not PLAIN_HOST_ONLY: at equal weight the longer path wins",
        {"hosts": ["*.example.com"], "paths": ["/"]},
        {"methods": ["GET"], "paths": ["/admin"]},
        ADMIN,
        "b",
    ),
    (
        "one wildcard among plain hosts takes PLAIN_HOST_ONLY away",
        {"hosts": ["admin.example.com", "*.example.org"], "paths": ["/"]},
        {"hosts": ["admin.example.com"], "paths": ["/"]},
        ADMIN,
        "b",
    ),
    (
        "a suffix wildcard (example.*) is a wildcard too",
        {"hosts": ["admin.*"]},
        {"hosts": ["admin.example.com"]},
        ADMIN,
        "b",
    ),
    (
        "weight first: hosts + paths (2) beat hosts alone (1)",
        {"hosts": ["admin.example.com"]},
        {"hosts": ["*.example.com"], "paths": ["/"]},
        ADMIN,
        "b",
    ),
    (
        "weight first: methods + paths (2) beat a plain host alone (1)",
        {"hosts": ["admin.example.com"]},
        {"methods": ["GET"], "paths": ["/"]},
        ADMIN,
        "b",
    ),
    (
        "snis count in the weight: snis + paths (2) beat paths alone (1), over TLS",
        {"snis": ["admin.example.com"], "paths": ["/"]},
        {"paths": ["/admin/users"]},
        {**ADMIN, "sni": "admin.example.com"},
        "a",
    ),
    (
        "snis are not considered without TLS, but still weigh (Kong: net.protocol != https)",
        {"snis": ["admin.example.com"], "paths": ["/"]},
        {"paths": ["/admin/users"]},
        ADMIN,
        "a",
    ),
    (
        "header count is above REGEX_URL_BIT: two headers beat one header with a regex path",
        {"headers": {"x-a": ["1"], "x-b": ["2"]}, "paths": ["/"]},
        {"headers": {"x-a": ["1"]}, "paths": ["~/admin"]},
        {**ADMIN, "headers": {"x-a": "1", "x-b": "2"}},
        "a",
    ),
    (
        "a regex path beats any plain path at equal weight and headers",
        {"paths": ["/admin/users"]},
        {"paths": ["~/adm"]},
        ADMIN,
        "b",
    ),
    (
        "regex paths by regex_priority",
        {"paths": ["~/admin"], "regex_priority": 1},
        {"paths": ["~/admin/users"], "regex_priority": 5},
        ADMIN,
        "b",
    ),
    (
        "plain paths by length in bytes",
        {"paths": ["/admin"]},
        {"paths": ["/admin/users"]},
        ADMIN,
        "b",
    ),
    (
        "no hosts at all, equal weight: the longer path wins",
        {"methods": ["GET"], "paths": ["/"]},
        {"headers": {"x-a": ["1"]}, "paths": ["/admin"]},
        {**ADMIN, "headers": {"x-a": "1"}},
        "b",
    ),
]


@pytest.mark.parametrize(
    ("why", "a", "b", "request_", "expected"), TABLE, ids=[t[0] for t in TABLE]
)
def test_kong_orderings(
    why: str, a: dict[str, Any], b: dict[str, Any], request_: dict[str, Any], expected: str
) -> None:
    # the table's reasons are Kong's bits: check them against the transliteration first
    higher = "a" if kong_priority(a) > kong_priority(b) else "b"
    assert higher == expected, why
    for order in ([("a", a), ("b", b)], [("b", b), ("a", a)]):
        assert winner(order, request_) == expected, (why, [name for name, _ in order])


def test_snis_that_do_not_match_the_tls_name_take_the_route_out() -> None:
    routes = [("sni", {"snis": ["other.example.com"], "paths": ["/"]}), ("path", {"paths": ["/"]})]
    assert winner(routes, {**ADMIN, "sni": "admin.example.com"}) == "path"
    assert winner(routes, {**ADMIN, "sni": "other.example.com"}) == "sni"


# -- every pair of shapes that can match one request ----------------------------------------------

HOSTS = (
    [],
    ["api.example.com"],
    ["*.example.com"],
    ["api.*"],
    ["api.example.com", "*.example.org"],
)
PATHS = ([], ["/"], ["/v1"], ["/v1/orders"], [r"~/v\d+"], [r"~/v1/o.*"])
METHODS = ([], ["GET"])
HEADERS = ({}, {"x-a": ["1"]}, {"x-a": ["1"], "x-b": ["~*^tw"]})
SNIS = ([], ["api.example.com"], ["*.example.com"])
REGEX_PRIORITIES = (0, 3)

# one request that every shape above matches
REQUEST = {
    "method": "GET",
    "host": "api.example.com",
    "path": "/v1/orders/7",
    "headers": {"x-a": "1", "x-b": "two"},
    "sni": "api.example.com",
}


def shapes() -> list[dict[str, Any]]:
    found = []
    for hosts, paths, methods, headers, snis in itertools.product(
        HOSTS, PATHS, METHODS, HEADERS, SNIS
    ):
        if not (hosts or paths or methods or headers or snis):
            continue  # Kong refuses a route that matches everything
        regex = bool(paths) and paths[0].startswith("~")
        for regex_priority in REGEX_PRIORITIES if regex else (0,):
            spec: dict[str, Any] = {
                "hosts": hosts,
                "paths": paths,
                "methods": methods,
                "headers": headers,
                "snis": snis,
                "regex_priority": regex_priority,
            }
            found.append(spec)
    return found


def test_every_pair_of_shapes_is_ordered_as_kong_orders_it() -> None:
    all_shapes = shapes()
    # a sample of pairs, deterministic and spread over the whole product (every shape is in
    # several pairs): the full square is ~300,000 router builds
    pairs = [
        (all_shapes[i], all_shapes[(i * 7919 + offset) % len(all_shapes)])
        for i in range(len(all_shapes))
        for offset in (1, 131, 977)
    ]
    checked = 0
    for a, b in pairs:
        pa, pb = kong_priority(a), kong_priority(b)
        # the earlier route wins a tie (Kong breaks it by route id: not a user-visible order)
        expected_ab = "a" if pa >= pb else "b"
        expected_ba = "b" if pb >= pa else "a"
        assert winner([("a", a), ("b", b)], REQUEST) == expected_ab, (a, b, pa, pb)
        assert winner([("b", b), ("a", a)], REQUEST) == expected_ba, (a, b, pa, pb)
        checked += 1
    assert checked == 3 * len(all_shapes) > 1000


def test_a_pair_that_differs_only_in_plain_host_only() -> None:
    """The bug's shape at every path length Kong can rank (19 bits of length)."""
    for length in (1, 2, 100, 8000):
        catch_all = {"paths": ["/" + "a" * (length - 1)]}
        hosts_only = {"hosts": ["admin.example.com"]}
        request = {"host": "admin.example.com", "path": "/" + "a" * (length + 5)}
        assert kong_priority(hosts_only) > kong_priority(catch_all)
        assert winner([("c", catch_all), ("h", hosts_only)], request) == "h"
