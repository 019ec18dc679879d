"""Bodies through the proxy: re-framing both ways, 100-continue, back-pressure, clients that go
away mid-body, and 200 MB each way with the gateway's memory measured (CLI subprocess)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fastgw.http.flow import PAUSE_CLIENT

pytestmark = pytest.mark.integration

MB = 1024 * 1024
BIG = 200 * MB
BLOCK = 64 * 1024
MEMORY_BOUND_KIB = 50 * 1024  # the gateway's RSS may grow by less than this for a 200 MB body


def blocks(total: int, block: int = BLOCK) -> Iterator[bytes]:
    """`total` bytes in blocks that differ from each other (so a reordering changes the hash)."""
    base = bytes(range(256)) * (block // 256)
    sent = 0
    index = 0
    while sent < total:
        size = min(block, total - sent)
        yield (index.to_bytes(8, "big") + base[8:])[:size]
        sent += size
        index += 1


def uploaded(response) -> dict:
    assert response.status == 200, (response.status, response.body)
    return json.loads(response.body)


class CountingSink:
    """Receives a response body piece by piece; checks it is all `fill` bytes."""

    def __init__(self, fill: bytes = b"x") -> None:
        self.fill = fill
        self.size = 0
        self.clean = True

    def update(self, data: bytes) -> None:
        self.size += len(data)
        if data.strip(self.fill):
            self.clean = False


def memory_kib(pid: int, field: str = "VmRSS") -> int:
    """A /proc/PID/status figure in KiB: VmRSS now, VmHWM the peak since the last reset."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/{pid}/status")


def reset_peak(pid: int) -> None:
    """Make VmHWM start again from the current RSS (Linux >= 4.0); harmless when refused."""
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/clear_refs").write_text("5")


# -- re-framing -----------------------------------------------------------------------------------


def test_chunked_request_body_is_streamed_upstream(gateway, connect) -> None:
    rng = random.Random(7)
    pieces = [rng.randbytes(size) for size in (1, 17, 4096, 65536, 300_000, 5, 123_457)]
    body = b"".join(pieces)
    client = connect(gateway.port)
    client.send(
        b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"".join(b"%x;ext=1\r\n%b\r\n" % (len(p), p) for p in pieces)
        + b"0\r\nX-Trailer: dropped\r\n\r\n"
    )
    assert uploaded(client.read_response()) == {
        "size": len(body),
        "sha256": hashlib.sha256(body).hexdigest(),
    }
    # the framing ended where the client's did: the connection carries on
    assert client.request("GET", "/echo").status == 200


def test_chunked_request_body_stays_chunked_upstream(gateway, connect) -> None:
    client = connect(gateway.port)
    client.send(
        b"PUT /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n"
    )
    seen = uploaded(client.read_response())
    assert seen["body"] == "abcdefg"
    assert ["transfer-encoding", "chunked"] in seen["headers"]
    assert "content-length" not in [name for name, _ in seen["headers"]]


def test_content_length_request_body_arriving_in_pieces(gateway, connect) -> None:
    body = b"".join(blocks(3 * MB))
    client = connect(gateway.port)
    client.send(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % len(body))
    for start in range(0, len(body), 100_000):
        client.send(body[start : start + 100_000])
    assert uploaded(client.read_response()) == {
        "size": len(body),
        "sha256": hashlib.sha256(body).hexdigest(),
    }


def test_chunked_response_is_passed_through_chunked(gateway, connect) -> None:
    client = connect(gateway.port)
    response = client.request("GET", "/stream?size=1000000")
    assert response.status == 200
    assert response.chunked
    assert "content-length" not in response.names()
    assert response.body == b"x" * 1_000_000
    assert client.request("GET", "/echo").status == 200


def test_content_length_response_keeps_its_length(gateway, connect) -> None:
    client = connect(gateway.port)
    response = client.request("GET", "/bytes?size=5000000")
    assert response.header("content-length") == "5000000"
    assert not response.chunked
    assert response.body == b"x" * 5_000_000


def test_close_delimited_response_becomes_chunked(gateway, connect) -> None:
    client = connect(gateway.port)
    response = client.request("GET", "/close?size=300000")
    assert response.status == 200
    assert response.chunked
    assert response.body == b"x" * 300_000
    # the client's connection survives the upstream's close
    assert client.request("GET", "/echo").status == 200
    assert gateway.pool_state() == (1, 0)  # only the /echo connection is reusable


# -- 100-continue ---------------------------------------------------------------------------------


def test_expect_100_continue(gateway, connect) -> None:
    client = connect(gateway.port)
    client.send(
        b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n"
    )
    interim = client.read_response()
    assert interim.raw_head == b"HTTP/1.1 100 Continue\r\n\r\n"
    client.send(b"hello world")
    assert uploaded(client.read_response()) == {
        "size": 11,
        "sha256": hashlib.sha256(b"hello world").hexdigest(),
    }
    assert client.request("GET", "/echo").status == 200


def test_expect_100_continue_with_chunked_body(gateway, connect) -> None:
    client = connect(gateway.port)
    client.send(
        b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
        b"Expect: 100-continue\r\n\r\n"
    )
    assert client.read_response().status == 100
    client.send(b"5\r\nhello\r\n0\r\n\r\n")
    assert uploaded(client.read_response())["size"] == 5


def test_expect_100_continue_refused_by_a_plugin(gateway, connect) -> None:
    client = connect(gateway.port)
    client.send(
        b"POST /deny HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n"
    )
    response = client.read_response()
    # no 100 first: the answer comes before any body is asked for
    assert (response.status, response.body) == (401, b'{"message":"Unauthorized"}')
    assert response.header("connection") == "close"
    assert client.is_closed()


# -- back-pressure --------------------------------------------------------------------------------


def proxy_connections(gateway) -> list:
    return gateway.call(lambda: list(gateway.gateway.proxy.connections))


def upstream_held(gateway) -> bool:
    """Whether the gateway stopped reading an upstream connection because its client is slow
    (run on the gateway's loop)."""
    return any(
        conn.flow.read_paused & PAUSE_CLIENT for pool in gateway.gateway.pools for conn in pool.busy
    )


def test_slow_client_holds_back_the_upstream(gateway, connect) -> None:
    client = connect(gateway.port)
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    client.send(b"GET /bytes?size=%d HTTP/1.1\r\nHost: a\r\n\r\n" % (100 * MB))
    # not reading: the gateway must stop reading the upstream, with little buffered meanwhile
    assert gateway.wait_for(lambda: upstream_held(gateway), timeout=10)
    (conn,) = proxy_connections(gateway)
    buffered = gateway.call(lambda: conn.transport.get_write_buffer_size())
    assert buffered < 2 * MB
    sink = CountingSink()
    response = client.read_response(sink=sink)
    assert response.status == 200
    assert (sink.size, sink.clean) == (100 * MB, True)


def test_slow_client_holds_back_the_next_pipelined_response_too(gateway, connect) -> None:
    client = connect(gateway.port)
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    # the first answer fills the client's buffers and completes while writing is paused
    client.send(
        b"GET /bytes?size=%d HTTP/1.1\r\nHost: a\r\n\r\n"
        b"GET /bytes?size=%d HTTP/1.1\r\nHost: a\r\n\r\n" % (MB, 100 * MB)
    )
    assert gateway.wait_for(lambda: upstream_held(gateway), timeout=10)  # the second's upstream
    (conn,) = proxy_connections(gateway)
    buffered = gateway.call(lambda: conn.transport.get_write_buffer_size())
    assert buffered < 3 * MB
    sizes = []
    for _ in range(2):
        sink = CountingSink()
        assert client.read_response(sink=sink).status == 200
        sizes.append(sink.size)
    assert sizes == [MB, 100 * MB]


def test_slow_upstream_holds_back_the_client(raw_gateway, connect) -> None:
    size = 50 * MB
    release = threading.Event()

    def script(conn) -> None:
        conn.read_head()
        release.wait(5)  # not reading: the gateway must stop reading the client
        got = conn.read_exactly(size)
        conn.send(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%d" % (len(str(got)), got))

    gateway, _ = raw_gateway(script)
    client = connect(gateway.port, timeout=15)
    client.send(b"POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % size)
    sender = threading.Thread(target=lambda: [client.send(b) for b in blocks(size, MB)])
    sender.start()
    try:
        assert gateway.wait_for(
            lambda: any(conn.flow.read_paused for conn in gateway.gateway.proxy.connections),
            timeout=10,
        )
        assert len(proxy_connections(gateway)) == 1
        upstream = gateway.call(lambda: next(iter(gateway.pool().busy)))
        assert gateway.call(lambda: upstream.transport.get_write_buffer_size()) < 2 * MB
    finally:
        release.set()
        sender.join(15)
    response = client.read_response()
    assert (response.status, response.body) == (200, str(size).encode())


# -- clients that go away -------------------------------------------------------------------------


def wait_until_released(gateway) -> None:
    """No client connection and no upstream connection left behind (none reusable either: a
    half-sent or half-read exchange leaves its upstream connection in an unknown state)."""
    assert gateway.wait_for(lambda: not gateway.gateway.proxy.connections)
    assert gateway.wait_for(lambda: not gateway.pool().busy)
    assert gateway.pool_state() == (0, 0)


def test_client_gone_mid_request_body_releases_the_upstream(gateway, connect) -> None:
    client = connect(gateway.port)
    client.send(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % (50 * MB))
    for block in blocks(2 * MB):
        client.send(block)
    assert gateway.wait_for(lambda: len(gateway.pool().busy) == 1)
    client.close()
    wait_until_released(gateway)
    assert connect(gateway.port).request("GET", "/echo").status == 200


def test_client_gone_mid_response_body_releases_the_upstream(gateway, connect) -> None:
    client = connect(gateway.port)
    client.send(b"GET /bytes?size=%d HTTP/1.1\r\nHost: a\r\n\r\n" % (100 * MB))
    client.read_exactly(MB)
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    client.close()  # with unread data: a reset
    wait_until_released(gateway)
    assert connect(gateway.port).request("GET", "/echo").status == 200


def test_client_gone_while_waiting_for_the_upstream(gateway, connect) -> None:
    client = connect(gateway.port)
    client.send(b"GET /sleep?ms=3000 HTTP/1.1\r\nHost: a\r\n\r\n")
    assert gateway.wait_for(lambda: len(gateway.pool().busy) == 1)
    client.close()
    started = time.monotonic()
    wait_until_released(gateway)
    assert time.monotonic() - started < 1.0  # at once, not when the upstream finally answers


# -- 200 MB each way, memory measured -------------------------------------------------------------


@pytest.fixture
def cli_gateway(run_cli, gateway_config):
    cli = run_cli(gateway_config())
    cli.wait_listening()
    return cli


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_200mb_request_body_streams_in_bounded_memory(cli_gateway, connect, framing) -> None:
    client = connect(cli_gateway.port, timeout=30)
    # warm up: first-use allocations are not what this test is about
    warm = b"w" * MB
    assert uploaded(client.request("POST", "/upload", body=warm))["size"] == MB
    baseline = memory_kib(cli_gateway.pid)
    reset_peak(cli_gateway.pid)

    digest = hashlib.sha256()
    if framing == "chunked":
        client.send(b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
        for block in blocks(BIG):
            client.send(b"%x\r\n%b\r\n" % (len(block), block))
            digest.update(block)
        client.send(b"0\r\n\r\n")
    else:
        client.send(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % BIG)
        for block in blocks(BIG):
            client.send(block)
            digest.update(block)
    assert uploaded(client.read_response()) == {"size": BIG, "sha256": digest.hexdigest()}

    growth = memory_kib(cli_gateway.pid, "VmHWM") - baseline
    assert growth < MEMORY_BOUND_KIB, f"gateway RSS grew by {growth} KiB for a 200 MB upload"


@pytest.mark.parametrize("endpoint", ["/bytes", "/stream"])
def test_200mb_response_body_streams_in_bounded_memory(cli_gateway, connect, endpoint) -> None:
    client = connect(cli_gateway.port, timeout=30)
    assert client.request("GET", f"{endpoint}?size={MB}").body == b"x" * MB
    baseline = memory_kib(cli_gateway.pid)
    reset_peak(cli_gateway.pid)

    client.send(b"GET %b?size=%d HTTP/1.1\r\nHost: a\r\n\r\n" % (endpoint.encode(), BIG))
    sink = CountingSink()
    response = client.read_response(sink=sink)
    assert response.status == 200
    assert response.chunked == (endpoint == "/stream")
    assert (sink.size, sink.clean) == (BIG, True)

    growth = memory_kib(cli_gateway.pid, "VmHWM") - baseline
    assert growth < MEMORY_BOUND_KIB, f"gateway RSS grew by {growth} KiB for a 200 MB download"
