"""cors through a real gateway: preflights answered without the upstream, CORS fields on the
upstream's answers and on local ones, Vary right, origins matched as Kong matches them."""

from __future__ import annotations

import pytest
from gateway_wire import GatewayWire, answer, get

from fastgw.config import ConfigError, parse_config
from fastgw.plugins.cors.origins import normalize_origin

ALL_METHODS = "GET,HEAD,PUT,PATCH,POST,DELETE,OPTIONS,TRACE,CONNECT"


def wire(config: str = "{}", route_plugins: str = "") -> GatewayWire:
    return GatewayWire(f"""
_format_version: "3.0"
services:
  - name: api
    url: http://127.0.0.1:9
    routes:
      - name: api
        paths: [/]
        plugins:
          - name: cors
            config: {config}
{route_plugins}
""")


def preflight(*fields: str, origin: str = "http://mockbin.com") -> bytes:
    return get(
        "/things", f"Origin: {origin}", "Access-Control-Request-Method: POST", *fields,
        method="OPTIONS",
    )  # fmt: skip


def test_a_preflight_is_answered_at_the_gateway_and_never_reaches_the_upstream() -> None:
    w = wire("{origins: [http://mockbin.com], methods: [GET, POST], max_age: 3600}")
    response = w.exchange(preflight("Access-Control-Request-Headers: X-Custom, Content-Type"))
    assert w.upstream_received() == b""
    assert response.status == 200 and response.body == b""
    assert response.get("content-length") == "0"
    assert response.get("access-control-allow-origin") == "http://mockbin.com"
    assert response.get("access-control-allow-methods") == "GET,POST"
    assert response.get("access-control-allow-headers") == "X-Custom, Content-Type"  # echoed
    assert response.get("access-control-max-age") == "3600"
    assert response.all("vary") == ["Origin"]
    assert response.get("access-control-allow-credentials") is None
    assert response.get("access-control-expose-headers") is None  # not on a preflight


def test_a_preflight_gets_the_configured_headers_credentials_and_private_network() -> None:
    w = wire(
        "{origins: ['https://.*\\.example\\.com'], headers: [X-Custom, Authorization], "
        "credentials: true, private_network: true}"
    )
    response = w.exchange(
        preflight("Access-Control-Request-Private-Network: true", origin="https://app.example.com")
    )
    assert response.get("access-control-allow-origin") == "https://app.example.com"
    assert response.get("access-control-allow-headers") == "X-Custom,Authorization"
    assert response.get("access-control-allow-methods") == ALL_METHODS  # Kong's default
    assert response.get("access-control-allow-credentials") == "true"
    assert response.get("access-control-allow-private-network") == "true"


def test_only_options_with_origin_and_a_requested_method_is_a_preflight() -> None:
    w = wire()
    response = w.exchange(get("/things", "Origin: http://a.test", method="OPTIONS"), answer())
    assert w.forwarded  # no Access-Control-Request-Method: proxied
    assert response.status == 200 and response.body == b"ok"
    assert response.get("access-control-allow-origin") == "*"


def test_preflight_continue_proxies_the_preflight_without_cors_fields() -> None:
    w = wire("{preflight_continue: true}")
    response = w.exchange(preflight(), answer(b"upstream's"))
    assert w.forwarded[0].startswith(b"OPTIONS /things ")
    assert response.body == b"upstream's"
    assert not [name for name, _ in response.headers if name.startswith("access-control")]


def test_no_origins_allow_every_origin_with_a_star_and_no_vary() -> None:
    w = wire("{exposed_headers: [X-Total, X-Page]}")
    response = w.exchange(get("/a", "Origin: http://a.test"), answer(Vary="Accept"))
    assert response.get("access-control-allow-origin") == "*"
    assert response.get("access-control-expose-headers") == "X-Total,X-Page"
    assert response.all("vary") == ["Accept"]  # "*" does not depend on the Origin


def test_a_listed_origin_is_allowed_normalized_and_vary_origin_is_added_to_the_upstreams() -> None:
    w = wire("{origins: ['http://a.test', 'https://b.test:8443', 'https://c.test']}")
    upstream = answer(Vary="Accept", Access_Control_Allow_Origin="https://evil.test")
    response = w.exchange(get("/a", "Origin: https://c.test:443"), upstream)
    assert response.get("access-control-allow-origin") == "https://c.test"  # default port dropped
    assert response.all("access-control-allow-origin") == ["https://c.test"]  # the upstream's go
    assert response.all("vary") == ["Accept", "Origin"]


def test_an_origin_not_listed_gets_no_allow_origin_even_if_the_upstream_sent_one() -> None:
    w = wire("{origins: ['http://a.test', 'http://b.test']}")
    response = w.exchange(
        get("/a", "Origin: http://evil.test"), answer(Access_Control_Allow_Origin="*")
    )
    assert response.get("access-control-allow-origin") is None
    assert response.all("vary") == ["Origin"]


def test_one_plain_origin_is_sent_whatever_the_request_origin_as_kong_does() -> None:
    w = wire("{origins: ['http://mockbin.com']}")
    response = w.exchange(get("/a", "Origin: http://other.test"), answer())
    assert response.get("access-control-allow-origin") == "http://mockbin.com"
    assert response.all("vary") == ["Origin"]


def test_a_regex_without_a_colon_matches_the_host_and_is_anchored_at_both_ends() -> None:
    w = wire("{origins: ['.*\\.example\\.com', 'http://a.test']}")
    ok = w.exchange(get("/a", "Origin: https://api.example.com"), answer())
    assert ok.get("access-control-allow-origin") == "https://api.example.com"
    suffix = w.exchange(get("/a", "Origin: https://api.example.com.evil.test"), answer())
    assert suffix.get("access-control-allow-origin") is None


def test_a_star_in_a_list_allows_every_origin_and_credentials_echo_the_origin() -> None:
    w = wire("{origins: ['http://a.test', '*'], credentials: true}")
    response = w.exchange(get("/a", "Origin: http://z.test"), answer())
    assert response.get("access-control-allow-origin") == "http://z.test"  # "*" cannot go
    assert response.get("access-control-allow-credentials") == "true"
    assert response.all("vary") == ["Origin"]


def test_credentials_with_every_origin_and_no_origin_stay_a_star_without_credentials() -> None:
    w = wire("{credentials: true}")
    response = w.exchange(get("/a"), answer())
    assert response.get("access-control-allow-origin") == "*"
    assert response.get("access-control-allow-credentials") is None


def test_allow_origin_absent_false_sends_nothing_to_a_request_without_origin() -> None:
    w = wire("{allow_origin_absent: false}")
    response = w.exchange(get("/a"), answer())
    assert not [name for name, _ in response.headers if name.startswith("access-control")]
    with_origin = w.exchange(get("/a", "Origin: http://a.test"), answer())
    assert with_origin.get("access-control-allow-origin") == "*"


def test_a_local_answer_of_a_later_plugin_carries_the_cors_fields_too() -> None:
    terminate = """
          - name: request-termination
            config: {status_code: 401, message: Unauthorized}"""
    w = wire("{origins: ['http://a.test', 'http://b.test']}", terminate)
    response = w.exchange(get("/a", "Origin: http://b.test"))
    assert w.upstream_received() == b""
    assert response.status == 401
    assert response.get("access-control-allow-origin") == "http://b.test"
    assert response.all("vary") == ["Origin"]


@pytest.mark.parametrize(
    ("origin", "domain", "host"),
    [
        ("http://a.test:80", "http://a.test", "a.test"),
        ("https://a.test:443", "https://a.test", "a.test"),
        ("http://a.test:8080", "http://a.test:8080", "a.test"),
        ("https://a.test:80", "https://a.test:80", "a.test"),
        ("http://[::1]:8080", "http://[::1]:8080", "[::1]"),
        ("null", "null", "null"),  # no host: the whole text
        ("HTTP://A.test", "HTTP://A.test", "A.test"),  # nothing is lower-cased, as in Kong
    ],
)
def test_origins_are_normalized_as_kong_does(origin: str, domain: str, host: str) -> None:
    normalized = normalize_origin(origin)
    assert (normalized.domain, normalized.host) == (domain, host)


def config_problems(config: str) -> list[tuple[str, str]]:
    text = f"""
_format_version: "3.0"
plugins:
  - name: cors
    config: {config}
"""
    with pytest.raises(ConfigError) as raised:
        parse_config(text, env={})
    return raised.value.problems


def test_config_errors_are_kongs() -> None:
    assert config_problems("{origins: ['(unclosed'], methods: [GET, BREW], max_age: soon}") == [
        ("plugins[0].config.origins[0]", "'(unclosed' is not a valid regex"),
        (
            "plugins[0].config.methods[1]",
            f"must be one of {ALL_METHODS.replace(',', ', ')}; got 'BREW'",
        ),
        ("plugins[0].config.max_age", "must be a number"),
    ]
