"""The client's response head built from the upstream's: hop-by-hop headers never get through."""

from __future__ import annotations

import pytest

from fastgw.http.exchange import Exchange
from fastgw.http.timers import Ticker
from fastgw.http.upstream import MAX_RESPONSE_HEAD, UpstreamConnection


class Conn:
    client_ip = "127.0.0.1"

    def __init__(self) -> None:
        self.out: list[bytes] = []

    def flush(self) -> None: ...

    def exchange_done(self, exchange: Exchange) -> None: ...

    read_paused = 0


class Pool:
    ticker = Ticker()

    def release(self, upstream: UpstreamConnection) -> None: ...

    def forget(self, upstream: UpstreamConnection) -> None: ...


class Transport:
    def write(self, data: bytes) -> None: ...

    def close(self) -> None: ...

    abort = close


def head(headers: list[tuple[bytes, bytes]], status: int = 200, *, method: bytes = b"GET") -> bytes:
    """What the client gets for an upstream response with `headers`, parsed by the real parser."""
    conn = Conn()
    exchange = Exchange(
        conn,  # type: ignore[arg-type]
        method, b"/", b"", b"gw", [], True
    )  # fmt: skip
    upstream = UpstreamConnection(Pool())  # type: ignore[arg-type]
    upstream.connection_made(Transport())  # type: ignore[arg-type]
    upstream.send(exchange, b"", 60.0)
    raw = b"HTTP/1.1 %d X\r\n%b\r\n" % (status, b"".join(b"%b: %b\r\n" % h for h in headers))
    upstream.data_received(raw)
    return b"".join(conn.out)


def test_connection_goes_and_the_length_is_kept() -> None:
    sent = head([(b"Server", b"nginx"), (b"Content-Length", b"2"), (b"Connection", b"keep-alive")])
    assert sent == b"HTTP/1.1 200 OK\r\nserver: nginx\r\ncontent-length: 2\r\n\r\n"


@pytest.mark.parametrize(
    "hop",
    [
        [(b"Connection", b"keep-alive, X-Hop"), (b"X-Hop", b"1")],
        [(b"Keep-Alive", b"timeout=5")],
        [(b"Proxy-Connection", b"keep-alive")],
        [(b"TE", b"trailers")],
        [(b"Trailer", b"X-Checksum")],
        [(b"Upgrade", b"h2c")],
        [(b"CONNECTION", b"close")],
    ],
)
def test_hop_by_hop_headers_never_reach_the_client(hop: list[tuple[bytes, bytes]]) -> None:
    sent = head([(b"X-Keep", b"1"), *hop, (b"Content-Length", b"0")])
    assert sent == b"HTTP/1.1 200 OK\r\nx-keep: 1\r\ncontent-length: 0\r\n\r\n"


def test_chunked_upstream_is_rechunked_without_its_own_header() -> None:
    sent = head([(b"Transfer-Encoding", b"chunked"), (b"X-Keep", b"1")])
    assert sent == b"HTTP/1.1 200 OK\r\nx-keep: 1\r\ntransfer-encoding: chunked\r\n\r\n"


def test_no_length_and_no_chunking_is_rechunked_for_the_client() -> None:
    sent = head([(b"X-Keep", b"1"), (b"Connection", b"close")])
    assert sent == b"HTTP/1.1 200 OK\r\nx-keep: 1\r\ntransfer-encoding: chunked\r\n\r\n"


def test_204_loses_a_content_length_and_head_keeps_it() -> None:
    assert head([(b"Content-Length", b"5")], 204) == b"HTTP/1.1 204 No Content\r\n\r\n"
    sent = head([(b"Content-Length", b"5")], 200, method=b"HEAD")
    assert sent == b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"


def test_a_header_named_like_a_hop_header_prefix_is_kept() -> None:
    sent = head([(b"Connection-Id", b"7"), (b"TE-Info", b"x"), (b"Content-Length", b"0")])
    assert sent == b"HTTP/1.1 200 OK\r\nconnection-id: 7\r\nte-info: x\r\ncontent-length: 0\r\n\r\n"


def test_headers_named_by_two_connection_headers_all_go() -> None:
    sent = head(
        [
            (b"Connection", b"X-One"),
            (b"X-One", b"1"),
            (b"X-Keep", b"k"),
            (b"Connection", b"keep-alive, X-Two"),
            (b"X-Two", b"2"),
            (b"Content-Length", b"0"),
        ]
    )
    assert sent == b"HTTP/1.1 200 OK\r\nx-keep: k\r\ncontent-length: 0\r\n\r\n"


def test_an_interim_response_head_is_dropped_with_its_headers() -> None:
    sent = head([(b"X-Early", b"1")], 103)
    assert sent == b""  # nothing for the client yet: the final response follows


def test_a_chunked_response_trailers_never_reach_the_next_response() -> None:
    """Trailers come through the same header callback after the body: they are not forwarded,
    and nothing of them is left for the next response on the pooled connection."""
    upstream = UpstreamConnection(Pool())  # type: ignore[arg-type]
    upstream.connection_made(Transport())  # type: ignore[arg-type]
    first, second = Conn(), Conn()
    exchange = Exchange(first, b"GET", b"/", b"", b"gw", [], True)  # type: ignore[arg-type]
    upstream.send(exchange, b"", 60.0)
    upstream.data_received(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n"
        b"2\r\nhi\r\n0\r\nX-Sum: secret\r\nConnection: x-other\r\n\r\n"
    )
    assert b"".join(first.out) == (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n"
    )
    exchange = Exchange(second, b"GET", b"/", b"", b"gw", [], True)  # type: ignore[arg-type]
    upstream.send(exchange, b"", 60.0)
    upstream.data_received(b"HTTP/1.1 200 OK\r\nX-Other: 1\r\nContent-Length: 2\r\n\r\nok")
    assert b"".join(second.out) == (b"HTTP/1.1 200 OK\r\nx-other: 1\r\ncontent-length: 2\r\n\r\nok")


class FailingExchange(Exchange):
    __slots__ = ("failed",)

    def upstream_failed(self, status: int) -> None:
        self.failed = status


def test_a_response_head_over_the_bound_is_refused_hop_by_hop_lines_included() -> None:
    """64 KiB of Keep-Alive lines in one read: not forwarded, but still the head's size."""
    upstream = UpstreamConnection(Pool())  # type: ignore[arg-type]
    upstream.connection_made(Transport())  # type: ignore[arg-type]
    exchange = FailingExchange(Conn(), b"GET", b"/", b"", b"gw", [], True)  # type: ignore[arg-type]
    exchange.failed = 0
    upstream.send(exchange, b"", 60.0)
    lines = b"Keep-Alive: timeout=5\r\n" * (MAX_RESPONSE_HEAD // 23 + 1)
    upstream.data_received(b"HTTP/1.1 200 OK\r\n" + lines + b"Content-Length: 2\r\n\r\nok")
    assert exchange.failed == 502
    assert upstream.closed
