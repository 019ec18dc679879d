"""The router against Kong's documented rules: each case is a route set, a request and the route
Kong's docs say wins ("Traditional router": routing criteria, regex evaluation order, route
priority for `traditional_compatible`; "Route entity": strip_path, path_handling table).

Routes are written as dicts in Kong's shape; the expected value is the winning route's name
(None: no route matches).
"""

from __future__ import annotations

from typing import Any

import pytest

from fastgw.config import Route
from fastgw.config.patterns import compile_path_regex
from fastgw.http.timers import Ticker
from fastgw.http.upstream import UpstreamPool
from fastgw.proxy.dispatch import RouteTarget
from fastgw.proxy.forwarding import Direct
from fastgw.proxy.routing import Router, upstream_path, upstream_path_v1
from fastgw.proxy.targets import UpstreamTarget


def kong_route(name: str, spec: dict[str, Any]) -> Route:
    return Route(
        name=name,
        paths=tuple(spec.get("paths", ())),
        hosts=tuple(spec.get("hosts", ())),
        methods=tuple(spec.get("methods", ())),
        strip_path=True,
        preserve_host=False,
        plugins=(),
        path=name,
        headers=tuple(
            (key.lower(), tuple(values) if isinstance(values, list) else (values,))
            for key, values in spec.get("headers", {}).items()
        ),
        regex_priority=spec.get("regex_priority", 0),
    )


def build(routes: dict[str, dict[str, Any]]) -> Router[str]:
    return Router(
        (kong_route(name, spec), lambda _path, name=name: name) for name, spec in routes.items()
    )


def request(
    router: Router[str],
    method: str,
    path: str,
    host: str = "",
    headers: dict[str, str] | None = None,
) -> str | None:
    pairs = [(name.lower().encode(), value.encode()) for name, value in (headers or {}).items()]
    return router.match(method.encode(), host.encode(), path.encode(), pairs)


# "Routing criteria": all configured fields must match, any one of their values
CRITERIA = {
    "r": {
        "hosts": ["example.com", "foo-service.com"],
        "paths": ["/foo", "/bar"],
        "methods": ["GET"],
    }
}
# "Regex evaluation order" (the docs' `d+` read as `\d+`)
REGEX_ORDER = {
    "status": {"paths": [r"~/status/\d+"], "regex_priority": 0},
    "version-status": {"paths": [r"~/version/\d+/status/\d+"], "regex_priority": 6},
    "version": {"paths": ["/version"]},
    "version-any": {"paths": ["~/version/any/"]},
}
# "Determining priority": more fields first
PRIORITY = {
    "host": {"hosts": ["example.com"]},
    "host-post": {"hosts": ["example.com"], "methods": ["POST"]},
}
PRIORITY_3 = {
    **PRIORITY,
    "host-post-path": {"hosts": ["example.com"], "methods": ["POST"], "paths": ["/"]},
}
# tie-breakers at equal match weight, in the docs' order
PLAIN_BEFORE_WILDCARD = {
    "wild": {"hosts": ["*.example.com"], "paths": ["/"]},
    "plain": {"hosts": ["api.example.com"], "paths": ["/"]},
}
# neither route is PLAIN_HOST_ONLY (a wildcard host, no hosts at all): the longer path wins
WILDCARD_TIES_WITH_NO_HOST = {
    "wild": {"hosts": ["*.example.com"], "paths": ["/api"]},
    "get": {"methods": ["GET"], "paths": ["/"]},
}
MORE_HEADERS_FIRST = {
    "one": {"headers": {"a": ["1"]}, "paths": ["/"]},
    "two": {"headers": {"a": ["1"], "b": ["2"]}, "paths": ["/"]},
}
REGEX_BEFORE_PLAIN = {
    "plain": {"paths": ["/users/list"]},
    "regex": {"paths": [r"~/users/\w+"]},
}
LONGEST_FIRST = {
    "service": {"paths": ["/service"]},
    "resource": {"paths": ["/service/resource"]},
}
HEADERS = {"versioned": {"headers": {"version": ["v1", "v2"]}}}
REGION = {"north": {"headers": {"region": "north"}}}
HEADER_AND = {"both": {"headers": {"x-a": ["1"], "x-b": ["2", "3"]}}}
HEADER_REGEX = {"rx": {"headers": {"x-version": [r"~*^v\d+$"]}}}
PATHS = {"r": {"paths": ["/service", "/hello/world"]}}
WILDCARDS = {"suffix": {"hosts": ["*.example.com"]}, "prefix": {"hosts": ["example.*"]}}
METHODS = {"read": {"methods": ["GET", "HEAD"]}}
ANCHORED = {"exact": {"paths": ["~/foo/bar$"], "regex_priority": 1}, "open": {"paths": ["~/foo"]}}
PLAIN_LOOKS_LIKE_REGEX = {"literal": {"paths": [r"/users/\d+/profile"]}}

CASES = [
    (CRITERIA, "GET", "/foo", "example.com", None, "r"),
    (CRITERIA, "GET", "/bar", "foo-service.com", None, "r"),
    (CRITERIA, "GET", "/foo/hello/world", "example.com", None, "r"),
    (CRITERIA, "GET", "/", "example.com", None, None),
    (CRITERIA, "POST", "/foo", "example.com", None, None),
    (CRITERIA, "GET", "/foo", "foo.com", None, None),
    (REGEX_ORDER, "GET", "/version/1/status/2", "", None, "version-status"),
    (REGEX_ORDER, "GET", "/status/3", "", None, "status"),
    (REGEX_ORDER, "GET", "/version/any/", "", None, "version-any"),
    (REGEX_ORDER, "GET", "/version/other", "", None, "version"),
    (PRIORITY, "GET", "/", "example.com", None, "host"),
    (PRIORITY, "POST", "/", "example.com", None, "host-post"),
    (PRIORITY_3, "POST", "/", "example.com", None, "host-post-path"),
    (PLAIN_BEFORE_WILDCARD, "GET", "/", "api.example.com", None, "plain"),
    (PLAIN_BEFORE_WILDCARD, "GET", "/", "www.example.com", None, "wild"),
    (WILDCARD_TIES_WITH_NO_HOST, "GET", "/api", "a.example.com", None, "wild"),
    (WILDCARD_TIES_WITH_NO_HOST, "GET", "/", "a.example.com", None, "get"),
    (WILDCARD_TIES_WITH_NO_HOST, "POST", "/api", "a.example.com", None, "wild"),
    (MORE_HEADERS_FIRST, "GET", "/", "", {"a": "1", "b": "2"}, "two"),
    (MORE_HEADERS_FIRST, "GET", "/", "", {"a": "1"}, "one"),
    (REGEX_BEFORE_PLAIN, "GET", "/users/list", "", None, "regex"),
    (REGEX_BEFORE_PLAIN, "GET", "/users/list-all", "", None, "regex"),
    (REGEX_BEFORE_PLAIN, "GET", "/users/-", "", None, None),
    (LONGEST_FIRST, "GET", "/service/resource/1", "", None, "resource"),
    (LONGEST_FIRST, "GET", "/service/other", "", None, "service"),
    (HEADERS, "GET", "/", "", {"version": "v1"}, "versioned"),
    (HEADERS, "GET", "/", "", {"version": "v2"}, "versioned"),
    (HEADERS, "GET", "/", "", {"version": "v3"}, None),
    (HEADERS, "GET", "/", "", None, None),
    (REGION, "GET", "/", "", {"Region": "North"}, "north"),
    (HEADER_AND, "GET", "/", "", {"x-a": "1", "x-b": "3"}, "both"),
    (HEADER_AND, "GET", "/", "", {"x-a": "1"}, None),
    (HEADER_REGEX, "GET", "/", "", {"x-version": "V12"}, "rx"),
    (HEADER_REGEX, "GET", "/", "", {"x-version": "v12-beta"}, None),
    (PATHS, "GET", "/service", "example.com", None, "r"),
    (PATHS, "GET", "/service/resource", "example.com", None, "r"),
    (PATHS, "GET", "/hello/world/resource", "anything.com", None, "r"),
    (PATHS, "GET", "/hello", "", None, None),
    (WILDCARDS, "GET", "/", "a.example.com", None, "suffix"),
    (WILDCARDS, "GET", "/", "x.y.example.com", None, "suffix"),
    (WILDCARDS, "GET", "/", "example.org", None, "prefix"),
    (METHODS, "GET", "/", "", None, "read"),
    (METHODS, "HEAD", "/resource", "", None, "read"),
    (METHODS, "POST", "/", "", None, None),
    (ANCHORED, "GET", "/foo/bar", "", None, "exact"),
    (ANCHORED, "GET", "/foo/bar/baz", "", None, "open"),
    (ANCHORED, "GET", "/x/foo/bar", "", None, None),
    (PLAIN_LOOKS_LIKE_REGEX, "GET", r"/users/\d+/profile", "", None, "literal"),
    (PLAIN_LOOKS_LIKE_REGEX, "GET", "/users/1/profile", "", None, None),
]


@pytest.mark.parametrize(("routes", "method", "path", "host", "headers", "expected"), CASES)
def test_kong_documented_routing(
    routes: dict[str, dict[str, Any]],
    method: str,
    path: str,
    host: str,
    headers: dict[str, str] | None,
    expected: str | None,
) -> None:
    assert request(build(routes), method, path, host, headers) == expected
    # config order is only the last tie-break: reversing it changes no documented outcome
    assert request(build(dict(reversed(routes.items()))), method, path, host, headers) == expected


def test_named_groups_in_kong_syntax_compile() -> None:
    pattern = compile_path_regex(r"~/version/(?<version>\d+)/users/(?<user>\S+)")
    found = pattern.match(b"/version/1/users/john")
    assert found is not None and found.group("version") == b"1" and found.group("user") == b"john"


def route_target(prefix_len: int, service_path: bytes, **options: Any) -> RouteTarget:
    """A route to a real target nothing connects to: rewriting a path needs no upstream."""
    pool = UpstreamPool("127.0.0.1", 9, Ticker(), size=1, idle_timeout=1.0, max_requests=1)
    target = UpstreamTarget(pool, b"127.0.0.1:9", 1.0, 1.0, 1.0)
    return RouteTarget(target, Direct(target, 0), None, prefix_len, service_path, False, **options)


def test_regex_strip_path_strips_the_whole_match() -> None:
    # the Route entity's strip_path example: "/version/\d+/service"
    target = route_target(0, b"", strip_regex=compile_path_regex(r"~/version/\d+/service"))
    assert target.rewrite and not target.plain_rewrite
    assert target.rewritten(b"/version/1/service/path/to/resource") == b"/path/to/resource"


# The Route entity's path_handling table (service path /s; its /fv0/ blank row reads "/s/fv01/",
# a typo for "/s/fv0/"): (route path, request, strip_path, path_handling, expected)
PATH_HANDLING = [
    ("/fv0", "/fv0/req", False, "v0", "/s/fv0/req"),
    ("/fv0", "/fv0", False, "v0", "/s/fv0"),
    ("/fv1", "/fv1/req", False, "v1", "/sfv1/req"),
    ("/fv1", "/fv1", False, "v1", "/sfv1"),
    ("/tv0", "/tv0/req", True, "v0", "/s/req"),
    ("/tv0", "/tv0", True, "v0", "/s"),
    ("/tv1", "/tv1/req", True, "v1", "/s/req"),
    ("/tv1", "/tv1", True, "v1", "/s"),
    ("/fv0/", "/fv0/req", False, "v0", "/s/fv0/req"),
    ("/fv0/", "/fv0/", False, "v0", "/s/fv0/"),
    ("/fv1/", "/fv1/req", False, "v1", "/sfv1/req"),
    ("/fv1/", "/fv1/", False, "v1", "/sfv1/"),
    ("/tv0/", "/tv0/req", True, "v0", "/s/req"),
    ("/tv0/", "/tv0/", True, "v0", "/s/"),
    ("/tv1/", "/tv1/req", True, "v1", "/sreq"),
    ("/tv1/", "/tv1/", True, "v1", "/s"),
]


@pytest.mark.parametrize(("route_path", "path", "strip", "handling", "expected"), PATH_HANDLING)
def test_kong_path_handling_table(
    route_path: str, path: str, strip: bool, handling: str, expected: str
) -> None:
    prefix_len = len(route_path) if strip else 0
    join = upstream_path_v1 if handling == "v1" else upstream_path
    assert join(prefix_len, b"/s", path.encode()) == expected.encode()
    target = route_target(prefix_len, b"/s", path_handling_v1=handling == "v1")
    assert target.rewritten(path.encode()) == expected.encode()


def test_v1_drops_one_of_two_touching_slashes() -> None:
    assert upstream_path_v1(4, b"/s/", b"/api/x") == b"/s/x"
    assert upstream_path_v1(0, b"", b"/x") == b"/x"
