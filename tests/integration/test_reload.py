"""Reload without downtime: SIGHUP and `fastgw reload` on a real two-worker instance under load,
a broken file changing nothing, token caches kept, requests in flight finishing."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import (
    ROOT,
    Client,
    CliGateway,
    EchoUpstream,
    EmbeddedGateway,
    free_port,
    wait_upstream_holds,
)
from tests.support.idp import BASIC_CLIENT, TestIdP, basic_auth_header

pytestmark = pytest.mark.integration

RELOADS = 50
LOAD_THREADS = 4
BASIC = basic_auth_header(*BASIC_CLIENT)


@pytest.fixture(scope="module")
def idp() -> Iterator[TestIdP]:
    with TestIdP(alg="RS256") as server:
        yield server


def config(echo_port: int, idp: TestIdP, extra_route: str, **fastgw: object) -> str:
    """/common (openid-connect, the same config in every version) plus one route of its own."""
    oidc = {"issuer": idp.issuer, "auth_methods": ["client_credentials"], "timeout": 3000}
    document = {
        "_format_version": "3.0",
        "_fastgw": fastgw,
        "services": [
            {
                "name": "echo",
                "url": f"http://127.0.0.1:{echo_port}",
                "routes": [
                    {"name": extra_route, "paths": [f"/{extra_route}"], "strip_path": False},
                    {
                        "name": "common",
                        "paths": ["/common"],
                        "plugins": [{"name": "openid-connect", "config": oidc}],
                    },
                ],
            }
        ],
    }
    return json.dumps(document)


BROKEN = """\
_format_version: "3.0"
services:
  - name: echo
    url: http://127.0.0.1:9
    colour: blue
"""
BROKEN_PROBLEM = "services[0].colour: unknown field"


def token_calls(idp: TestIdP) -> int:
    return int(idp.stats()["token_requests"])


def fastgw(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fastgw", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )


def status_of(port: int, path: str, headers: list[tuple[str, str]] | None = None) -> int:
    client = Client(port)
    try:
        return client.request("GET", path, [("Connection", "close"), *(headers or [])]).status
    finally:
        client.close()


class Load:
    """Keep-alive clients hammering /common until stopped; every answer that is not 200 (or a
    broken connection) is a failure."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.stop = threading.Event()
        self.done = 0
        self.failures: list[str] = []
        self.threads = [
            threading.Thread(target=self._run, daemon=True) for _ in range(LOAD_THREADS)
        ]
        for thread in self.threads:
            thread.start()

    def _run(self) -> None:
        client = Client(self.port)
        sent = 0
        try:
            while not self.stop.is_set():
                if sent and sent % 25 == 0:  # new connections too: both workers, fresh ones
                    client.close()
                    client = Client(self.port)
                response = client.request("GET", "/common/x", [("Authorization", BASIC)])
                sent += 1
                if response.status != 200:
                    self.failures.append(f"{response.status} {response.body[:200]!r}")
                self.done += 1
        except OSError as error:
            self.failures.append(f"connection: {error!r}")
        finally:
            client.close()

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(10)


def test_fifty_reloads_under_load_fail_no_request_and_keep_the_token_cache(
    run_cli: Callable[..., CliGateway], echo: EchoUpstream, idp: TestIdP
) -> None:
    port = free_port()
    versions = {
        "one": config(echo.port, idp, "one"),
        "two": config(echo.port, idp, "two", keepalive_timeout=30),
    }
    gateway = run_cli(versions["one"], "--workers", "2", listen=f"127.0.0.1:{port}")
    gateway.wait_listening(workers=2)
    path = Path(gateway.proc.args[gateway.proc.args.index("-c") + 1])  # type: ignore[union-attr]
    pid_file = Path(f"{path}.pid")
    assert int(pid_file.read_text()) == gateway.pid
    for _ in range(20):  # every worker has the client's token before the reloads
        assert status_of(port, "/common/warm", [("Authorization", BASIC)]) == 200
    before = token_calls(idp)

    # `fastgw reload` validates first: a broken file is refused without signalling anyone
    path.write_text(BROKEN)
    refused = fastgw("reload", "-c", str(path))
    assert refused.returncode == 1 and BROKEN_PROBLEM in refused.stderr, refused.stderr

    load = Load(port)
    last_valid = "one"
    try:
        for index in range(RELOADS):
            kind = ("one", "two", "broken")[index % 3]  # ends on "two": not the start
            path.write_text(BROKEN if kind == "broken" else versions[kind])
            if kind != "broken" and index % 6 == 0:
                done = fastgw("reload", "-c", str(path))
                assert done.returncode == 0, done.stderr
            else:
                os.kill(gateway.pid, signal.SIGHUP)  # what `kill -HUP $(cat pid)` does
            if kind != "broken":
                last_valid = kind
            time.sleep(0.1)
        time.sleep(1.0)
    finally:
        load.finish()
    assert load.failures == [], load.failures[:5]
    assert load.done > RELOADS

    # the last valid file's routes are the ones served, by every worker
    other = "one" if last_valid == "two" else "two"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        served = {status_of(port, f"/{last_valid}/x") for _ in range(10)}
        gone = {status_of(port, f"/{other}/x") for _ in range(10)}
        if (served, gone) == ({200}, {404}):
            break
        time.sleep(0.2)
    assert (served, gone) == ({200}, {404}), (last_valid, served, gone)
    # a broken file was logged as `fastgw check` prints it, and changed nothing
    gateway.log.wait_for("reload: " + re.escape(BROKEN_PROBLEM))
    gateway.log.wait_for(r"reload: .* is invalid; nothing changed")
    gateway.log.wait_for(r"reload: worker 1 \(pid \d+\) reloaded")
    # the openid-connect instance was carried over: not one more token call
    assert token_calls(idp) == before


def test_a_request_in_flight_finishes_on_the_config_it_started_with(
    make_gateway: Callable[..., EmbeddedGateway], echo: EchoUpstream, idp: TestIdP
) -> None:
    from fastgw.config import parse_config

    gateway = make_gateway(config(echo.port, idp, "sleep"))
    result: list[int] = []
    target = "/sleep?ms=800&t=in-flight"
    slow = threading.Thread(target=lambda: result.append(status_of(gateway.port, target)))
    slow.start()
    wait_upstream_holds(echo.port, target)  # the request is upstream now
    gateway.run(gateway.gateway.reload(parse_config(config(echo.port, idp, "other"), env={})))
    assert status_of(gateway.port, "/sleep?ms=1") == 404  # new requests: the new routes
    slow.join(5)
    assert result == [200]  # the old route's request completed


def test_a_changed_listen_address_applies_and_the_old_one_drains(
    echo: EchoUpstream, idp: TestIdP, caplog: pytest.LogCaptureFixture
) -> None:
    """The new address serves at once, the old one refuses new connections, and a client kept
    alive on the old one has its next request answered (with `connection: close`)."""
    import uvloop

    from fastgw.config import parse_config
    from fastgw.gateway import Gateway

    request = b"GET /one HTTP/1.1\r\nHost: a\r\n\r\n"

    async def answer(reader: asyncio.StreamReader) -> bytes:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        found = re.search(rb"content-length: (\d+)", head, re.I)
        assert found is not None
        await asyncio.wait_for(reader.readexactly(int(found.group(1))), 5)
        return head.lower()

    async def scenario() -> None:
        first = parse_config(config(echo.port, idp, "one", listen="127.0.0.1:0"), env={})
        gateway = Gateway(first, admin_listen="off")
        await gateway.start()
        (old,) = gateway.addresses
        reader, writer = await asyncio.open_connection(*old)
        writer.write(request)
        assert b"connection: close" not in await answer(reader)
        moved_to = free_port()
        moved = config(echo.port, idp, "one", listen=f"127.0.0.1:{moved_to}")
        await gateway.reload(parse_config(moved, env={}))
        assert gateway.addresses == [("127.0.0.1", moved_to)]
        with pytest.raises(OSError):
            await asyncio.open_connection(*old)
        writer.write(request)  # on its way as the listener went: answered, then the end
        head = await answer(reader)
        assert head.startswith(b"http/1.1 200 ") and b"connection: close" in head
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        assert await asyncio.to_thread(status_of, moved_to, "/one") == 200
        await gateway.stop(drain_timeout=0.5)

    with caplog.at_level(logging.INFO, logger="fastgw"):
        uvloop.run(scenario())
    assert "reload: listening on 127.0.0.1:" in caplog.text
