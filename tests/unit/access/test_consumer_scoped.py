"""Plugins scoped to a consumer: Kong's precedence (route + consumer > service + consumer >
route + service > consumer > route > service > global), resolved when the request reaches the
plugin (after authentication), and nothing changed for routes without such plugins."""

from __future__ import annotations

from typing import Any

import pytest
from access_wire import answer, get, wire

from fastgw.config import ConfigError, parse_config
from fastgw.config.consumers import Consumer
from fastgw.plugins.api import Authenticated, Credential, LogContext, Plugin, RouteInfo
from fastgw.proxy.chain import ConsumerScoped

CONSUMERS = """
consumers:
  - username: alice
    keyauth_credentials: [{key: alice-key}]
  - username: bob
    keyauth_credentials: [{key: bob-key}]
"""


def terminate(status: int) -> str:
    return f"{{name: request-termination, config: {{status_code: {status}, message: '{status}'}}}}"


def statuses(w: Any) -> tuple[int, int, int]:
    """(alice, bob, nobody): what each gets."""
    alice = w.exchange(get("/x", "apikey: alice-key"), answer()).status
    bob = w.exchange(get("/x", "apikey: bob-key"), answer()).status
    nobody = w.exchange(get("/x"), answer()).status
    return alice, bob, nobody


def gateway(plugins: str, consumer_plugins: str = "", route_plugins: str = "") -> Any:
    return wire(
        CONSUMERS.replace(
            "    keyauth_credentials: [{key: alice-key}]",
            "    keyauth_credentials: [{key: alice-key}]" + consumer_plugins,
        )
        + f"""
services:
  - name: api
    url: http://127.0.0.1:9
    routes:
      - name: r
        paths: [/]
        plugins: [{route_plugins}]
plugins:
  - {{name: key-auth, config: {{anonymous: bob}}}}
{plugins}
"""
    )


def test_a_plugin_on_the_consumer_beats_the_same_plugin_on_the_route() -> None:
    w = gateway(f"  - {{consumer: alice, {terminate(401)[1:]}", route_plugins=terminate(418))
    assert statuses(w) == (401, 418, 418)


def test_consumers_nested_plugins_are_the_consumers_own() -> None:
    w = gateway("", consumer_plugins=f"\n    plugins: [{terminate(402)}]")
    assert statuses(w) == (402, 200, 200)


def test_kongs_order_route_and_consumer_then_service_and_consumer() -> None:
    plugins = (
        f"  - {{consumer: alice, {terminate(403)[1:]}\n"
        f"  - {{consumer: alice, service: api, {terminate(402)[1:]}\n"
        f"  - {{consumer: bob, service: api, {terminate(405)[1:]}\n"
        f"  - {{consumer: alice, route: r, {terminate(409)[1:]}\n"
    )
    assert statuses(gateway(plugins)) == (409, 405, 405)  # nobody falls back to bob (anonymous)


def test_a_route_and_service_plugin_beats_a_consumer_only_one() -> None:
    plugins = (
        f"  - {{consumer: alice, {terminate(403)[1:]}\n"
        f"  - {{service: api, route: r, {terminate(418)[1:]}\n"
    )
    assert statuses(gateway(plugins)) == (418, 418, 418)
    # the route alone does not
    assert statuses(
        gateway(f"  - {{consumer: alice, {terminate(403)[1:]}\n", route_plugins=terminate(418))
    ) == (403, 418, 418)


def test_a_disabled_consumer_plugin_switches_it_off_for_that_consumer() -> None:
    plugins = f"  - {{consumer: alice, enabled: false, {terminate(403)[1:]}\n  - {terminate(418)}\n"
    assert statuses(gateway(plugins)) == (200, 418, 418)


def test_authentication_plugins_and_acl_cannot_be_scoped_to_a_consumer() -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config(
            '_format_version: "3.0"\n'
            + CONSUMERS
            + "    plugins: [{name: acl, config: {allow: [a]}}]\n"
            + "plugins: [{name: key-auth, consumer: alice},"
            + " {name: request-termination, consumer: carol}]",
            env={},
        )
    assert raised.value.problems == [
        (
            "consumers[1].plugins[0].consumer",
            "value must be null (acl cannot be scoped to a consumer, as in Kong: it runs "
            "before anyone is known)",
        ),
        (
            "plugins[0].consumer",
            "value must be null (key-auth cannot be scoped to a consumer, as in Kong: it runs "
            "before anyone is known)",
        ),
        ("plugins[1].consumer", 'unknown consumer "carol"'),
    ]


def test_a_nested_plugin_naming_another_entity_is_refused() -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config(
            '_format_version: "3.0"\n'
            "services: [{host: a, plugins: [{name: request-termination, consumer: x}]}]",
            env={},
        )
    assert raised.value.problems[0][0] == "services[0].plugins[0].consumer"
    assert raised.value.problems[0][1].startswith("value must be null")


def test_a_route_without_consumer_plugins_keeps_its_chain_as_it_was() -> None:
    plain = _chain(gateway("", route_plugins=terminate(418)))
    assert [type(p).__name__ for p in plain.plugins] == ["KeyAuth", "RequestTermination"]
    scoped = _chain(gateway(f"  - {{consumer: alice, {terminate(403)[1:]}\n"))
    assert [type(p).__name__ for p in scoped.plugins] == ["KeyAuth", "ConsumerScoped"]


def _chain(w: Any) -> Any:
    target = w.gateway.runtime.router.match(b"GET", b"gw.test", b"/x")
    assert target is not None and target.chain is not None
    return target.chain


class _Logs(Plugin):
    name = "logs"
    has_log = True

    def __init__(self) -> None:
        self.seen: list[str] = []

    def log(self, ctx: LogContext, route: RouteInfo) -> None:
        self.seen.append("logged")


class _Ctx:
    principal: object = None


def test_the_log_phase_uses_the_instance_the_consumer_had() -> None:
    default, alice_own = _Logs(), _Logs()
    alice = Consumer("a-id", "alice", None)
    step = ConsumerScoped(default, {"a-id": alice_own, "b-id": None})
    assert step.has_log and step.name == "logs"
    ctx: Any = _Ctx()
    route = RouteInfo("api", "r", None, None)  # a real one: the compiled step checks its type
    ctx.principal = Authenticated(alice, Credential("keyauth_credentials", "k"))
    step.log(ctx, route)
    ctx.principal = Authenticated(Consumer("b-id", "bob", None), None)
    step.log(ctx, route)
    ctx.principal = None
    step.log(ctx, route)
    assert (alice_own.seen, default.seen) == (["logged"], ["logged"])
