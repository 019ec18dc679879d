"""Warnings from config loading to the user: a plugin's deprecated key (a declared shorthand)
ends in GatewayConfig.warnings with its key path, and `fastgw check` prints it after the
summary. The plugin is a small real one, registered for the test."""

from __future__ import annotations

import logging
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import fastgw.plugins
from fastgw import cli
from fastgw.config import parse_config
from fastgw.config.schema import Integer, Reader, Shorthand, Text, apply_shorthands
from fastgw.plugins.building import SpecBase

NAME = "deprecated-keys-test"
SHORTHANDS = (Shorthand("redis_host", ("redis", "host"), Text()),)


class _Spec(SpecBase):
    """Shaped like Kong's rate-limiting: `redis_host` is Kong 3's old spelling of redis.host."""

    name = NAME

    def parse_config(self, reader: Reader) -> dict[str, Any]:
        apply_shorthands(reader, SHORTHANDS)
        redis = reader.mapping("redis")
        config = {
            "host": redis.string("host", "127.0.0.1"),
            "port": Integer(6379).read(redis, "port"),
        }
        redis.finish()
        reader.finish()
        return config


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    module = types.ModuleType("fastgw_test_deprecated_plugin")
    module.SPEC = _Spec()  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(fastgw.plugins._MODULES, NAME, module.__name__)
    fastgw_logger = logging.getLogger("fastgw")
    level = fastgw_logger.level
    yield
    fastgw_logger.setLevel(level)  # `fastgw check` silences the logger


DOCUMENT = f"""
_format_version: "3.0"
services:
- name: api
  url: http://127.0.0.1:9
  routes: [{{paths: [/]}}]
  plugins:
  - name: {NAME}
    config: {{redis_host: cache.internal}}
"""


def test_a_deprecated_key_is_a_warning_of_the_config(registered: None) -> None:
    config = parse_config(DOCUMENT, env={})
    [entry] = config.plugin_entries()
    assert entry.config == {"host": "cache.internal", "port": 6379}
    assert config.warnings == (
        (
            "services[0].plugins[0].config.redis_host",
            "is deprecated, please use redis.host instead",
        ),
    )
    current = DOCUMENT.replace("{redis_host: cache.internal}", "{redis: {host: cache.internal}}")
    assert parse_config(current, env={}).warnings == ()


def test_check_prints_warnings_after_the_summary(
    registered: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "kong.yml"
    path.write_text(DOCUMENT)
    assert cli.main(["check", "-c", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"{path}: ok (1 services, 1 routes, 1 plugins, 0 consumers)",
        "services[0].plugins[0].config.redis_host: warning: is deprecated, please use redis.host"
        " instead",
    ]


def test_plugin_entries_are_global_then_each_service_then_its_routes() -> None:
    config = parse_config(
        """
_format_version: "3.0"
services:
- name: a
  host: a
  routes: [{name: ra, paths: [/a], plugins: [{name: request-termination}]}]
  plugins: [{name: prometheus}]
- name: b
  host: b
  routes: [{name: rb, paths: [/b]}]
routes:
- {name: rc, service: a, paths: [/c]}
plugins:
- {name: file-log, config: {path: /tmp/fastgw-test.log}}
- {name: request-termination, route: rc}
- {name: request-termination, service: b}
""",
        env={},
    )
    assert [entry.path for entry in config.plugin_entries()] == [
        "plugins[0]",
        "services[0].plugins[0]",
        "services[0].routes[0].plugins[0]",
        "plugins[1]",  # on route rc, the second route of service a
        "plugins[2]",  # on service b
    ]
