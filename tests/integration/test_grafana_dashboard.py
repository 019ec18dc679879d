"""Kong's Grafana dashboard against fastgw: a real Prometheus scrapes a real `fastgw run
--workers 2` every second while traffic flows, and each of the dashboard's 44 queries, evaluated
through Prometheus' HTTP API, answers with data (a sample that is a number).

The queries are those of Kong's official dashboard (grafana.com 7424, kong-official.json beside
Kong's prometheus plugin), its variables ($service, $route, $instance, $upstream) at "All".
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import Client, CliGateway, EchoUpstream, free_port, stop_process
from tests.support.idp import BASIC_CLIENT, TestIdP, basic_auth_header

pytestmark = pytest.mark.integration

SCRAPE_INTERVAL = "1s"
DEADLINE = 90.0  # generous: the queries answer within a few scrapes

_SELECTED = 'service=~"$service", route=~"$route", instance=~"$instance"'
_LATENCY = 'service =~ "$service",route=~"$route",instance=~"$instance"'


def _quantiles(metric: str, selector: str, by: str) -> list[str]:
    return [
        f"histogram_quantile({q}, sum(rate({metric}{{{selector}}}[1m])) by ({by}))"
        for q in ("0.90", "0.95", "0.99")
    ]


# Kong's dashboard, row by row: 44 queries.
QUERIES: list[str] = [
    # Request rate
    'sum(rate(kong_http_requests_total{instance=~"$instance"}[1m]))',
    f"sum(rate(kong_http_requests_total{{{_SELECTED}}}[1m])) by (service)",
    f"sum(rate(kong_http_requests_total{{{_SELECTED}}}[1m])) by (route)",
    f"sum(rate(kong_http_requests_total{{{_SELECTED}}}[1m])) by (service,code)",
    f"sum(rate(kong_http_requests_total{{{_SELECTED}}}[1m])) by (route,code)",
    # Latencies
    *_quantiles("kong_kong_latency_ms_bucket", 'instance=~"$instance"', "le"),
    *_quantiles("kong_kong_latency_ms_bucket", f" {_LATENCY}", "service,le"),
    *_quantiles("kong_kong_latency_ms_bucket", f" {_LATENCY}", "route,le"),
    *_quantiles("kong_request_latency_ms_bucket", "", "le"),
    *_quantiles("kong_request_latency_ms_bucket", _LATENCY, "service,le"),
    *_quantiles("kong_request_latency_ms_bucket", _LATENCY, "route,le"),
    *_quantiles("kong_upstream_latency_ms_bucket", "", "le"),
    *_quantiles("kong_upstream_latency_ms_bucket", _LATENCY, "service,le"),
    *_quantiles("kong_upstream_latency_ms_bucket", _LATENCY, "route,le"),
    # Bandwidth
    'sum(irate(kong_bandwidth_bytes{instance=~"$instance"}[1m])) by (type)',
    'sum(irate(kong_bandwidth_bytes{direction="egress", service =~"$service",route=~"$route",'
    'instance=~"$instance"}[1m])) by (service)',
    'sum(irate(kong_bandwidth_bytes{direction="egress", service =~"$service",route=~"$route",'
    'instance=~"$instance"}[1m])) by (route)',
    'sum(irate(kong_bandwidth_bytes{direction="ingress", service =~"$service"}[1m])) by (service)',
    # Caching
    '(kong_memory_lua_shared_dict_bytes{instance=~"$instance"}'
    '/kong_memory_lua_shared_dict_total_bytes{instance=~"$instance"})*100',
    'kong_memory_workers_lua_vms_bytes{instance=~"$instance"}',
    # Upstream
    'sum(kong_upstream_target_health{state="healthy",upstream=~"$upstream"}) '
    "by (upstream,target,address) * -1  + "
    'sum(kong_upstream_target_health{state=~"(unhealthy|dns_error)",upstream=~"$upstream"}) '
    "by (upstream,target,address)",
    "sum(label_replace(label_replace(label_replace("
    'kong_upstream_target_health{upstream=~"$upstream"}, "state_value", "1", "state", "healthy"'
    '), "state_value", "0", "state", "healthchecks_off"'
    '), "state_value", "-1", "state", "(dns_error|unhealthy)"'
    ")) by (upstream, target, address, state, state_value) > 0",
    # Nginx
    'sum(kong_nginx_connections_total{state=~"active|reading|writing|waiting", '
    'instance=~"$instance"}) by (state)',
    'sum(kong_nginx_connections_total{state="total", instance=~"$instance"})',
    'sum(kong_nginx_connections_total{state="handled", instance=~"$instance"})',
    'sum(kong_nginx_connections_total{state="accepted", instance=~"$instance"})',
]
VARIABLES = ("$service", "$route", "$instance", "$upstream")  # each at "All"


def with_all(query: str) -> str:
    for variable in VARIABLES:
        query = query.replace(variable, ".*")
    return query


def config(echo_port: int, idp: TestIdP) -> str:
    oidc = {"issuer": idp.issuer, "auth_methods": ["client_credentials"], "timeout": 3000}
    every_series = {
        "status_code_metrics": True,
        "latency_metrics": True,
        "bandwidth_metrics": True,
        "upstream_health_metrics": True,
        "per_consumer": True,
    }
    return json.dumps(
        {
            "_format_version": "3.0",
            "upstreams": [
                {
                    "name": "echo-upstream",
                    "targets": [{"target": f"127.0.0.1:{echo_port}"}],
                    "healthchecks": {"passive": {"unhealthy": {"tcp_failures": 3}}},
                }
            ],
            "services": [
                {
                    "name": "balanced",
                    "host": "echo-upstream",
                    "routes": [{"name": "plain", "paths": ["/plain"]}],
                },
                {
                    "name": "protected",
                    "url": f"http://127.0.0.1:{echo_port}",
                    "routes": [
                        {
                            "name": "oidc",
                            "paths": ["/oidc"],
                            "plugins": [{"name": "openid-connect", "config": oidc}],
                        }
                    ],
                },
            ],
            "plugins": [{"name": "prometheus", "config": every_series}],
        }
    )


class Traffic:
    """Requests to every route, in a thread, until stopped: the rates stay above zero."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sent = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        basic = basic_auth_header(*BASIC_CLIENT)
        requests = [
            ("/plain/x", [], 200),
            ("/oidc/x", [("Authorization", basic)], 200),
            ("/oidc/x", [], 401),
        ]
        while not self._stop.is_set():
            for target, headers, status in requests:
                client = Client(self.port)
                try:
                    got = client.request("GET", target, [("Connection", "close"), *headers])
                    if got.status != status:
                        self.failures.append(f"{target}: {got.status}")
                finally:
                    client.close()
                self.sent += 1
            self._stop.wait(0.02)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


class Prometheus:
    """A real Prometheus server scraping `target` every second, answering on its HTTP API."""

    def __init__(self, directory: Path, target: str) -> None:
        binary = shutil.which("prometheus")
        assert binary is not None, "prometheus is missing: apt-get install prometheus"
        self.port = free_port()
        config = directory / "prometheus.yml"
        config.write_text(
            f"global:\n  scrape_interval: {SCRAPE_INTERVAL}\n  evaluation_interval: 1s\n"
            f"scrape_configs:\n  - job_name: fastgw\n    static_configs:\n"
            f"      - targets: ['{target}']\n"
        )
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def query(self, expression: str) -> list[dict]:
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode(
            {"query": expression}
        )
        with urllib.request.urlopen(url, timeout=10) as answer:
            document = json.load(answer)
        assert document["status"] == "success", document
        return list(document["data"]["result"])

    def ready(self) -> bool:
        try:
            url = f"http://127.0.0.1:{self.port}/-/ready"
            with urllib.request.urlopen(url, timeout=2) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    def stop(self) -> None:
        stop_process(self.proc)  # type: ignore[arg-type]


def has_data(result: list[dict]) -> bool:
    """At least one sample, and every one a number (histogram_quantile of nothing is NaN)."""
    values = [float(item["value"][1]) for item in result]
    return bool(values) and not any(math.isnan(value) for value in values)


@pytest.fixture(scope="module")
def idp() -> Iterator[TestIdP]:
    with TestIdP(alg="RS256") as server:
        yield server


def test_every_query_of_kongs_dashboard_answers_with_data(
    run_cli: Callable[..., CliGateway], echo: EchoUpstream, idp: TestIdP, tmp_path: Path
) -> None:
    assert len(QUERIES) == 44
    admin = free_port()
    gateway = run_cli(
        config(echo.port, idp), "--workers", "2", "--admin-listen", f"127.0.0.1:{admin}"
    )
    port = gateway.wait_listening(workers=2)
    traffic = Traffic(port)
    prometheus = Prometheus(tmp_path, f"127.0.0.1:{admin}")
    try:
        deadline = time.monotonic() + DEADLINE
        while not prometheus.ready():
            assert time.monotonic() < deadline, "prometheus did not become ready"
            time.sleep(0.1)
        missing = list(QUERIES)
        while missing and time.monotonic() < deadline:
            missing = [
                query for query in missing if not has_data(prometheus.query(with_all(query)))
            ]
            if missing:
                time.sleep(0.5)
        assert not missing, f"{44 - len(missing)} of 44 queries have data; without: {missing}"
        # what the panels show: both workers' memory, the token caches as shared dicts, the
        # upstream's one target healthy
        workers = prometheus.query("kong_memory_workers_lua_vms_bytes")
        assert len({item["metric"]["pid"] for item in workers}) == 2
        dicts = {item["metric"]["shared_dict"] for item in prometheus.query(with_all(QUERIES[36]))}
        assert "openid-connect token cache (services[1].routes[0].plugins[0])" in dicts
        (healthy,) = prometheus.query(with_all(QUERIES[39]))
        assert healthy["metric"]["state"] == "healthy"
        assert healthy["metric"]["target"] == f"127.0.0.1:{echo.port}"
    finally:
        traffic.stop()
        prometheus.stop()
    assert traffic.failures == [] and traffic.sent > 0
