"""WebSocket through the gateway: a real client and server (`websockets`), plain and over TLS.

The handshake is an ordinary exchange (routing, plugins) offered upstream with Upgrade; after the
upstream's 101 bytes flow both ways unparsed, with back-pressure, until either side closes.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator

import pytest
from websockets.sync.client import connect as ws_connect

from tests.integration.conftest import (
    PYTHON,
    ROOT,
    LineReader,
    client_tls_context,
    stop_process,
)

pytestmark = pytest.mark.integration


@pytest.fixture(params=["http", "https"])
def wire(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def ws_upstream() -> Iterator[int]:
    proc = subprocess.Popen(
        [PYTHON, "-m", "tests.support.ws_echo", "--port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        match = LineReader(proc.stdout).wait_for(r"READY ws://127\.0\.0\.1:(\d+)")[0]
        yield int(match.group(1))
    finally:
        stop_process(proc)


def ws_config(port: int, read_timeout: int = 60000) -> str:
    return f"""\
_format_version: "3.0"
_fastgw: {{admin_listen: null}}
services:
  - name: ws
    url: http://127.0.0.1:{port}
    read_timeout: {read_timeout}
    routes:
      - name: ws
        paths: [/ws]
        protocols: [ws, wss]
        strip_path: false
      - name: deny
        paths: [/deny]
        plugins:
          - name: request-termination
            config: {{status_code: 401, message: Unauthorized}}
"""


def url(gateway, path: str = "/ws") -> tuple[str, dict]:
    if gateway.scheme == "https":
        return f"wss://gw.test:{gateway.port}{path}", {
            "ssl": client_tls_context(),
            "sock": socket.create_connection(("127.0.0.1", gateway.port)),
            "server_hostname": "gw.test",
        }
    return f"ws://127.0.0.1:{gateway.port}{path}", {}


def test_messages_both_ways_through_the_tunnel(make_gateway, ws_upstream) -> None:
    gateway = make_gateway(ws_config(ws_upstream))
    address, options = url(gateway)
    with ws_connect(address, max_size=None, **options) as ws:
        assert ws.response.status_code == 101
        assert ws.response.headers["x-seen-path"] == "/ws"
        for message in ("hello", b"\x00\x01binary", "x" * 70_000):
            ws.send(message)
            assert ws.recv(timeout=5) == message
        # a large answer crosses the client's and the gateway's buffers: back-pressure both ways
        ws.send("bytes:5000000")
        assert len(ws.recv(timeout=10)) == 5_000_000
    # the client closed: the upstream connection goes too (not back to a pool)
    assert gateway.wait_for(lambda: not gateway.pool().busy and not gateway.pool().idle)


def test_a_plugin_answers_the_handshake_itself(make_gateway, ws_upstream) -> None:
    from websockets.exceptions import InvalidStatus

    gateway = make_gateway(ws_config(ws_upstream))
    address, options = url(gateway, "/deny")
    with pytest.raises(InvalidStatus) as refused:
        ws_connect(address, **options)
    assert refused.value.response.status_code == 401


def test_idle_tunnel_is_closed_after_the_read_timeout(make_gateway, ws_upstream) -> None:
    gateway = make_gateway(ws_config(ws_upstream, read_timeout=500))
    address, options = url(gateway)
    with ws_connect(address, **options) as ws:
        ws.send("still there")
        assert ws.recv(timeout=5) == "still there"
        started = time.monotonic()
        with pytest.raises(Exception):  # noqa: B017 (closed: ConnectionClosed or a TLS EOF)
            ws.recv(timeout=5)
        assert time.monotonic() - started < 4
    assert gateway.wait_for(lambda: not gateway.pool().busy)


def test_upstream_101_without_an_upgrade_offer_is_502(raw_gateway, connect) -> None:
    """An upstream switching protocols unasked cannot be forwarded (it used to crash)."""

    def switch(conn) -> None:
        conn.read_head()
        conn.send(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"
        )
        conn.read_head()

    gateway, _ = raw_gateway(switch)
    response = connect(gateway.port).request("GET", "/plain")
    assert response.status == 502


def test_bytes_after_the_handshake_wait_for_the_101(raw_gateway, connect) -> None:
    """A client that sends a frame right behind its handshake: held until the upstream
    switched, then delivered as tunnel bytes, never parsed as a request."""

    seen: list[bytes] = []

    def switch_then_echo(conn) -> None:
        head = conn.read_head()
        seen.append(head or b"")
        time.sleep(0.2)  # the client's early bytes arrive meanwhile
        conn.send(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: x\r\n\r\nfrom-upstream"
        )
        while len(conn.buffer) < len(b"GET /not-a-request HTTP/1.1\r\n\r\n"):
            if not conn._fill():
                return
        conn.send(b"echo:" + bytes(conn.buffer))

    gateway, upstream = raw_gateway(switch_then_echo)
    client = connect(gateway.port)
    client.send(
        b"GET /ws HTTP/1.1\r\nHost: gw.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
        b"GET /not-a-request HTTP/1.1\r\n\r\n"
    )
    head = client.read_head()
    assert head.startswith(b"HTTP/1.1 101 ")
    assert b"upgrade: websocket" in head.lower() and b"sec-websocket-accept: x" in head.lower()
    expected = b"from-upstreamecho:GET /not-a-request HTTP/1.1\r\n\r\n"
    assert client.read_exactly(len(expected)) == expected
    assert upstream.requests == [b"GET /ws HTTP/1.1"]  # one request; the rest was tunnel bytes
    assert b"upgrade: websocket" in seen[0]
