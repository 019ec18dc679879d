"""Kong's annotations, `_comment` (a string) and `_ignore` (an array of anything): accepted at
the top level and on every entity, as Kong's declarative loader accepts them, and never
substituted."""

from __future__ import annotations

import json
import textwrap

import pytest

from fastgw.config import parse_config
from fastgw.errors import ConfigError
from tests.support.certs import TestCa

# What `kong config init` writes, in the same shape (our words): commented guidance, the two
# metadata keys, both annotations at the top level, and every entity commented out.
KONG_CONFIG_INIT = """\
# ------------------------------------------------------------------------------
# A starting point for a declarative configuration.
# ------------------------------------------------------------------------------

# Keys that start with an underscore are metadata; the others are entities.

# _format_version is required.
_format_version: "3.0"

# _transform: whether credentials are transformed (hashed) on import.
_transform: true

# Annotations: a _comment is a string, _ignore an array of anything; both may appear
# at the top level and at the top level of any entity.
_comment: A note on the whole file, which must be a string
_ignore:
- the loader skips this
- and this, whatever its type: {a: 1}

# services:
# - name: example-service
#   url: http://example.com
#   _comment: a service may carry one too
#   routes:
#   - name: example-route
#     paths: [/]
"""


def test_the_file_kong_config_init_writes_loads() -> None:
    config = parse_config(KONG_CONFIG_INIT, env={})
    assert (config.services, config.plugins, len(config.consumers)) == ((), (), 0)


def test_annotations_are_accepted_on_every_entity() -> None:
    ca = TestCa()
    cert, key = ca.server_certificate("a.test")
    note = {"_comment": "why this is here", "_ignore": [1, "two", {"three": None}]}
    document = {
        "_format_version": "3.0",
        **note,
        "_fastgw": {"listen": "127.0.0.1:8000", **note},
        "vaults": [{"name": "env", "prefix": "v", **note}],
        "ca_certificates": [{"cert": ca.pem, **note}],
        "consumers": [{"username": "alice", **note}],
        "certificates": [{"cert": cert, "key": key, "snis": [{"name": "a.test", **note}], **note}],
        "upstreams": [{"name": "u", "targets": [{"target": "10.0.0.1:80", **note}], **note}],
        "services": [
            {
                "name": "s",
                "host": "u",
                "routes": [
                    {
                        "name": "r",
                        "paths": ["/"],
                        "plugins": [{"name": "request-termination", **note}],
                        **note,
                    }
                ],
                "plugins": [{"name": "prometheus", **note}],
                **note,
            }
        ],
        "routes": [{"name": "t", "service": "s", "paths": ["/t"], **note}],
        "plugins": [{"name": "file-log", "config": {"path": "/tmp/fastgw.log"}, **note}],
    }
    config = parse_config(json.dumps(document), env={})
    assert [route.name for _, route in config.routes()] == ["r", "t"]
    assert len(list(config.plugin_entries())) == 3


def test_annotations_have_kongs_types() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(
            textwrap.dedent(
                """\
                _format_version: "3.0"
                _comment: [not, a, string]
                services:
                - {host: a, _ignore: not an array, _comment: 3}
                """
            ),
            env={},
        )
    assert caught.value.problems == [
        ("services[0]._comment", "must be a string"),
        ("services[0]._ignore", "must be an array"),
        ("_comment", "must be a string"),
    ]


def test_annotations_are_not_substituted() -> None:
    config = parse_config(
        '_format_version: "3.0"\n'
        "_comment: costs ${MISSING} and {vault://env/missing}\n"
        "_ignore: ['${ALSO_MISSING}', {x: '{vault://nope/x}'}]\n"
        "services: [{host: a, _comment: '${MISSING}'}]\n",
        env={},
    )
    assert config.services[0].host == "a"


def test_annotations_belong_to_entities_not_to_a_plugins_config() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(
            '_format_version: "3.0"\n'
            "plugins: [{name: request-termination, config: {_comment: x}}]\n"
            "_info: {_comment: x}\n",
            env={},
        )
    assert caught.value.problems == [
        ("_info._comment", "unknown field"),
        ("plugins[0].config._comment", "unknown field"),
    ]
