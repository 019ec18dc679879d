"""http-log's and tcp-log's config: Kong's keys and defaults, Kong's messages, Kong's deprecated
keys with their warnings, and the endpoint's credentials kept out of every message."""

from __future__ import annotations

import base64
import json

import pytest

from fastgw.config import parse_config
from fastgw.errors import ConfigError
from fastgw.plugins.http_log.schema import HttpLogConfig
from fastgw.plugins.kong_log.settings import QueueSettings
from fastgw.plugins.tcp_log.schema import TcpLogConfig

SECRET = "s3cret-pw"


def document(name: str, config: dict) -> str:
    return json.dumps(
        {
            "_format_version": "3.0",
            "services": [{"name": "s", "url": "http://127.0.0.1:9", "routes": [{"paths": ["/"]}]}],
            "plugins": [{"name": name, "config": config}],
        }
    )


def http_log(**config: object) -> HttpLogConfig:
    parsed = parse_config(document("http-log", config), env={}).plugins[0].config
    assert isinstance(parsed, HttpLogConfig)
    return parsed


def problems(name: str, **config: object) -> dict[str, str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(document(name, config), env={})
    return dict(caught.value.problems)


def test_kongs_defaults() -> None:
    config = http_log(http_endpoint="https://logs.test/in")
    assert config.method == "POST" and config.content_type == "application/json"
    assert config.timeout == 10.0 and config.keepalive == 60.0
    assert config.headers == () and config.ssl_verify is False
    assert config.queue == QueueSettings()
    assert config.queue.max_batch_size == 1 and config.queue.max_entries == 10_000
    assert config.endpoint.url == "https://logs.test/in"
    assert (
        config.endpoint.label == "https://logs.test:443" and config.endpoint.authorization is None
    )


def test_user_info_becomes_basic_credentials_and_leaves_the_url_and_label() -> None:
    config = http_log(http_endpoint=f"http://bob:{SECRET}@logs.test:9000/in?tag=a")
    assert config.endpoint.url == "http://logs.test:9000/in?tag=a"
    assert config.endpoint.label == "http://logs.test:9000"
    basic = base64.b64encode(f"bob:{SECRET}".encode()).decode()
    assert config.endpoint.authorization == f"Basic {basic}"


def test_user_info_and_an_authorization_header_together_are_refused() -> None:
    found = problems(
        "http-log",
        http_endpoint=f"http://bob:{SECRET}@logs.test/",
        headers={"authorization": "Bearer x"},
    )
    assert found == {
        "plugins[0].config": "specifying both an 'Authorization' header and user info in "
        "'http_endpoint' is not allowed"
    }


def test_a_bad_endpoint_is_refused_without_quoting_it() -> None:
    assert problems("http-log") == {"plugins[0].config.http_endpoint": "is required"}
    for url, reason in (
        (f"logs.test/{SECRET}", "missing scheme in url"),
        (f"ftp://logs.test/{SECRET}", "must be an http or https URL"),
        (f"http://:{SECRET}@/x", "missing host in url"),
        (f"http://logs.test:99999/{SECRET}", "could not parse url. invalid port"),
    ):
        found = problems("http-log", http_endpoint=url)
        assert found == {"plugins[0].config.http_endpoint": reason}
        assert SECRET not in repr(found)


def test_kongs_choices_and_header_rules() -> None:
    found = problems(
        "http-log",
        http_endpoint="http://logs.test/",
        method="GET",
        content_type="text/plain",
        headers={"Host": "x", "content-length": "1", "Content-Type": "y", "bad name": "z"},
    )
    assert found["plugins[0].config.method"].startswith("must be one of POST, PUT, PATCH")
    assert found["plugins[0].config.content_type"].startswith(
        "must be one of application/json, application/json; charset=utf-8"
    )
    assert found["plugins[0].config.headers.Host"] == "cannot contain 'Host' header"
    assert found["plugins[0].config.headers.content-length"] == (
        "cannot contain 'Content-Length' header"
    )
    assert found["plugins[0].config.headers.Content-Type"] == "cannot contain 'Content-Type' header"
    assert found["plugins[0].config.headers"] == (
        "bad header name 'bad name', allowed characters are A-Z, a-z, 0-9, '_', and '-'"
    )


def test_the_queue_record_and_its_bounds() -> None:
    config = http_log(
        http_endpoint="http://logs.test/",
        queue={
            "max_batch_size": 50,
            "max_coalescing_delay": 0.5,
            "max_entries": 200,
            "max_bytes": 65536,
            "max_retry_time": 5,
            "initial_retry_delay": 0.1,
            "max_retry_delay": 2,
            "concurrency_limit": -1,
        },
    )
    assert config.queue == QueueSettings(50, 0.5, 200, 65536, 5, 0.1, 2, -1)
    found = problems(
        "http-log",
        http_endpoint="http://logs.test/",
        queue={"max_batch_size": 0, "max_entries": 2_000_000, "concurrency_limit": 2},
    )
    assert set(found) == {
        "plugins[0].config.queue.max_batch_size",
        "plugins[0].config.queue.max_entries",
        "plugins[0].config.queue.concurrency_limit",
    }


def test_kongs_deprecated_keys_still_work_with_kongs_warnings() -> None:
    text = document(
        "http-log",
        {"http_endpoint": "http://logs.test/", "retry_count": 1, "queue_size": 20,
         "flush_timeout": 5},
    )  # fmt: skip
    parsed = parse_config(text, env={})
    config = parsed.plugins[0].config
    assert config.queue.max_batch_size == 20 and config.queue.max_coalescing_delay == 5.0
    warnings = dict(parsed.warnings)
    assert warnings["plugins[0].config.retry_count"] == (
        "http-log: config.retry_count no longer works, please use config.queue.max_retry_time "
        "instead"
    )
    assert warnings["plugins[0].config.queue_size"] == (
        "http-log: config.queue_size is deprecated, please use config.queue.max_batch_size instead"
    )
    assert "config.queue.max_coalescing_delay" in warnings["plugins[0].config.flush_timeout"]


def test_lua_and_mutual_tls_are_refused_naming_the_key() -> None:
    found = problems(
        "http-log",
        http_endpoint="http://logs.test/",
        custom_fields_by_lua={"x": "return 1"},
        client_certificate={"id": "c"},
    )
    assert found == {
        "plugins[0].config.custom_fields_by_lua": "not supported: fastgw runs no Lua",
        "plugins[0].config.client_certificate": "not supported yet (mutual TLS towards the "
        "endpoint)",
    }
    assert problems("http-log", http_endpoint="http://logs.test/", timeout=0) == {
        "plugins[0].config.timeout": "must be > 0"
    }


def test_tcp_log_keys_and_defaults() -> None:
    text = document("tcp-log", {"host": "127.0.0.1", "port": 8080})
    config = parse_config(text, env={}).plugins[0].config
    assert isinstance(config, TcpLogConfig)
    assert (config.timeout, config.keepalive, config.tls, config.tls_sni) == (
        10.0,
        60.0,
        False,
        None,
    )
    assert config.label == "tcp://127.0.0.1:8080"
    found = problems("tcp-log", port=70000, tls="yes", extra=1)
    assert found == {
        "plugins[0].config.host": "is required",
        "plugins[0].config.port": "must be <= 65535",
        "plugins[0].config.tls": "must be a boolean",
        "plugins[0].config.extra": "unknown field",
    }
