"""Config loading: the Kong declarative subset, `_fastgw` settings, env substitution, errors.

Each error test asserts the exact (key path, reason) pairs, so a wrong path or a lost problem fails.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from fastgw.config import (
    DEFAULT_ADMIN_LISTEN,
    DEFAULT_LISTEN,
    GatewayConfig,
    Limits,
    load_config,
    parse_config,
    parse_listen,
)
from fastgw.errors import ConfigError
from fastgw.plugins import names as plugin_names

HEADER = '_format_version: "3.0"\n'
# every registered plugin, whoever adds one (the message lists them sorted)
UNKNOWN_PLUGIN = f"(available: {', '.join(plugin_names())})"


def parse(body: str, env: dict[str, str] | None = None) -> GatewayConfig:
    return parse_config(HEADER + textwrap.dedent(body), env=env or {})


def problems(body: str, env: dict[str, str] | None = None, *, header: str = HEADER) -> list:
    with pytest.raises(ConfigError) as caught:
        parse_config(header + textwrap.dedent(body), env=env or {})
    return caught.value.problems


# -- valid configs ---------------------------------------------------------------------------------


def test_minimal_config_gets_kong_and_gateway_defaults() -> None:
    config = parse(
        """
        services:
        - host: backend
          routes:
          - paths: [/]
        """
    )
    [service] = config.services
    assert (service.name, service.protocol, service.host, service.port, service.path) == (
        None,
        "http",
        "backend",
        80,
        "",
    )
    assert (service.connect_timeout, service.write_timeout, service.read_timeout) == (
        60000,
        60000,
        60000,
    )
    assert service.retries == 5
    assert service.path_in_config == "services[0]"
    [route] = service.routes
    assert route.paths == ("/",)
    assert (route.strip_path, route.preserve_host) == (True, False)
    assert route.path == "services[0].routes[0]"
    assert config.plugins == ()
    assert config.source == "<string>"
    settings = config.settings
    assert settings.listen == ("127.0.0.1", 8000) == DEFAULT_LISTEN
    assert settings.admin_listen == ("127.0.0.1", 8001) == DEFAULT_ADMIN_LISTEN
    assert settings.workers == 1
    assert settings.limits == Limits(
        max_head_size=32 * 1024,
        max_headers=100,
        max_uri_size=8 * 1024,
        head_timeout=60.0,
        keepalive_timeout=75.0,
        max_body_size=0,
        underscores_in_headers=False,
        upstream_pool_size=512,
        upstream_idle_timeout=60.0,
        upstream_max_requests=10000,
        drain_timeout=10.0,
    )


def test_config_without_services_is_valid() -> None:
    config = parse("")
    assert config.services == ()
    assert list(config.routes()) == []


@pytest.mark.parametrize("version", ["3.0", "2.1", "1.1"])
def test_format_versions_from_kong_and_deck_are_accepted(version: str) -> None:
    config = parse_config(f'_format_version: "{version}"\n_transform: true\n_workspace: default\n')
    assert config.services == ()


def test_url_sets_protocol_host_port_and_path() -> None:
    config = parse(
        """
        services:
        - name: a
          url: https://API.example.com:8443/base
        - name: b
          url: http://127.0.0.1
        - name: c
          url: https://[::1]/
        """
    )
    a, b, c = config.services
    assert (a.protocol, a.host, a.port, a.path) == ("https", "api.example.com", 8443, "/base")
    assert (b.protocol, b.host, b.port, b.path) == ("http", "127.0.0.1", 80, "")
    assert (c.protocol, c.host, c.port, c.path) == ("https", "::1", 443, "/")


def test_host_port_protocol_path_fields() -> None:
    config = parse(
        """
        services:
        - protocol: https
          host: backend.internal
          path: /v1
          connect_timeout: 1000
          write_timeout: 2000
          read_timeout: 3000
          retries: 0
          tags: [a]
          id: 2d9a7d64-6c1d-4c4b-9a38-d4f0b4a5a6f1
        - host: backend
          port: 9000
        """
    )
    first, second = config.services
    assert (first.protocol, first.host, first.port, first.path) == (
        "https",
        "backend.internal",
        443,
        "/v1",
    )
    assert (first.connect_timeout, first.write_timeout, first.read_timeout) == (1000, 2000, 3000)
    assert first.retries == 0
    assert (second.protocol, second.port) == ("http", 9000)


def test_nested_and_top_level_routes_and_plugins_attach_to_their_scope() -> None:
    config = parse(
        """
        services:
        - name: orders
          host: orders
          routes:
          - name: orders-api
            paths: [/orders]
            plugins:
            - name: request-termination
              config: {status_code: 418}
          plugins:
          - name: request-termination
            config: {message: service-level}
        - name: users
          host: users
        routes:
        - name: users-api
          service: users
          hosts: [Users.Example.COM]
          methods: [GET, POST]
          strip_path: false
          preserve_host: true
        - name: orders-admin
          service: {name: orders}
          paths: [/admin]
        plugins:
        - name: request-termination
          config: {status_code: 503}
        - name: request-termination
          service: users
          config: {status_code: 502}
        - name: request-termination
          route: {name: orders-admin}
          enabled: false
        """
    )
    orders, users = config.services
    assert [route.name for route in orders.routes] == ["orders-api", "orders-admin"]
    assert [route.name for route in users.routes] == ["users-api"]

    orders_api, orders_admin = orders.routes
    [route_plugin] = orders_api.plugins
    assert route_plugin.path == "services[0].routes[0].plugins[0]"
    assert route_plugin.config.status_code == 418
    assert route_plugin.enabled is True
    [service_plugin] = orders.plugins
    assert service_plugin.path == "services[0].plugins[0]"
    assert service_plugin.config.message == "service-level"
    [admin_plugin] = orders_admin.plugins
    assert (admin_plugin.path, admin_plugin.enabled) == ("plugins[2]", False)
    assert orders_admin.path == "routes[1]"

    [users_api] = users.routes
    assert users_api.hosts == ("users.example.com",)
    assert users_api.methods == ("GET", "POST")
    assert (users_api.strip_path, users_api.preserve_host) == (False, True)
    assert users_api.plugins == ()
    [users_plugin] = users.plugins
    assert (users_plugin.path, users_plugin.config.status_code) == ("plugins[1]", 502)

    [global_plugin] = config.plugins
    assert (global_plugin.name, global_plugin.path) == ("request-termination", "plugins[0]")
    assert global_plugin.config.status_code == 503

    assert [(service.name, route.name) for service, route in config.routes()] == [
        ("orders", "orders-api"),
        ("orders", "orders-admin"),
        ("users", "users-api"),
    ]


def test_disabled_service_is_dropped_with_its_routes_and_plugins() -> None:
    config = parse(
        """
        services:
        - name: disabled
          host: disabled
          enabled: false
          routes: [{name: disabled-route, paths: [/disabled]}]
        - name: enabled
          host: enabled
          routes: [{paths: [/enabled]}]
        routes:
        - service: disabled
          paths: [/also-disabled]
        plugins:
        - name: request-termination
          service: disabled
        """
    )
    assert [service.name for service in config.services] == ["enabled"]
    assert [route.paths for _, route in config.routes()] == [("/enabled",)]
    assert config.plugins == ()


def test_deck_route_defaults_are_accepted() -> None:
    config = parse(
        """
        services:
        - host: backend
          routes:
          - paths: [/]
            protocols: [http, https]
            path_handling: v0
            regex_priority: 0
            https_redirect_status_code: 426
            request_buffering: true
            response_buffering: true
            tags: [t]
            id: 8f1d9b6c-5a0b-4a8e-9a4b-0c6f7b1b2d3e
        """
    )
    assert config.services[0].routes[0].paths == ("/",)


def test_json_config_including_tab_indentation() -> None:
    text = '{\n\t"_format_version": "3.0",\n\t"services": [{"host": "b", "port": 81}]\n}'
    config = parse_config(text, env={})
    assert (config.services[0].host, config.services[0].port) == ("b", 81)


def test_load_config_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(HEADER + "services:\n- url: http://${HOST}:9000\n")
    config = load_config(path, env={"HOST": "10.0.0.7"})
    assert config.source == str(path)
    assert (config.services[0].host, config.services[0].port) == ("10.0.0.7", 9000)


def test_load_config_defaults_to_os_environ(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FASTGW_TEST_UPSTREAM", "upstream.local")
    path = tmp_path / "gateway.yaml"
    path.write_text(HEADER + "services:\n- host: ${FASTGW_TEST_UPSTREAM}\n")
    assert load_config(str(path)).services[0].host == "upstream.local"


# -- file and syntax errors ------------------------------------------------------------------------


def test_missing_file_is_a_file_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as caught:
        load_config(missing)
    [(path, reason)] = caught.value.problems
    assert path == "(file)"
    assert reason.startswith(f"cannot read {missing}: ")


def test_non_utf8_file_is_a_file_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(HEADER.encode() + b"services: [{host: caf\xe9}]\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    [(where, reason)] = caught.value.problems
    assert where == "(file)"
    assert "not UTF-8" in reason


@pytest.mark.parametrize("text", ["", "   \n\n", "# only a comment\n"])
def test_empty_document_is_an_error(text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    assert caught.value.problems == [("(root)", "is empty")]


def test_yaml_syntax_error_reports_line_and_column() -> None:
    text = '_format_version: "3.0"\nservices:\n  - host: [a\n    port: 1\nroutes: x\n'
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    assert caught.value.problems == [
        ("(root)", "invalid YAML at line 4, column 9: expected ',' or ']', but got ':'")
    ]


def test_yaml_duplicate_key_is_an_error_with_its_position() -> None:
    text = '_format_version: "3.0"\nservices:\n- host: a\n  host: b\n'
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    assert caught.value.problems == [
        ("(root)", "invalid YAML at line 4, column 3: duplicate key 'host'")
    ]


def test_json_syntax_error_reports_line_and_column() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config('{\n  "_format_version": "3.0",\n  "services": [}\n}')
    [(path, reason)] = caught.value.problems
    assert path == "(root)"
    assert reason.startswith("invalid JSON at line 3, column 16: ")


def test_document_must_be_a_mapping() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("- a\n- b\n")
    assert caught.value.problems == [
        ("(root)", "must be a mapping"),
        ("_format_version", "is required"),
    ]


# -- validation errors -----------------------------------------------------------------------------


def test_format_version_is_required_and_checked() -> None:
    assert problems("services: []\n", header="") == [("_format_version", "is required")]
    assert problems("", header='_format_version: "4.0"\n') == [
        ("_format_version", "must be one of 3.0, 2.1, 1.1; got '4.0'")
    ]
    assert problems("", header="_format_version: 3.0\n") == [
        ("_format_version", 'must be a string: quote it, as in "3.0"')
    ]


def test_unknown_fields_are_reported_everywhere() -> None:
    assert problems(
        """
        upstream: []
        _fastgw: {listen_port: 1}
        services:
        - host: a
          hostname: b
          routes:
          - paths: [/]
            regex: true
          plugins:
          - name: request-termination
            config: {status: 200}
            orderings: {}
        """
    ) == [
        ("_fastgw.listen_port", "unknown field"),
        ("services[0].routes[0].regex", "unknown field"),
        ("services[0].plugins[0].config.status", "unknown field"),
        ("services[0].plugins[0].orderings", "unknown field"),
        ("services[0].hostname", "unknown field"),
        ("upstream", "unknown field"),
    ]


def test_kong_keys_without_support_say_so_rather_than_unknown_field() -> None:
    assert problems(
        """
        snis: [{name: a.example, certificate: {id: x}}]
        services:
        - host: a
          tls_verify_depth: 2
          routes:
          - paths: [/]
            sources: [{ip: 192.0.2.1}]
            expression: 'http.path == "/"'
          plugins:
          - name: request-termination
            ordering: {before: {access: [acl]}}
        """
    ) == [
        ("snis", "not supported yet"),
        ("services[0].tls_verify_depth", "not supported yet"),
        ("services[0].routes[0].sources", "not supported yet"),
        ("services[0].routes[0].expression", "not supported yet (the expressions router)"),
        ("services[0].plugins[0].ordering", "not supported yet"),
    ]


def test_empty_kong_entity_lists_and_records_as_deck_writes_them_load() -> None:
    config = parse(
        """
        upstreams: []
        certificates: []
        consumer_groups: []
        services:
        - host: a
          routes:
          - {paths: [/], snis: [], sources: [], destinations: []}
          plugins:
          - {name: request-termination, ordering: {}}
        """
    )
    assert config.services[0].routes[0].paths == ("/",)


def test_several_errors_are_reported_together() -> None:
    assert problems(
        """
        services:
        - name: a
          host: a
          routes:
          - paths: [/ok]
          - paths: [/ok, api, "~/regex$", "~/(unclosed"]
            hosts: ["*.example.com", "a.*.b", "example.com:8080"]
            methods: [GET, get, 1]
        - port: 0
          connect_timeout: 0
          retries: -1
          path: base
        """
    ) == [
        ("services[0].routes[1].paths[1]", 'must start with "/" (or "~" for a regex)'),
        (
            "services[0].routes[1].paths[3]",
            "is not a valid regex: missing ), unterminated subpattern",
        ),
        (
            "services[0].routes[1].hosts[1]",
            'must be a host name, with at most a leading "*." or trailing ".*"',
        ),
        ("services[0].routes[1].hosts[2]", "ports in hosts are not supported"),
        ("services[0].routes[1].methods[1]", 'must be an uppercase method like "GET"'),
        ("services[0].routes[1].methods[2]", 'must be an uppercase method like "GET"'),
        ("services[1].host", "is required"),
        ("services[1].port", "must be >= 1"),
        ("services[1].path", 'must start with "/"'),
        ("services[1].connect_timeout", "must be >= 1"),
        ("services[1].retries", "must be >= 0"),
    ]


def test_url_is_exclusive_with_host_port_protocol_path() -> None:
    assert problems(
        """
        services:
        - url: http://a:1/x
          host: b
          port: 2
          protocol: https
          path: /y
        """
    ) == [
        ("services[0].protocol", "cannot be set together with url"),
        ("services[0].host", "cannot be set together with url"),
        ("services[0].port", "cannot be set together with url"),
        ("services[0].path", "cannot be set together with url"),
    ]


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://a/", "must start with http:// or https://; got 'ftp://a/'"),
        ("backend:9000", "must start with http:// or https://; got 'backend:9000'"),
        ("http:///path", "must include a host; got 'http:///path'"),
        ("http://a/x?y=1", "must not include a query or fragment; got 'http://a/x?y=1'"),
        ("http://user:pw@a/", "must not include credentials"),
        ("http://a:0/", "port must be >= 1; got 'http://a:0/'"),
        ("http://a b/", "has an invalid host; got 'http://a b/'"),
        ("http://a/b c", 'path must not contain whitespace, "?" or "#"; got \'http://a/b c\''),
    ],
)
def test_bad_urls(url: str, reason: str) -> None:
    assert problems(f"services: [{{url: '{url}'}}]\n") == [("services[0].url", reason)]


def test_bad_url_port_is_reported() -> None:
    [(path, reason)] = problems("services: [{url: 'http://a:99999/'}]\n")
    assert path == "services[0].url"
    assert reason.startswith("is not a valid URL (")


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ("backend:9000", "must be a host name or IP address (set port apart); got 'backend:9000'"),
        ("back end", "must be a host name or IP address; got 'back end'"),
    ],
)
def test_bad_service_hosts(host: str, reason: str) -> None:
    assert problems(f"services: [{{host: '{host}'}}]\n") == [("services[0].host", reason)]


def test_ipv6_service_host_is_stored_without_brackets() -> None:
    assert parse("services: [{host: '[::1]'}, {host: '::1'}]\n").services[0].host == "::1"


def test_service_protocol_must_be_http_or_https() -> None:
    assert problems("services: [{host: a, protocol: grpc}]\n") == [
        ("services[0].protocol", "must be one of http, https; got 'grpc'")
    ]


def test_route_needs_paths_hosts_or_methods() -> None:
    assert problems("services: [{host: a, routes: [{name: r, strip_path: false}]}]\n") == [
        (
            "services[0].routes[0]",
            "must have at least one of paths, hosts, methods, headers or snis",
        )
    ]


def test_route_protocols_other_than_http_are_rejected() -> None:
    assert problems("services: [{host: a, routes: [{paths: [/], protocols: [http, grpc]}]}]\n") == [
        ("services[0].routes[0].protocols[1]", "must be one of http, https, ws, wss; got 'grpc'")
    ]


def test_route_path_handling_is_v0_or_v1() -> None:
    config = parse("services: [{host: a, routes: [{paths: [/], path_handling: v1}]}]\n")
    assert config.services[0].routes[0].path_handling == "v1"
    assert problems("services: [{host: a, routes: [{paths: [/], path_handling: v2}]}]\n") == [
        ("services[0].routes[0].path_handling", "must be one of v0, v1; got 'v2'")
    ]


def test_route_headers_regex_paths_and_regex_priority() -> None:
    config = parse(
        """
        services:
        - host: a
          routes:
          - paths: ["~/v[0-9]+/orders", /plain]
            regex_priority: 7
            headers: {X-Version: [v1, "~*^v2"], Region: north}
        """
    )
    route = config.services[0].routes[0]
    assert route.paths == ("~/v[0-9]+/orders", "/plain")
    assert route.regex_priority == 7
    assert route.headers == (("x-version", ("v1", "~*^v2")), ("region", ("north",)))


def test_route_header_problems() -> None:
    assert problems(
        """
        services:
        - host: a
          routes:
          - headers: {host: [a.example], "bad name": [x], empty: [], rx: ["~*("]}
        """
    ) == [
        ("services[0].routes[0].headers.host", "cannot be matched in headers; use hosts"),
        ("services[0].routes[0].headers.bad name", "is not a header name"),
        ("services[0].routes[0].headers.empty", "must list at least one value"),
        (
            "services[0].routes[0].headers.rx",
            "has an invalid regex '~*(': missing ), unterminated subpattern",
        ),
    ]


def test_duplicate_names_are_errors() -> None:
    assert problems(
        """
        services:
        - {name: a, host: a, routes: [{name: r, paths: [/a]}]}
        - {name: a, host: b, routes: [{name: r, paths: [/b]}]}
        """
    ) == [
        ("services[1].routes[0].name", "is already used by services[0].routes[0]"),
        ("services[1].name", "is already used by services[0]"),
    ]


def test_top_level_route_service_reference_errors() -> None:
    assert problems(
        """
        services: [{name: a, host: a}]
        routes:
        - paths: [/x]
          service: nope
        - paths: [/y]
          service: {name: nope}
        - paths: [/z]
        - paths: [/w]
          service: {id: 1234}
        """
    ) == [
        ("routes[0].service", 'unknown service "nope"'),
        ("routes[1].service", 'unknown service "nope"'),
        ("routes[2].service", "is required"),
        ("routes[3].service.name", "is required"),
        ("routes[3].service.id", "unknown field"),
    ]


def test_service_reference_is_only_allowed_on_top_level_routes() -> None:
    assert problems("services: [{name: a, host: a, routes: [{paths: [/], service: a}]}]\n") == [
        ("services[0].routes[0].service", "unknown field")
    ]


def test_unknown_plugin_name_lists_the_available_ones() -> None:
    assert problems("plugins: [{name: foo, config: {anything: 1}}]\n") == [
        ("plugins[0].name", f'unknown plugin "foo" {UNKNOWN_PLUGIN}')
    ]
    assert problems("plugins: [{config: {}}]\n") == [("plugins[0].name", "is required")]


def test_request_termination_config_errors_carry_their_path() -> None:
    assert problems(
        """
        services:
        - host: a
          routes:
          - paths: [/]
            plugins:
            - name: request-termination
              config:
                status_code: 99
                message: a
                body: b
        plugins:
        - name: request-termination
          config: not-a-mapping
        """
    ) == [
        ("services[0].routes[0].plugins[0].config.status_code", "must be >= 100"),
        (
            "services[0].routes[0].plugins[0].config",
            "message cannot be used with content_type or body",
        ),
        ("plugins[0].config", "must be a mapping"),
    ]


def test_duplicate_plugin_at_the_same_scope_is_an_error() -> None:
    assert problems(
        """
        services:
        - name: a
          host: a
          routes: [{name: r, paths: [/]}]
          plugins: [{name: request-termination}]
        plugins:
        - name: request-termination
        - name: request-termination
        - name: request-termination
          service: a
        - name: request-termination
          route: r
        """
    ) == [
        ("plugins[1].name", '"request-termination" is already configured at plugins[0]'),
        (
            "plugins[2].name",
            '"request-termination" is already configured at services[0].plugins[0]',
        ),
    ]


def test_top_level_plugin_reference_errors() -> None:
    assert problems(
        """
        services:
        - {name: a, host: a, routes: [{name: ra, paths: [/a]}]}
        - {name: b, host: b}
        plugins:
        - {name: request-termination, service: nope}
        - {name: request-termination, route: nope}
        - {name: request-termination, service: b, route: ra}
        - {name: request-termination, consumer: alice}
        """
    ) == [
        ("plugins[0].service", 'unknown service "nope"'),
        ("plugins[1].route", 'unknown route "nope"'),
        ("plugins[2].route", 'route "ra" is not on service "b"'),
        ("plugins[3].consumer", 'unknown consumer "alice"'),
    ]


def test_plugin_with_service_and_its_own_route_attaches_to_the_route() -> None:
    config = parse(
        """
        services: [{name: a, host: a, routes: [{name: ra, paths: [/a]}]}]
        plugins: [{name: request-termination, service: a, route: ra, instance_name: x}]
        """
    )
    assert config.services[0].plugins == ()
    assert config.services[0].routes[0].plugins[0].path == "plugins[0]"


def test_consumers_are_read_with_stable_ids() -> None:
    config = parse(
        """
        consumers:
        - {username: alice, tags: [team-a]}
        - {custom_id: svc-42}
        - {username: bob, custom_id: b-1, id: 6a1c0c47-9d6b-4fa3-9a39-1cb6a8a1f4d5}
        """
    )
    alice, service, bob = config.consumers.all
    assert alice.username == "alice" and alice.tags == ("team-a",)
    assert alice.id == parse("consumers: [{username: alice}]\n").consumers.all[0].id
    assert alice.id != service.id
    assert bob.id == "6a1c0c47-9d6b-4fa3-9a39-1cb6a8a1f4d5"
    assert config.consumers.find("b-1", "custom_id") is bob
    assert config.consumers.find("ALICE", "username") is None
    assert config.consumers.find("ALICE", "username", ignore_case=True) is alice
    assert config.consumers.reference(bob.id) is bob
    assert config.consumers.reference("alice") is alice
    assert parse("consumers: []\n").consumers.all == ()


def test_consumer_problems() -> None:
    assert problems(
        """
        consumers:
        - {username: alice}
        - {username: alice}
        - {tags: [x]}
        - {username: carol, id: not-a-uuid}
        - {username: dave, hmacauth_credentials: [{username: d}], acls: []}
        """
    ) == [
        ("consumers[1].username", "is already used by consumers[0]"),
        ("consumers[2]", "must have a username or a custom_id"),
        ("consumers[3].id", "must be a UUID; got 'not-a-uuid'"),
        ("consumers[4].hmacauth_credentials", "not supported yet"),
    ]


# -- environment substitution ----------------------------------------------------------------------


def test_env_substitution_both_syntaxes() -> None:
    config = parse(
        """
        services:
        - name: ${NAME}
          url: http://${HOST}:${{ env "DECK_PORT" }}${{env "DECK_BASE"}}
          routes:
          - paths: ["/${PREFIX}", "/cost$5", "/lit$${X}"]
        """,
        env={"NAME": "svc", "HOST": "h", "DECK_PORT": "9000", "DECK_BASE": "/b", "PREFIX": "api"},
    )
    [service] = config.services
    assert (service.name, service.host, service.port, service.path) == ("svc", "h", 9000, "/b")
    assert service.routes[0].paths == ("/api", "/cost$5", "/lit${X}")


def test_substituted_values_are_not_re_expanded() -> None:
    config = parse("services: [{name: '${A}', host: a}]\n", env={"A": "${B}", "B": "no"})
    assert config.services[0].name == "${B}"


def test_missing_env_var_is_reported_at_its_key_only() -> None:
    assert problems(
        """
        services:
        - url: ${UPSTREAM}
          routes:
          - paths: ['${{ env "DECK_PREFIX" }}']
        """
    ) == [
        ("services[0].url", 'environment variable "UPSTREAM" is not set'),
        ("services[0].routes[0].paths[0]", 'environment variable "DECK_PREFIX" is not set'),
    ]


def test_bad_substitution_syntax_is_reported() -> None:
    assert problems(
        """
        services:
        - name: ${unclosed
          host: ${{ lower "x" }}
          tags: ["${not a name}"]
        """
    ) == [
        ("services[0].name", 'unterminated "${" (write "$${" for a literal "${")'),
        ("services[0].host", 'expected ${{ env "NAME" }}'),
        ("services[0].tags[0]", 'invalid environment variable name "not a name"'),
    ]


def test_whole_value_substitution_stays_a_string() -> None:
    assert problems("services: [{host: a, port: '${PORT}'}]\n", env={"PORT": "9000"}) == [
        ("services[0].port", "must be an integer")
    ]
    config = parse("services: [{host: a, name: '${N}'}]\n", env={"N": "123"})
    assert config.services[0].name == "123"


def test_env_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTGW_TEST_HOST", "from-os")
    config = parse_config(HEADER + "services: [{host: '${FASTGW_TEST_HOST}'}]\n")
    assert config.services[0].host == "from-os"


# -- _fastgw settings ------------------------------------------------------------------------------


def test_fastgw_section_overrides_every_setting() -> None:
    settings = parse(
        """
        _fastgw:
          listen: ":8080"
          admin_listen: "[::1]:9901"
          workers: 4
          max_head_size: 16384
          max_headers: 50
          max_uri_size: 4096
          head_timeout: 5
          keepalive_timeout: 2.5
          max_body_size: 1048576
          upstream_pool_size: 0
          upstream_idle_timeout: 30
          upstream_max_requests: 0
          drain_timeout: 0
          drain_grace: 2
          request_body_timeout: 30
          request_body_min_rate: 0
          limit_conn_per_address: 10
          ssl_handshake_timeout: 5
        """
    ).settings
    assert settings.listen == ("0.0.0.0", 8080)
    assert settings.admin_listen == ("::1", 9901)
    assert settings.workers == 4
    assert settings.limits == Limits(
        max_head_size=16384,
        max_headers=50,
        max_uri_size=4096,
        head_timeout=5.0,
        keepalive_timeout=2.5,
        max_body_size=1048576,
        upstream_pool_size=0,
        upstream_idle_timeout=30.0,
        upstream_max_requests=0,
        drain_timeout=0.0,
        drain_grace=2.0,
        request_body_timeout=30.0,
        request_body_min_rate=0,
        limit_conn_per_address=10,
        ssl_handshake_timeout=5.0,
    )
    assert isinstance(settings.limits.head_timeout, float)


# `off` as --admin-listen takes it: bare (YAML reads it as false), quoted, or in JSON
@pytest.mark.parametrize("value", ["null", "false", "off", '"off"', '"OFF"'])
def test_admin_listen_can_be_disabled(value: str) -> None:
    assert parse(f"_fastgw: {{admin_listen: {value}}}\n").settings.admin_listen is None


def test_workers_auto_uses_the_cpu_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    assert parse("_fastgw: {workers: auto}\n").settings.workers == 6
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert parse("_fastgw: {workers: auto}\n").settings.workers == 1


def test_fastgw_section_errors() -> None:
    assert problems(
        """
        _fastgw:
          listen: "0.0.0.0"
          admin_listen: true
          workers: many
          max_headers: 0
          head_timeout: 0
          keepalive_timeout: fast
          max_body_size: -1
        """
    ) == [
        ("_fastgw.listen", 'must be "host:port", "[ipv6]:port" or ":port"; got \'0.0.0.0\''),
        ("_fastgw.admin_listen", 'must be a string such as "127.0.0.1:8000"'),
        ("_fastgw.workers", "must be an integer >= 1 or \"auto\"; got 'many'"),
        ("_fastgw.max_headers", "must be >= 1"),
        ("_fastgw.head_timeout", "must be > 0"),
        ("_fastgw.keepalive_timeout", "must be a number"),
        ("_fastgw.max_body_size", "must be >= 0"),
    ]
    assert problems("_fastgw: {workers: 0}\n") == [("_fastgw.workers", "must be >= 1")]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.0.1:8000", ("127.0.0.1", 8000)),
        ("[::1]:8000", ("::1", 8000)),
        ("[::]:80", ("::", 80)),
        (":8000", ("0.0.0.0", 8000)),
        ("localhost:0", ("localhost", 0)),
    ],
)
def test_parse_listen(value: str, expected: tuple[str, int]) -> None:
    assert parse_listen(value, "listen") == expected


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("8000", 'must be "host:port", "[ipv6]:port" or ":port"; got \'8000\''),
        ("::1:8000", "IPv6 addresses need brackets, as in \"[::1]:8000\"; got '::1:8000'"),
        ("[::g]:80", "has an invalid IPv6 address; got '[::g]:80'"),
        ("host:http", "has an invalid port; got 'host:http'"),
        ("host:", "has an invalid port; got 'host:'"),
        ("host:65536", "port must be <= 65535; got 'host:65536'"),
        ("bad host:80", "has an invalid host; got 'bad host:80'"),
        ("0.0.0.0:8000 reuseport", "has an invalid port; got '0.0.0.0:8000 reuseport'"),
    ],
)
def test_parse_listen_errors_name_the_key(value: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_listen(value, "_fastgw.listen")
    assert caught.value.problems == [("_fastgw.listen", reason)]


def test_config_objects_are_frozen() -> None:
    config = parse("services: [{host: a, routes: [{paths: [/]}]}]\n")
    with pytest.raises(AttributeError):
        config.services[0].host = "b"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        config.services[0].routes[0].paths = ()  # type: ignore[misc]
