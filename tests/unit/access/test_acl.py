"""acl through a real gateway, after key-auth (the consumer's `acls`) and after a plugin that
authenticates groups (as openid-connect's authenticated_groups_claim does): Kong's decision
table, its 401/403, the groups headers."""

from __future__ import annotations

import json
import sys
import types
from collections.abc import Iterator
from typing import Any

import pytest
from access_wire import answer, get, upstream_headers, wire

import fastgw.plugins
from fastgw.config import ConfigError, parse_config
from fastgw.config.schema import Reader
from fastgw.plugins.api import Authenticated, Credential, Plugin, RequestContext
from fastgw.plugins.building import PluginRuntime, SpecBase

CONSUMERS = """
consumers:
  - username: alice
    keyauth_credentials: [{key: alice-key}]
    acls: [{group: admin}, {group: ops}]
  - username: bob
    keyauth_credentials: [{key: bob-key}]
  - username: guest
"""


def acl(config: str, auth: str = "{name: key-auth, config: {anonymous: guest}}") -> Any:
    return wire(CONSUMERS + f"plugins:\n  - {auth}\n  - {{name: acl, config: {config}}}\n")


def status_and_message(response: Any) -> tuple[int, str]:
    return response.status, json.loads(response.body).get("message") if response.body else ""


def test_allow_lets_a_member_in_and_sends_its_groups() -> None:
    w = acl("{allow: [admin]}")
    assert w.exchange(get("/x", "apikey: alice-key"), answer()).status == 200
    assert upstream_headers(w.forwarded[-1])["x-consumer-groups"] == ["admin, ops"]


def test_kongs_403_for_an_authenticated_outsider_and_401_for_the_anonymous() -> None:
    w = acl("{allow: [admin]}")
    assert status_and_message(w.exchange(get("/x", "apikey: bob-key"))) == (
        403,
        "You cannot consume this service",
    )
    # the anonymous consumer has no credential and no groups: 401
    assert status_and_message(w.exchange(get("/x"))) == (401, "Unauthorized")


def test_deny_blocks_members_and_lets_the_rest_through() -> None:
    w = acl("{deny: [ops]}")
    assert w.exchange(get("/x", "apikey: alice-key")).status == 403
    assert w.exchange(get("/x", "apikey: bob-key"), answer()).status == 200
    assert upstream_headers(w.forwarded[-1])["x-consumer-groups"] == [""]


def test_hide_groups_header_sends_none_and_leaves_no_client_copy() -> None:
    w = acl("{allow: [admin], hide_groups_header: true}")
    assert w.exchange(get("/x", "apikey: alice-key"), answer()).status == 200
    assert "x-consumer-groups" not in upstream_headers(w.forwarded[-1])


def test_allow_or_deny_exactly_one() -> None:
    def problem(config: str) -> list[tuple[str, str]]:
        with pytest.raises(ConfigError) as raised:
            parse_config(
                f'_format_version: "3.0"\nplugins: [{{name: acl, config: {config}}}]', env={}
            )
        return raised.value.problems

    assert problem("{allow: [a], deny: [b]}") == [
        (
            "plugins[0].config",
            "exactly one of these fields must be non-empty: 'config.allow', 'config.deny'",
        )
    ]
    assert problem("{allow: []}") == [
        (
            "plugins[0].config",
            "at least one of these fields must be non-empty: 'config.allow', 'config.deny'",
        )
    ]
    assert problem("{allow: [a], include_consumer_groups: true}")[0][0] == (
        "plugins[0].config.include_consumer_groups"
    )


# -- groups a plugin authenticated (openid-connect's authenticated_groups_claim) -------------------

GROUPS_AUTH = "groups-auth-test"


class GroupsAuth(Plugin):
    """`X-Groups: a,b` authenticates a credential of no consumer with those groups;
    `X-As: <username>` maps it to that consumer as well."""

    name = GROUPS_AUTH
    priority = 1050  # openid-connect's

    def __init__(self, runtime: PluginRuntime) -> None:
        self.consumers = runtime.consumers

    def access(self, ctx: RequestContext) -> None:
        raw = ctx.get_header(b"x-groups")
        username = ctx.get_header(b"x-as")
        consumer = self.consumers.find(username.decode(), "username") if username else None
        groups = tuple(raw.decode().split(",")) if raw is not None else None
        ctx.principal = Authenticated(consumer, Credential("openid-connect", "sub-1"), groups)


class _Spec(SpecBase):
    name = GROUPS_AUTH

    def parse_config(self, reader: Reader) -> dict[str, Any]:
        reader.finish()
        return {}

    def build(self, config: dict[str, Any], runtime: PluginRuntime) -> GroupsAuth:
        return GroupsAuth(runtime)


@pytest.fixture
def groups_auth(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    module = types.ModuleType("fastgw_test_groups_auth")
    module.SPEC = _Spec()  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(fastgw.plugins._MODULES, GROUPS_AUTH, module.__name__)
    yield


def test_authenticated_groups_decide_when_there_is_no_consumer(groups_auth: None) -> None:
    w = acl("{allow: [staff]}", f"{{name: {GROUPS_AUTH}}}")
    assert w.exchange(get("/x", "X-Groups: staff,dev"), answer()).status == 200
    assert upstream_headers(w.forwarded[-1])["x-authenticated-groups"] == ["staff, dev"]
    assert w.exchange(get("/x", "X-Groups: dev")).status == 403
    # a credential without groups: 403, Kong's "you cannot consume this service"
    assert w.exchange(get("/x")).status == 403


def test_a_consumer_with_a_credential_is_judged_by_its_acls_unless_told_otherwise(
    groups_auth: None,
) -> None:
    w = acl("{allow: [admin]}", f"{{name: {GROUPS_AUTH}}}")
    assert w.exchange(get("/x", "X-Groups: staff", "X-As: alice"), answer()).status == 200
    assert upstream_headers(w.forwarded[-1])["x-consumer-groups"] == ["admin, ops"]
    always = acl(
        "{allow: [admin], always_use_authenticated_groups: true}", f"{{name: {GROUPS_AUTH}}}"
    )
    assert always.exchange(get("/x", "X-Groups: staff", "X-As: alice")).status == 403
    assert always.exchange(get("/x", "X-As: alice"), answer()).status == 200  # no groups: acls
