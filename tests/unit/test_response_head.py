"""The client's response head built from the upstream's: hop-by-hop headers never get through."""

from __future__ import annotations

import pytest

from fastgw.http.response_head import forward_head
from fastgw.http.upstream import UpstreamConnection
from fastgw.http.vocabulary import MAX_RESPONSE_HEAD
from tests.support.wire import Harness


def exchange_for(h: Harness, method: bytes = b"GET") -> UpstreamConnection:
    """A proxied request on `h`'s client connection; returns the upstream connection it went on."""
    h.feed(b"%b /proxy HTTP/1.1\r\nHost: gw\r\n\r\n" % method)
    (upstream,) = h.upstream.connections
    assert upstream.sink is not None
    return upstream


def head(headers: list[tuple[bytes, bytes]], status: int = 200, *, method: bytes = b"GET") -> bytes:
    """What the client gets for an upstream response with `headers`, parsed by the real parser."""
    h = Harness()
    upstream = exchange_for(h, method)
    raw = b"HTTP/1.1 %d X\r\n%b\r\n" % (status, b"".join(b"%b: %b\r\n" % h for h in headers))
    upstream.data_received(raw)
    return h.transport.take()


def test_connection_goes_and_the_length_is_kept() -> None:
    sent = head([(b"Server", b"nginx"), (b"Content-Length", b"2"), (b"Connection", b"keep-alive")])
    assert sent == b"HTTP/1.1 200 OK\r\nServer: nginx\r\ncontent-length: 2\r\n\r\n"


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
    assert sent == b"HTTP/1.1 200 OK\r\nX-Keep: 1\r\ncontent-length: 0\r\n\r\n"


def test_chunked_upstream_is_rechunked_without_its_own_header() -> None:
    sent = head([(b"Transfer-Encoding", b"chunked"), (b"X-Keep", b"1")])
    assert sent == b"HTTP/1.1 200 OK\r\nX-Keep: 1\r\ntransfer-encoding: chunked\r\n\r\n"


def test_no_length_and_no_chunking_is_rechunked_for_the_client() -> None:
    sent = head([(b"X-Keep", b"1"), (b"Connection", b"close")])
    assert sent == b"HTTP/1.1 200 OK\r\nX-Keep: 1\r\ntransfer-encoding: chunked\r\n\r\n"


def test_204_loses_a_content_length_and_head_keeps_it() -> None:
    assert head([(b"Content-Length", b"5")], 204) == b"HTTP/1.1 204 No Content\r\n\r\n"
    sent = head([(b"Content-Length", b"5")], 200, method=b"HEAD")
    assert sent == b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"


def test_a_header_named_like_a_hop_header_prefix_is_kept() -> None:
    sent = head([(b"Connection-Id", b"7"), (b"TE-Info", b"x"), (b"Content-Length", b"0")])
    assert sent == b"HTTP/1.1 200 OK\r\nConnection-Id: 7\r\nTE-Info: x\r\ncontent-length: 0\r\n\r\n"


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
    assert sent == b"HTTP/1.1 200 OK\r\nX-Keep: k\r\ncontent-length: 0\r\n\r\n"


def test_an_interim_response_head_is_dropped_with_its_headers() -> None:
    sent = head([(b"X-Early", b"1")], 103)
    assert sent == b""  # nothing for the client yet: the final response follows


def test_a_chunked_response_trailers_never_reach_the_next_response() -> None:
    """Trailers are not forwarded, and nothing of them is left for the next response on the
    pooled connection."""
    h = Harness()
    upstream = exchange_for(h)
    upstream.data_received(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n"
        b"2\r\nhi\r\n0\r\nX-Sum: secret\r\nConnection: x-other\r\n\r\n"
    )
    assert h.transport.take() == (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n"
    )
    assert exchange_for(h) is upstream  # pooled, and reused for the next request
    upstream.data_received(b"HTTP/1.1 200 OK\r\nX-Other: 1\r\nContent-Length: 2\r\n\r\nok")
    assert h.transport.take() == b"HTTP/1.1 200 OK\r\nX-Other: 1\r\ncontent-length: 2\r\n\r\nok"


def test_a_response_head_over_the_bound_is_refused_hop_by_hop_lines_included() -> None:
    """64 KiB of Keep-Alive lines in one read: not forwarded, but still the head's size."""
    h = Harness()
    upstream = exchange_for(h)
    lines = b"Keep-Alive: timeout=5\r\n" * (MAX_RESPONSE_HEAD // 23 + 1)
    upstream.data_received(b"HTTP/1.1 200 OK\r\n" + lines + b"Content-Length: 2\r\n\r\nok")
    assert h.transport.take().startswith(b"HTTP/1.1 502 Bad Gateway\r\n")
    assert upstream.closed


def test_a_response_head_growing_over_the_bound_over_many_reads_is_refused() -> None:
    h = Harness()
    upstream = exchange_for(h)
    upstream.data_received(b"HTTP/1.1 200 OK\r\n")
    while not upstream.closed:
        upstream.data_received(b"X-Pad: " + b"a" * 1000 + b"\r\n")
    assert h.transport.take().startswith(b"HTTP/1.1 502 Bad Gateway\r\n")


def test_a_head_split_over_reads_is_forwarded_whole() -> None:
    h = Harness()
    upstream = exchange_for(h)
    raw = b"HTTP/1.1 200 OK\r\nServer: x\r\nContent-Length: 2\r\n\r\nok"
    for index in range(len(raw)):
        upstream.data_received(raw[index : index + 1])
    assert h.transport.take() == b"HTTP/1.1 200 OK\r\nServer: x\r\ncontent-length: 2\r\n\r\nok"


def test_forward_head_keeps_end_to_end_lines_as_sent_and_reads_the_framing() -> None:
    forwarded = forward_head(
        [
            b"HTTP/1.1 200 OK",
            b"Server: nginx",
            b"content-length: 12",
            b"Content-Type: text/plain",
            b"Transfer-Encoding: gzip, chunked",
            b"Connection: keep-alive, X-Drop",
            b"X-Drop: 1",
            b"TEA: 1",
        ]
    )
    assert forwarded.fields == b"Server: nginx\r\nContent-Type: text/plain\r\nTEA: 1\r\n"
    assert forwarded.content_length == b"12"
    assert forwarded.chunked
