"""Kong's prometheus plugin on a real `fastgw run --workers 2`: exact counts summed over the
workers, Kong's names and labels, the openid-connect series, and `promtool check metrics`."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.request
from collections.abc import Callable, Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import Client, CliGateway, free_port
from tests.integration.oidc_support import echo_port  # noqa: F401  fixture, used by name
from tests.support.idp import BASIC_CLIENT, TestIdP, basic_auth_header

pytestmark = pytest.mark.integration

ROUTE_A_REQUESTS = 37  # to route a: 200 from the upstream
ROUTE_B_REQUESTS = 23  # to route b: 401 from openid-connect (no credentials)
CACHED_REQUESTS = 11  # to route c: 200 with a token from the cache (after the first)

# Names Kong itself exports that promtool's lint rules dislike (Kong's Grafana dashboard needs
# them as they are): gauges ending in _total, and "ms" for milliseconds.
KONG_NAMES_PROMTOOL_FLAGS = {
    'kong_nginx_connections_total non-counter metrics should not have "_total" suffix',
    'kong_nginx_requests_total non-counter metrics should not have "_total" suffix',
    "kong_kong_latency_ms metric names should not contain abbreviated units",
    "kong_upstream_latency_ms metric names should not contain abbreviated units",
    "kong_request_latency_ms metric names should not contain abbreviated units",
}


@pytest.fixture(scope="module")
def idp() -> Iterator[TestIdP]:
    with TestIdP(alg="RS256") as server:
        yield server


def config(echo_port: int, idp: TestIdP) -> str:
    oidc = {"issuer": idp.issuer, "auth_methods": ["client_credentials"], "timeout": 3000}
    document = {
        "_format_version": "3.0",
        "plugins": [
            {
                "name": "prometheus",
                "config": {
                    "status_code_metrics": True,
                    "latency_metrics": True,
                    "bandwidth_metrics": True,
                    "upstream_health_metrics": True,
                    "per_consumer": True,
                },
            }
        ],
        "services": [
            {
                "name": "echo",
                "url": f"http://127.0.0.1:{echo_port}",
                "routes": [
                    {"name": "a", "paths": ["/a"]},
                    {
                        "name": "b",
                        "paths": ["/b"],
                        "plugins": [{"name": "openid-connect", "config": oidc}],
                    },
                    {
                        "name": "c",
                        "paths": ["/c"],
                        "plugins": [{"name": "openid-connect", "config": oidc}],
                    },
                ],
            }
        ],
    }
    return json.dumps(document)


def get(port: int, path: str, headers: list[tuple[str, str]] | None = None) -> int:
    """One request on a connection of its own, so SO_REUSEPORT spreads them over the workers."""
    client = Client(port)
    try:
        return client.request("GET", path, [("Connection", "close"), *(headers or [])]).status
    finally:
        client.close()


def scrape(admin_port: int, path: str = "/metrics") -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}{path}", timeout=10) as response:
        return str(response.read().decode())


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(found: dict, name: str, **labels: str) -> float:
    """The one sample named `name` whose labels include `labels`."""
    matches = [
        v for (n, have), v in found.items() if n == name and set(labels.items()) <= set(have)
    ]
    assert len(matches) == 1, (name, labels, matches)
    return float(matches[0])


def test_one_scrape_counts_every_worker_exactly_in_kongs_names(
    run_cli: Callable[..., CliGateway],
    echo_port: int,
    idp: TestIdP,
) -> None:
    port, admin = free_port(), free_port()
    gateway = run_cli(
        config(echo_port, idp),
        "--workers", "2", "--admin-listen", f"127.0.0.1:{admin}",
        listen=f"127.0.0.1:{port}",
    )  # fmt: skip
    gateway.wait_listening(workers=2)
    basic = basic_auth_header(*BASIC_CLIENT)
    assert get(port, "/c/warm", [("Authorization", basic)]) == 200
    for _ in range(ROUTE_A_REQUESTS):
        assert get(port, "/a/x") == 200
    for _ in range(ROUTE_B_REQUESTS):
        assert get(port, "/b/x") == 401
    for _ in range(CACHED_REQUESTS):
        assert get(port, "/c/x", [("Authorization", basic)]) == 200

    text = scrape(admin)
    found = samples(text)
    status = json.loads(scrape(admin, "/status"))
    assert status["workers"] == 2
    kong = {"service": "echo", "workspace": "default"}
    assert (
        value(found, "kong_http_requests_total", route="a", code="200", source="service", **kong)
        == ROUTE_A_REQUESTS
    )
    assert (
        value(found, "kong_http_requests_total", route="b", code="401", source="kong", **kong)
        == ROUTE_B_REQUESTS
    )
    assert value(found, "kong_request_latency_ms_count", route="a", **kong) == ROUTE_A_REQUESTS
    assert value(found, "kong_kong_latency_ms_count", route="b", **kong) == ROUTE_B_REQUESTS
    # 401s never reached the upstream: no upstream latency observed for route b
    assert value(found, "kong_upstream_latency_ms_count", route="b", **kong) == 0
    assert (
        value(found, "kong_request_latency_ms_bucket", route="a", le="+Inf", **kong)
        == ROUTE_A_REQUESTS
    )
    assert value(found, "kong_bandwidth_bytes", route="a", direction="ingress", **kong) > 0
    assert value(found, "kong_bandwidth_bytes", route="a", direction="egress", **kong) > 0
    total = ROUTE_A_REQUESTS + ROUTE_B_REQUESTS + CACHED_REQUESTS + 1
    assert value(found, "kong_nginx_requests_total", subsystem="http") == total
    assert value(found, "kong_nginx_connections_total", state="accepted") == total
    assert value(found, "fastgw_http_requests_total") == total
    assert value(found, "kong_datastore_reachable") == 1  # once, not once per worker
    # openid-connect: the cached path counted; one IdP token call per worker at most
    route_c = "services[0].routes[2].plugins[0]"
    hits = value(found, "fastgw_oidc_token_cache_lookups_total", instance=route_c, result="hit")
    misses = value(found, "fastgw_oidc_token_cache_lookups_total", instance=route_c, result="miss")
    assert hits + misses == CACHED_REQUESTS + 1 and 1 <= misses <= 2
    token_calls = value(
        found, "fastgw_oidc_idp_requests_total", instance=route_c, endpoint="token",
        outcome="success",
    )  # fmt: skip
    assert token_calls == misses
    assert (
        value(
            found,
            "fastgw_oidc_idp_request_duration_seconds_count",
            instance=route_c,
            endpoint="token",
        )
        == token_calls
    )
    assert (
        value(found, "fastgw_oidc_jwks_refreshes_total", instance=route_c, outcome="success") >= 1
    )
    # no secret or token in what the admin listener says
    assert BASIC_CLIENT[1] not in text and "Basic" not in text

    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool is missing: apt-get install prometheus"
    checked = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    problems = {line.strip() for line in (checked.stdout + checked.stderr).splitlines() if line}
    # exit 3 is lint findings only; parse errors exit 1 and would show here as other lines
    assert checked.returncode in (0, 3), problems
    assert problems <= KONG_NAMES_PROMTOOL_FLAGS, problems - KONG_NAMES_PROMTOOL_FLAGS


def test_status_reports_each_plugin_instance(
    run_cli: Callable[..., CliGateway],
    echo_port: int,
    idp: TestIdP,
) -> None:
    admin = free_port()
    gateway = run_cli(config(echo_port, idp), "--admin-listen", f"127.0.0.1:{admin}")
    port = gateway.wait_listening()
    assert get(port, "/c/x", [("Authorization", basic_auth_header(*BASIC_CLIENT))]) == 200
    assert get(port, "/c/x", [("Authorization", "Basic " + "d3Jvbmc6d3Jvbmc=")]) == 401
    status = json.loads(scrape(admin, "/status"))
    instances = {item["path"]: item for item in status["plugin_instances"]}
    route_c = instances["services[0].routes[2].plugins[0]"]
    assert route_c["name"] == "openid-connect"
    assert route_c["cached_clients"] == 1
    assert route_c["negative_entries"] >= 1  # wrong:wrong, remembered for cache_ttl_neg
    assert route_c["idp_reachable"] is True
    assert route_c["last_jwks_refresh"] is not None
    route_b = instances["services[0].routes[1].plugins[0]"]
    # discovery ran at start (an IdP call that answered), no client came
    assert route_b["cached_clients"] == 0 and route_b["idp_reachable"] is True
    assert instances["plugins[0]"]["name"] == "prometheus"
