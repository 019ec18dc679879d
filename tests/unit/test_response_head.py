"""The client's response head built from the upstream's raw header block: hop-by-hop lines go."""

from __future__ import annotations

import pytest

from fastgw.http.exchange import BODY_NONE, Exchange


class Conn:
    client_ip = "127.0.0.1"

    def __init__(self) -> None:
        self.out: list[bytes] = []


def head(block: bytes, status: int = 200, *, method: bytes = b"GET") -> bytes:
    conn = Conn()
    exchange = Exchange(
        conn,
        method,
        b"/",
        b"",
        b"gw",
        [],
        True,
        False,
        BODY_NONE,
        -1,
        False,
        None,  # type: ignore[arg-type]
    )
    exchange.upstream_head(status, block)
    return b"".join(conn.out)


def test_plain_connection_line_is_cut_and_the_rest_kept_as_sent() -> None:
    block = (
        b"Server: nginx\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n"
        b"Connection: keep-alive\r\n"
    )
    assert head(block) == (
        b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\n"
    )


@pytest.mark.parametrize(
    "hop",
    [
        b"Connection: keep-alive, X-Hop\r\nX-Hop: 1\r\n",
        b"Keep-Alive: timeout=5\r\n",
        b"Proxy-Connection: keep-alive\r\n",
        b"TE: trailers\r\n",
        b"Trailer: X-Checksum\r\n",
        b"Upgrade: h2c\r\n",
        b"CONNECTION: close\r\n",
    ],
)
def test_hop_by_hop_lines_never_reach_the_client(hop: bytes) -> None:
    sent = head(b"X-Keep: 1\r\n" + hop + b"Content-Length: 0\r\n")
    assert sent == b"HTTP/1.1 200 OK\r\nX-Keep: 1\r\nContent-Length: 0\r\n\r\n"


def test_chunked_upstream_is_rechunked_without_its_own_header() -> None:
    sent = head(b"Transfer-Encoding: chunked\r\nX-Keep: 1\r\n")
    assert sent == b"HTTP/1.1 200 OK\r\nX-Keep: 1\r\ntransfer-encoding: chunked\r\n\r\n"


def test_no_length_no_chunking_means_close_delimited_rechunked() -> None:
    sent = head(b"X-Keep: 1\r\nConnection: close\r\n")
    assert sent == b"HTTP/1.1 200 OK\r\nX-Keep: 1\r\ntransfer-encoding: chunked\r\n\r\n"


def test_204_loses_a_content_length_and_head_keeps_it() -> None:
    assert head(b"Content-Length: 5\r\n", 204) == b"HTTP/1.1 204 No Content\r\n\r\n"
    sent = head(b"Content-Length: 5\r\n", 200, method=b"HEAD")
    assert sent == b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"


def test_a_header_named_like_a_hop_header_prefix_is_kept() -> None:
    sent = head(b"Connection-Id: 7\r\nTE-Info: x\r\nContent-Length: 0\r\n")
    assert sent == b"HTTP/1.1 200 OK\r\nConnection-Id: 7\r\nTE-Info: x\r\nContent-Length: 0\r\n\r\n"
