"""rate-limiting's config as Kong reads it: its keys and defaults, Kong's own messages for the
period order, sync_rate, the keys a policy or a limit_by requires, `cluster` refused as a
DB-less Kong refuses it, and Kong's deprecated redis_* keys moved to `redis` with a warning."""

from __future__ import annotations

import pytest

from fastgw.config import ConfigError, parse_config
from fastgw.plugins.rate_limiting import RateLimitingConfig

HEAD = """
_format_version: "3.0"
services: [{name: s, url: "http://127.0.0.1:9", routes: [{name: r, paths: [/]}]}]
plugins:
  - name: rate-limiting
    config: """


def config(body: str) -> RateLimitingConfig:
    loaded = parse_config(HEAD + body)
    (entry,) = loaded.plugins
    assert isinstance(entry.config, RateLimitingConfig)
    return entry.config


def problems(body: str) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as caught:
        parse_config(HEAD + body)
    return caught.value.problems


def test_kong_defaults() -> None:
    read = config("{minute: 5}")
    assert read.limits == (("minute", 5),)
    assert (read.limit_by, read.policy, read.fault_tolerant, read.sync_rate) == (
        "consumer",
        "local",
        True,
        -1,
    )
    assert (read.hide_client_headers, read.error_code, read.error_message) == (
        False,
        429,
        "API rate limit exceeded",
    )
    redis = read.redis
    assert (redis.host, redis.port, redis.timeout, redis.database) == (None, 6379, 2000, 0)
    assert (redis.ssl, redis.ssl_verify, redis.server_name) == (False, False, None)


def test_periods_shortest_first_and_fractions_allowed() -> None:
    read = config("{year: 100000, second: 2.5, hour: 100}")
    assert read.limits == (("second", 2.5), ("hour", 100), ("year", 100000))


def test_a_longer_period_may_not_allow_less_kongs_message() -> None:
    assert problems("{second: 20, hour: 10}") == [
        (
            "plugins[0].config",
            "The limit for hour(10.0) cannot be lower than the limit for second(20.0)",
        )
    ]
    config("{second: 10, minute: 10}")  # equal is fine


def test_at_least_one_limit() -> None:
    assert problems("{policy: local}") == [
        (
            "plugins[0].config",
            "at least one of these fields must be non-empty: 'config.second', 'config.minute', "
            "'config.hour', 'config.day', 'config.month', 'config.year'",
        )
    ]


def test_a_limit_is_greater_than_zero() -> None:
    assert problems("{minute: 0}")[0] == (
        "plugins[0].config.minute",
        "value must be greater than 0",
    )


def test_cluster_is_refused_as_a_dbless_kong_refuses_it() -> None:
    assert problems("{minute: 5, policy: cluster}") == [
        ("plugins[0].config.policy", "expected one of: local, redis")
    ]


def test_sync_rate_kongs_rules() -> None:
    assert problems("{minute: 5, sync_rate: 1}") == [
        ("plugins[0].config", "sync_rate can only be used with the redis policy")
    ]
    assert problems("{minute: 5, policy: redis, redis: {host: h}, sync_rate: 0.01}") == [
        ("plugins[0].config", "sync_rate must be greater than 0.02, or -1 to disable")
    ]
    assert config("{minute: 5, policy: redis, redis: {host: h}, sync_rate: 0.5}").sync_rate == 0.5


def test_what_a_policy_or_limit_by_requires() -> None:
    assert problems("{minute: 5, policy: redis}") == [
        ("plugins[0].config.redis.host", "required field missing")
    ]
    assert problems("{minute: 5, limit_by: header}") == [
        ("plugins[0].config.header_name", "required field missing")
    ]
    assert problems("{minute: 5, limit_by: path}") == [
        ("plugins[0].config.path", "required field missing")
    ]


def test_header_name_and_path_as_kongs_typedefs_check_them() -> None:
    assert problems("{minute: 5, limit_by: header, header_name: 'x y'}")[0] == (
        "plugins[0].config.header_name",
        "bad header name 'x y', allowed characters are A-Z, a-z, 0-9, '_', and '-'",
    )
    assert problems("{minute: 5, limit_by: path, path: /a//b}")[0] == (
        "plugins[0].config.path",
        "must not have empty segments",
    )
    assert problems("{minute: 5, limit_by: path, path: a}")[0] == (
        "plugins[0].config.path",
        "should start with: /",
    )


def test_error_code_is_an_error_status() -> None:
    assert config("{minute: 5, error_code: 503}").error_code == 503
    assert problems("{minute: 5, error_code: 200}") == [
        ("plugins[0].config.error_code", "must be an HTTP error status, between 400 and 599")
    ]


def test_unknown_keys_are_refused() -> None:
    assert problems("{minute: 5, namespace: x}") == [
        ("plugins[0].config.namespace", "unknown field")
    ]


def test_kongs_deprecated_redis_keys_move_to_the_record_with_a_warning() -> None:
    text = HEAD + "{minute: 5, policy: redis, redis_host: h, redis_port: 6380, redis_password: ''}"
    loaded = parse_config(text)
    (entry,) = loaded.plugins
    redis = entry.config.redis
    assert (redis.host, redis.port, redis.password) == ("h", 6380, "")
    messages = dict(loaded.warnings)
    assert messages["plugins[0].config.redis_host"] == (
        "rate-limiting: config.redis_host is deprecated, please use config.redis.host instead"
    )
    assert "plugins[0].config.redis_port" in messages


def test_a_deprecated_key_and_its_replacement_disagreeing_is_an_error() -> None:
    found = problems("{minute: 5, policy: redis, redis_host: a, redis: {host: b}}")
    assert found == [
        (
            "plugins[0].config.redis_host",
            "both deprecated and new field are used but their values mismatch: "
            "redis_host vs redis.host",
        )
    ]


KONG_DOCS_EXAMPLE = """
_format_version: "3.0"
services:
- name: example-service
  url: http://httpbin.konghq.com/anything
routes:
- name: example-route
  paths:
  - /anything
  service:
    name: example-service
  protocols:
  - http
  - https
plugins:
- name: rate-limiting
  config:
    second: 5
    hour: 1000
    policy: local
"""


def test_kongs_docs_example_loads() -> None:
    (entry,) = parse_config(KONG_DOCS_EXAMPLE).plugins
    assert entry.config.limits == (("second", 5), ("hour", 1000))


KONG_SPEC_SHAPE = """
_format_version: "1.1"
services:
- name: bar
  host: example.test
  port: 3000
  plugins:
  - name: rate-limiting
    config:
      minute: 200
      policy: redis
      redis:
        host: 127.0.0.1
plugins:
- name: correlation-id
  id: 467f719f-a544-4a8f-bc4b-7cd12913a9d4
  config:
    header_name: null
    generator: "uuid"
    echo_downstream: false
"""


def test_the_shapes_of_kongs_config_spec_load() -> None:
    loaded = parse_config(KONG_SPEC_SHAPE)
    (service,) = loaded.services
    (limiting,) = service.plugins
    assert limiting.config.policy == "redis" and limiting.config.redis.host == "127.0.0.1"
    assert limiting.config.redis.port == 6379 and limiting.config.redis.timeout == 2000
    (correlation,) = loaded.plugins
    assert correlation.config.header_name == "Kong-Request-ID"
