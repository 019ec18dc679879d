"""Kong's file-log plugin on a real `fastgw run`: Kong's record, secrets redacted (the bearer
tokens openid-connect reads from headers of its own included), logrotate's move + SIGUSR1, and a
full disk or a deleted directory costing log lines, never requests."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.conftest import Client, CliGateway, EchoUpstream, free_port
from tests.support.idp import BASIC_CLIENT, TestIdP

pytestmark = pytest.mark.integration

SECRET = "s3cret-value-x9"


def config(echo_port: int, path: Path | str, **extra: object) -> str:
    document = {
        "_format_version": "3.0",
        "services": [
            {
                "name": "echo",
                "url": f"http://127.0.0.1:{echo_port}",
                "routes": [{"name": "logged", "paths": ["/logged"], "strip_path": False}],
            }
        ],
        "plugins": [{"name": "file-log", "config": {"path": str(path), **extra}}],
    }
    return json.dumps(document)


def get(port: int, target: str, headers: list[tuple[str, str]] | None = None) -> int:
    client = Client(port)
    try:
        return client.request("GET", target, headers).status
    finally:
        client.close()


def read_records(path: Path, count: int, timeout: float = 5.0) -> list[dict]:
    """The first `count` records of `path`, waiting for the writer (it flushes every 0.2 s)."""
    deadline = time.monotonic() + timeout
    while True:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) >= count or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert len(lines) >= count, f"{len(lines)} of {count} lines in {path}"
    return [json.loads(line) for line in lines]


def lines_counted(admin: int, result: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5) as response:
        text = response.read().decode()
    for line in text.splitlines():
        if line.startswith("fastgw_file_log_lines_total{") and f'result="{result}"' in line:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no fastgw_file_log_lines_total{{result={result}}} in:\n{text}")


def test_each_request_is_one_kong_record_with_secrets_redacted(
    run_cli: Callable[..., CliGateway], echo: EchoUpstream, tmp_path: Path
) -> None:
    log = tmp_path / "access.log"
    gateway = run_cli(config(echo.port, log))
    port = gateway.wait_listening()
    headers = [
        ("Authorization", f"Basic {SECRET}"),
        ("Cookie", f"session={SECRET}"),
        ("X-Trace", "t-1"),
    ]
    assert get(port, f"/logged/a?client_id=me&client_secret={SECRET}&x=1", headers) == 200
    assert get(port, "/nowhere") == 404  # no route: the global plugin logs it too
    first, second = read_records(log, 2)
    assert SECRET not in log.read_text()
    request = first["request"]
    assert request["method"] == "GET"
    assert request["uri"] == "/logged/a?client_id=me&client_secret=REDACTED&x=1"
    assert request["url"] == "http://gw.test/logged/a?client_id=me&client_secret=REDACTED&x=1"
    assert request["querystring"] == {"client_id": "me", "client_secret": "REDACTED", "x": "1"}
    assert request["headers"]["authorization"] == "REDACTED"
    assert request["headers"]["cookie"] == "REDACTED"
    assert request["headers"]["x-trace"] == "t-1"
    assert request["size"] > 100
    assert first["response"]["status"] == 200 and first["response"]["size"] > 0
    assert first["response"]["headers"]["content-type"].startswith("application/json")
    assert first["upstream_status"] == "200" and first["source"] == "upstream"
    assert first["upstream_uri"].startswith("/logged/a?")
    latencies = first["latencies"]
    assert set(latencies) == {"kong", "proxy", "request", "receive"}
    assert 0 <= latencies["kong"] <= latencies["request"] and latencies["proxy"] >= 0
    assert first["service"]["name"] == "echo" and first["service"]["port"] == echo.port
    assert first["route"]["name"] == "logged" and first["route"]["paths"] == ["/logged"]
    assert first["client_ip"] == "127.0.0.1"
    assert abs(first["started_at"] / 1000 - time.time()) < 60
    assert second["response"]["status"] == 404 and second["source"] == "kong"
    assert "route" not in second and second["latencies"]["proxy"] == -1


def test_bearer_tokens_in_the_headers_openid_connect_reads_are_never_logged(
    run_cli: Callable[..., CliGateway], echo: EchoUpstream, tmp_path: Path
) -> None:
    """X-Access-Token, Access-Token and a configured bearer_token_header_name carry a caller's
    token: REDACTED in the record, whether the token was rejected or (hide_credentials: false)
    accepted and forwarded."""
    log = tmp_path / "access.log"
    with TestIdP(alg="ES256") as idp:
        bearer = {
            "issuer": idp.issuer,
            "auth_methods": ["bearer"],
            "bearer_token_param_type": ["header"],
            "hide_credentials": False,
        }
        routes = [
            ("/kong-headers", bearer),
            ("/own-header", {**bearer, "bearer_token_header_name": "X-Api-Token"}),
        ]
        document = json.loads(config(echo.port, log))
        document["services"][0]["routes"] = [
            {
                "name": path.strip("/"),
                "paths": [path],
                "plugins": [{"name": "openid-connect", "config": oidc}],
            }
            for path, oidc in routes
        ]
        gateway = run_cli(json.dumps(document))
        port = gateway.wait_listening()
        valid = idp.token(*BASIC_CLIENT)["access_token"]
        rejected = f"not.a-token.{SECRET}"
        sent = [
            ("/kong-headers/a", "X-Access-Token", valid, 200),
            ("/kong-headers/b", "Access-Token", valid, 200),
            ("/kong-headers/c", "X-Access-Token", rejected, 401),
            ("/kong-headers/d", "Access-Token", rejected, 401),
            ("/own-header/e", "X-Api-Token", valid, 200),
            ("/own-header/f", "X-Api-Token", rejected, 401),
        ]
        for target, name, token, status in sent:
            assert get(port, target, [(name, token)]) == status, (target, name)
        records = read_records(log, len(sent))
    text = log.read_text()
    assert valid not in text and SECRET not in text
    assert valid.rsplit(".", 1)[1] not in text  # not even the signature alone
    for record, (target, name, _, status) in zip(records, sent, strict=True):
        assert record["request"]["uri"] == target and record["response"]["status"] == status
        assert record["request"]["headers"][name.lower()] == "REDACTED", record["request"]


def test_logrotate_move_then_sigusr1_continues_in_a_new_file(
    run_cli: Callable[..., CliGateway], echo: EchoUpstream, tmp_path: Path
) -> None:
    log = tmp_path / "access.log"
    gateway = run_cli(config(echo.port, log))
    port = gateway.wait_listening()
    assert get(port, "/logged/before") == 200
    read_records(log, 1)
    rotated = tmp_path / "access.log.1"
    os.rename(log, rotated)  # logrotate's move: the gateway still holds the old file open
    assert get(port, "/logged/between") == 200
    time.sleep(0.5)
    pid = int((tmp_path / "gateway-0.yaml.pid").read_text())
    assert pid == gateway.pid
    os.kill(pid, signal.SIGUSR1)  # logrotate's postrotate
    time.sleep(0.2)
    assert get(port, "/logged/after") == 200
    (after,) = read_records(log, 1)
    assert after["request"]["uri"] == "/logged/after"
    assert [r["request"]["uri"] for r in read_records(rotated, 2)] == [
        "/logged/before",
        "/logged/between",
    ]


@pytest.mark.parametrize("where", ["full disk", "deleted directory"])
def test_a_log_that_cannot_be_written_costs_lines_not_requests(
    run_cli: Callable[..., CliGateway], echo: EchoUpstream, tmp_path: Path, where: str
) -> None:
    directory = tmp_path / "logs"
    directory.mkdir()
    # /dev/full: every write fails with ENOSPC, as on a full disk
    log = Path("/dev/full") if where == "full disk" else directory / "access.log"
    admin = free_port()
    gateway = run_cli(config(echo.port, log), "--admin-listen", f"127.0.0.1:{admin}")
    port = gateway.wait_listening()
    if where == "deleted directory":
        directory.rmdir()
    for index in range(20):
        assert get(port, f"/logged/{index}") == 200
    deadline = time.monotonic() + 5
    while lines_counted(admin, "dropped") < 20 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert lines_counted(admin, "dropped") == 20
    assert lines_counted(admin, "written") == 0
    gateway.log.wait_for("file-log: cannot (open|write)")
    if where == "deleted directory":
        directory.mkdir()  # fixed: the next batch (after a reopen) is written again
        gateway.signal(signal.SIGUSR1)
        time.sleep(0.2)
        assert get(port, "/logged/again") == 200
        (record,) = read_records(directory / "access.log", 1)
        assert record["request"]["uri"] == "/logged/again"
