"""Building a runtime from a config, and what a reload carries over from the previous one."""

from __future__ import annotations

from fastgw.config import parse_config
from fastgw.http.timers import Ticker
from fastgw.plugins.building import PluginRuntime
from fastgw.proxy.runtime import build_runtime


def config(message: str, port: int = 9, route: str = "/a") -> str:
    return f"""
_format_version: "3.0"
services:
  - name: s
    url: http://127.0.0.1:{port}
    routes:
      - name: r
        paths: ["{route}"]
        plugins:
          - name: request-termination
            config: {{status_code: 403, message: "{message}"}}
          - name: prometheus
            config: {{status_code_metrics: true}}
"""


def no_clients() -> PluginRuntime:
    def refuse(verify_tls: bool, keepalive: bool) -> object:
        raise AssertionError("no plugin here needs an HTTP client")

    return PluginRuntime(http_client=refuse)  # type: ignore[arg-type]


def test_a_reload_keeps_unchanged_plugins_pools_and_counters_and_retires_the_rest() -> None:
    ticker = Ticker()
    first = build_runtime(parse_config(config("no")), ticker, no_clients)
    assert len(first.fresh) == 2
    stats = first.route_stats[("s", "r")]
    stats.record(403, False, 1.0, -1.0, 1.0, 10, 10)

    second = build_runtime(parse_config(config("still no", route="/b")), ticker, no_clients, first)
    kept = {slot.plugin.name: slot.plugin for slot in second.slots}
    old = {slot.plugin.name: slot.plugin for slot in first.slots}
    assert kept["prometheus"] is old["prometheus"]  # same config: the same instance
    assert kept["request-termination"] is not old["request-termination"]
    assert second.fresh == [kept["request-termination"]]
    assert [slot.plugin for slot in second.retired_plugins] == [old["request-termination"]]
    assert second.pools[0][1] is first.pools[0][1]  # same service address: same pool
    assert second.route_stats[("s", "r")] is stats  # counters go on across the reload
    assert second.router.match(b"GET", b"h", b"/b/x") is not None
    assert second.router.match(b"GET", b"h", b"/a/x") is None

    third = build_runtime(parse_config(config("still no", port=10)), ticker, no_clients, second)
    assert third.pools[0][1] is not second.pools[0][1]
    assert third.retired_pools == [second.pools[0][1]]
    assert third.fresh == []
