"""rate-limiting (local), ip-restriction, request-size-limiting and correlation-id on a real
gateway in front of the real echo upstream, driven by curl, in the shapes of Kong's docs
examples and Kong's get-started guide."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.conftest import EchoUpstream, EmbeddedGateway

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("curl") is None, reason="curl is missing"),
]


def curl(port: int, *args: str, path: str = "/anything") -> tuple[int, dict[str, str], bytes]:
    done = subprocess.run(
        ["curl", "-sS", "--max-time", "5", "-i", *args, f"http://127.0.0.1:{port}{path}"],
        capture_output=True,
        timeout=10,
        check=True,
    )
    head, _, body = done.stdout.partition(b"\r\n\r\n")
    while head.startswith(b"HTTP/1.1 100"):  # curl shows the interim answer too
        head, _, body = body.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


def config(echo: EchoUpstream, plugins: str, settings: str = "{admin_listen: null}") -> str:
    return f"""
_format_version: "3.0"
_fastgw: {settings}
services:
  - name: example-service
    url: http://127.0.0.1:{echo.port}
routes:
  - name: example-route
    paths: [/anything]
    service: {{name: example-service}}
plugins:
{plugins}
"""


def test_kongs_get_started_guide_sixth_request_in_a_minute_is_429(
    echo: EchoUpstream, make_gateway: Callable[..., EmbeddedGateway]
) -> None:
    plugins = "  - name: rate-limiting\n    config: {minute: 5, policy: local}"
    gateway = make_gateway(config(echo, plugins))
    replies = [curl(gateway.port) for _ in range(6)]
    assert [status for status, _, _ in replies] == [200] * 5 + [429]
    _status, headers, body = replies[5]
    assert json.loads(body) == {"message": "API rate limit exceeded"}
    assert headers["x-ratelimit-limit-minute"] == "5"
    assert headers["x-ratelimit-remaining-minute"] == "0"
    assert headers["ratelimit-limit"] == "5" and headers["ratelimit-remaining"] == "0"
    assert headers["retry-after"] == headers["ratelimit-reset"]
    assert 1 <= int(headers["retry-after"]) <= 60
    assert [h["x-ratelimit-remaining-minute"] for _, h, _ in replies[:5]] == [
        "4",
        "3",
        "2",
        "1",
        "0",
    ]


def test_ip_restriction_behind_a_trusted_proxy(
    echo: EchoUpstream, make_gateway: Callable[..., EmbeddedGateway]
) -> None:
    plugins = "  - name: ip-restriction\n    config: {allow: [203.0.113.0/24], deny: [203.0.113.5]}"
    settings = (
        "{admin_listen: null, trusted_ips: [127.0.0.1], real_ip_header: X-Forwarded-For, "
        "real_ip_recursive: true}"
    )
    gateway = make_gateway(config(echo, plugins, settings))
    assert curl(gateway.port, "-H", "X-Forwarded-For: 203.0.113.9")[0] == 200
    status, _, body = curl(gateway.port, "-H", "X-Forwarded-For: 203.0.113.5, 127.0.0.1")
    assert status == 403
    assert json.loads(body) == {"message": "IP address not allowed: 203.0.113.5"}
    status, _, body = curl(gateway.port)  # curl itself: 127.0.0.1, not allowed
    assert status == 403 and json.loads(body) == {"message": "IP address not allowed: 127.0.0.1"}


def test_request_size_limiting_kongs_docs_example(
    echo: EchoUpstream, make_gateway: Callable[..., EmbeddedGateway]
) -> None:
    plugins = (
        "  - name: request-size-limiting\n"
        "    config: {allowed_payload_size: 1, size_unit: kilobytes}"
    )
    gateway = make_gateway(config(echo, plugins))
    small = curl(gateway.port, "--data-binary", "x" * 1024)
    assert small[0] == 200 and json.loads(small[2])["body"] == "x" * 1024
    status, _, body = curl(gateway.port, "--data-binary", "x" * 1025, "-H", "Expect:")
    assert status == 413 and json.loads(body) == {"message": "Request size limit exceeded"}
    status, _, _ = curl(gateway.port, "--data-binary", "x" * 1025, "-H", "Expect: 100-continue")
    assert status == 417
    chunked = ("-H", "Transfer-Encoding: chunked", "--data-binary", "y" * 2000)
    assert curl(gateway.port, *chunked)[0] == 413


def test_correlation_id_kongs_docs_example_upstream_and_echoed(
    echo: EchoUpstream, make_gateway: Callable[..., EmbeddedGateway]
) -> None:
    plugins = (
        "  - name: correlation-id\n"
        "    config: {header_name: Kong-Request-ID, generator: uuid#counter, echo_downstream: true}"
    )
    gateway = make_gateway(config(echo, plugins))
    status, headers, body = curl(gateway.port)
    seen = dict(json.loads(body)["headers"])
    assert status == 200 and seen["kong-request-id"] == headers["kong-request-id"]
    assert headers["kong-request-id"].endswith("#1")
    status, headers, body = curl(gateway.port, "-H", "Kong-Request-ID: mine")
    assert (
        headers["kong-request-id"] == "mine"
        and dict(json.loads(body)["headers"])["kong-request-id"] == "mine"
    )


def test_the_correlation_id_is_the_log_records_correlation_id(
    echo: EchoUpstream, make_gateway: Callable[..., EmbeddedGateway], tmp_path: Path
) -> None:
    log = tmp_path / "access.log"
    plugins = (
        "  - name: correlation-id\n"
        "    config: {header_name: Kong-Request-ID, generator: uuid, echo_downstream: true}\n"
        f"  - name: file-log\n    config: {{path: {log}}}"
    )
    gateway = make_gateway(config(echo, plugins))
    sent = [curl(gateway.port)[1]["kong-request-id"] for _ in range(2)]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # file-log writes once each response is out
        if log.exists() and log.read_text().count("\n") >= 2:
            break
        time.sleep(0.05)
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [record["correlation_id"] for record in records] == sent
    assert all(record["request"]["headers"]["kong-request-id"] in sent for record in records)
