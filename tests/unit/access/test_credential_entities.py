"""Kong's credential entities and consumer-scoped plugins as the config reads them: nested
under a consumer or at the top level naming one, Kong's checks and messages, the shape of the
file `kong config init` writes with its examples un-commented."""

from __future__ import annotations

import pytest

from fastgw.config import ConfigError, parse_config


def problems(body: str) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as raised:
        parse_config('_format_version: "3.0"\n' + body, env={})
    return raised.value.problems


def test_nested_and_top_level_credentials_belong_to_their_consumer() -> None:
    config = parse_config(
        """
_format_version: "3.0"
consumers:
  - username: alice
    keyauth_credentials: [{key: k1}, {key: k2, consumer: alice}]
    acls: [{group: admin}]
  - username: bob
    id: 5d6f0a7e-3b2c-4d1e-9f8a-7b6c5d4e3f2a
keyauth_credentials: [{key: k3, consumer: bob}]
basicauth_credentials: [{username: b, password: p, consumer: 5d6f0a7e-3b2c-4d1e-9f8a-7b6c5d4e3f2a}]
jwt_secrets: [{key: iss-1, secret: s, consumer: {username: alice}}]
acls: [{group: ops, consumer: bob}]
""",
        env={},
    )
    credentials = config.credentials
    assert [(c.consumer.username, c.key) for c in credentials.keyauth_credentials] == [
        ("alice", "k1"), ("alice", "k2"), ("bob", "k3"),
    ]  # fmt: skip
    assert [c.consumer.username for c in credentials.basicauth_credentials] == ["bob"]
    assert [(c.consumer.username, c.algorithm) for c in credentials.jwt_secrets] == [
        ("alice", "HS256")
    ]
    assert [(c.consumer.username, c.group) for c in credentials.acls] == [
        ("alice", "admin"), ("bob", "ops"),
    ]  # fmt: skip
    # ids are stable (the same in every worker and after a restart) and never show the key
    again = parse_config(
        '_format_version: "3.0"\nconsumers: [{username: alice, keyauth_credentials: [{key: k1}]}]',
        env={},
    )
    assert again.credentials.keyauth_credentials[0].id == credentials.keyauth_credentials[0].id
    assert "k1" not in repr(credentials.keyauth_credentials[0])


def test_kongs_reference_and_uniqueness_rules() -> None:
    assert problems(
        """
consumers:
  - username: alice
    keyauth_credentials: [{key: same}, {key: other, consumer: bob}]
    acls: [{group: g}, {group: g}]
  - username: bob
    keyauth_credentials: [{key: same}]
keyauth_credentials: [{key: lone}, {key: x, consumer: carol}]
basicauth_credentials: [{username: u, consumer: bob}]
"""
    ) == [
        (
            "consumers[0].keyauth_credentials[1].consumer",
            "value must be null (a nested credential belongs to the consumer it is under)",
        ),
        ("consumers[0].acls[1].group", "is already used by consumers[0].acls[0]"),
        (
            "consumers[1].keyauth_credentials[0].key",
            "is already used by consumers[0].keyauth_credentials[0]",
        ),
        ("keyauth_credentials[0].consumer", "is required"),
        ("keyauth_credentials[1].consumer", 'unknown consumer "carol"'),
        ("basicauth_credentials[0].password", "is required"),
    ]


def test_a_credential_without_its_secret_is_left_out_with_a_warning() -> None:
    config = parse_config(
        '_format_version: "3.0"\n'
        "consumers: [{username: a, keyauth_credentials: [{}], jwt_secrets: [{key: k}]}]",
        env={},
    )
    assert len(config.credentials) == 0
    assert [path for path, _ in config.warnings] == [
        "consumers[0].keyauth_credentials[0].key",
        "consumers[0].jwt_secrets[0].secret",
    ]


def test_unsupported_credentials_of_other_plugins_say_so() -> None:
    assert problems("consumers: [{username: a, oauth2_credentials: [{name: x}], groups: []}]") == [
        ("consumers[0].oauth2_credentials", "not supported yet")
    ]


def test_the_file_kong_config_init_writes_with_its_examples_in_place() -> None:
    """The template's shape (kong/templates/kong_yml.lua): annotations on every entity, a
    plugin nested in a consumer with `_comment`, a top-level plugin naming a consumer and a
    service (rate-limiting there: request-termination stands in for it here)."""
    config = parse_config(
        """
_format_version: "3.0"
_transform: true
_comment: This is a top level comment, and must be a string
_ignore:
- This array entry will be ignored
- as well as this one
services:
- name: example-service
  url: http://example.com
  tags: [example]
  routes:
  - name: example-route
    paths: [/]
  plugins:
  - name: key-auth
- name: another-service
  url: https://example.org
routes:
- name: another-route
  service: example-service
  hosts: ["hello.com"]
consumers:
- username: example-user
  keyauth_credentials:
  - key: my-key
  plugins:
  - name: request-termination
    _comment: "these are default answers for user example-user"
    config: {status_code: 429}
plugins:
- name: request-termination
  consumer: example-user
  service: another-service
  _comment: "example-user is extra limited when using another-service"
  config: {status_code: 403}
  tags: [extra_limits, my_tag]
""",
        env={},
    )
    [nested] = config.consumer_plugins
    [top] = config.services[1].consumer_plugins
    assert nested.consumer == top.consumer == config.consumers.all[0].id
    assert (nested.config.status_code, top.config.status_code) == (429, 403)
