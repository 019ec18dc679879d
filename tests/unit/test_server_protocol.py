"""The client-side protocol driven with raw request bytes and a fake transport (uvicorn's style).

No sockets: `ServerConnection` gets bytes through `data_received`, writes into a recording
transport, and a fake handler answers locally through the exchange's plugin context API.
"""

from __future__ import annotations

import pytest

from fastgw.http.exchange import DISCARD_LIMIT, FINISHED, WAITING, Exchange
from fastgw.http.server import HOLDING, LINGERING, LINGERING_TIMEOUT, Server
from fastgw.http.states import IllegalTransition
from fastgw.http.timers import TICK_SECONDS
from fastgw.http.tunnel import TunnelEnd
from fastgw.http.upstream import BODY, IDLE
from tests.support.wire import (
    DENY,
    DENY_CLOSE,
    JSON,
    Harness,
    error,
    ok,
    settle,
)

# -- basics ---------------------------------------------------------------------------------------


def test_simple_get_writes_one_exact_response() -> None:
    h = Harness()
    out = h.feed(b"GET /hello?x=1 HTTP/1.1\r\nHost: example.com\r\n\r\n")
    assert out == ok(b"GET /hello?x=1 @example.com")
    assert h.transport.writes == 1
    assert not h.closed


def test_keep_alive_serves_requests_one_after_another() -> None:
    h = Harness()
    assert h.feed(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n") == ok(b"GET /a @h")
    assert h.feed(b"GET /b HTTP/1.1\r\nHost: h\r\n\r\n") == ok(b"GET /b @h")
    assert not h.closed
    assert h.server.requests_total == 2


def test_request_head_split_byte_by_byte() -> None:
    h = Harness()
    raw = b"GET /slow HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n\r\n"
    out = h.feed(*(raw[i : i + 1] for i in range(len(raw))))
    assert out == ok(b"GET /slow @h")
    assert h.handler.seen[0].headers == [(b"x-a", b"1")]


def test_headers_are_lower_cased_and_host_kept_apart() -> None:
    h = Harness()
    h.feed(b"GET / HTTP/1.1\r\nHost: h\r\nX-Mixed-Case: V\r\nAccept: */*\r\n\r\n")
    assert h.handler.seen[0].headers == [(b"x-mixed-case", b"V"), (b"accept", b"*/*")]
    assert h.handler.seen[0].client_ip == "203.0.113.7"


def test_head_request_answer_has_no_body() -> None:
    h = Harness()
    out = h.feed(b"HEAD /x HTTP/1.1\r\nHost: h\r\n\r\n")
    assert (
        out == b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 10\r\n\r\n"
    )  # len(b"HEAD /x @h")
    # and the connection's framing survived: the next request is answered normally
    assert h.feed(b"GET /y HTTP/1.1\r\nHost: h\r\n\r\n") == ok(b"GET /y @h")


def test_handler_exception_becomes_500() -> None:
    h = Harness()
    out = h.feed(b"GET /boom HTTP/1.1\r\nHost: h\r\n\r\n")
    body = b'{"message":"An unexpected error occurred"}'
    assert out == (
        b"HTTP/1.1 500 Internal Server Error\r\n%bcontent-length: %d\r\n\r\n%b"
        % (JSON, len(body), body)
    )
    assert not h.closed


# -- connection persistence -----------------------------------------------------------------------


def test_http_10_closes_after_response() -> None:
    h = Harness()
    out = h.feed(b"GET /old HTTP/1.0\r\n\r\n")
    assert out == ok(b"GET /old @", close=True)
    assert h.transport.events == ["close"]


def test_http_10_keep_alive_is_answered_with_keep_alive() -> None:
    h = Harness()
    out = h.feed(b"GET /old HTTP/1.0\r\nConnection: keep-alive\r\nHost: h\r\n\r\n")
    # an HTTP/1.0 client keeps the connection only when the answer says so
    assert out == ok(b"GET /old @h", keep_alive_10=True)
    assert not h.closed
    assert h.feed(b"GET /again HTTP/1.0\r\nConnection: keep-alive\r\n\r\n") == ok(
        b"GET /again @", keep_alive_10=True
    )


def test_connection_close_closes_after_response() -> None:
    h = Harness()
    out = h.feed(b"GET /bye HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
    assert out == ok(b"GET /bye @h", close=True)
    assert h.closed


def test_connection_close_in_pipeline_drops_later_requests() -> None:
    h = Harness()
    out = h.feed(
        b"GET /1 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n"
    )
    assert out == ok(b"GET /1 @h", close=True)
    assert len(h.handler.seen) == 1
    assert h.closed


# -- pipelining -----------------------------------------------------------------------------------


async def test_pipelined_requests_are_answered_in_order() -> None:
    h = Harness()
    out = h.feed(b"GET /async-1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n")
    await settle()
    assert out == b""  # /2 is parsed but must wait for /async-1
    assert [e.path for e in h.handler.seen] == [b"/async-1"]
    assert h.transport.events == ["pause"]  # no more reading while requests queue up
    await h.handler.release()
    assert h.transport.take() == ok(b"GET /async-1 @h") + ok(b"GET /2 @h")
    assert h.transport.events == ["pause", "resume"]
    assert not h.closed


async def test_three_pipelined_async_requests_pause_once() -> None:
    h = Harness()
    h.feed(b"".join(b"GET /async-%d HTTP/1.1\r\nHost: h\r\n\r\n" % i for i in range(3)))
    for i in range(3):
        await settle()
        assert len(h.handler.gates) == i + 1  # one handler at a time
        await h.handler.release()
    assert h.transport.take() == b"".join(ok(b"GET /async-%d @h" % i) for i in range(3))
    assert h.transport.events == ["pause", "resume"]


async def test_pipelined_401_with_unread_body_does_not_corrupt_next_request() -> None:
    h = Harness()
    out = h.feed(
        b"GET /async-1 HTTP/1.1\r\nHost: h\r\n\r\n"
        b"POST /deny HTTP/1.1\r\nHost: h\r\nContent-Length: 22\r\n\r\nGET /smuggled HTTP/1.1"
        b"GET /3 HTTP/1.1\r\nHost: h\r\n\r\n"
    )
    assert out == b""
    await h.handler.release()
    assert h.transport.take() == ok(b"GET /async-1 @h") + DENY + ok(b"GET /3 @h")
    assert [e.path for e in h.handler.seen] == [b"/async-1", b"/deny", b"/3"]
    assert not h.closed


def test_401_before_body_arrives_discards_the_body_then_serves_next() -> None:
    h = Harness()
    out = h.feed(b"POST /deny HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n")
    assert out == DENY  # answered at once; the body is read and dropped
    assert h.feed(b"0123456789GET /next HTTP/1.1\r\nHost: h\r\n\r\n") == ok(b"GET /next @h")
    assert [e.path for e in h.handler.seen] == [b"/deny", b"/next"]


def test_a_known_body_too_big_to_discard_is_answered_with_close() -> None:
    h = Harness()
    size = DISCARD_LIMIT * 10
    out = h.feed(b"POST /deny HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % size)
    assert out == DENY_CLOSE  # not worth reading to the end: said at once
    assert h.closed


def test_discarding_a_chunked_body_stops_at_the_discard_limit() -> None:
    h = Harness()
    out = h.feed(b"POST /deny HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert out == DENY  # the body's size is unknown: read and dropped, up to the limit
    block = b"10000\r\n" + b"x" * 65536 + b"\r\n"
    for _ in range(DISCARD_LIMIT // 65536):
        h.feed(block)
        assert not h.closed
    h.feed(block)
    assert h.closed  # not read to the end: the answer went out long ago


def test_a_chunked_body_already_complete_keeps_the_connection() -> None:
    h = Harness()
    out = h.feed(
        b"POST /deny HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"4\r\nabcd\r\n0\r\n\r\n"
        b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n"
    )
    assert out == DENY + ok(b"GET /next @h")


def test_discarding_ends_with_a_graceful_close_where_the_transport_offers_it() -> None:
    h = Harness()
    h.transport.half_close = True
    out = h.feed(
        b"POST /deny HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % (DISCARD_LIMIT * 2)
    )
    assert out == DENY_CLOSE
    assert h.transport.events == ["write_eof"]  # the client still reads the answer
    h.feed(b"x" * 65536)  # what it still sends is read and dropped
    assert h.transport.take() == b""
    h.advance(LINGERING_TIMEOUT + 1)
    assert h.transport.events == ["write_eof", "close"]


def test_requests_pipelined_behind_a_closing_answer_are_never_run() -> None:
    h = Harness()
    size = DISCARD_LIMIT * 2
    h.feed(b"POST /deny HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % size)
    h.feed(b"x" * size + b"POST /after HTTP/1.1\r\nHost: h\r\n\r\n")
    assert h.closed
    assert [e.path for e in h.handler.seen] == [b"/deny"]


async def test_malformed_request_behind_a_pending_one_is_answered_in_order() -> None:
    h = Harness()
    out = h.feed(b"GET /async-1 HTTP/1.1\r\nHost: h\r\n\r\nthis is not http\r\n\r\n")
    assert out == b""
    await h.handler.release()
    assert h.transport.take() == ok(b"GET /async-1 @h") + error(b"400 Bad Request", b"Bad request")
    assert h.closed


def test_request_2_of_pipeline_garbage_after_sync_answer() -> None:
    h = Harness()
    out = h.feed(b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\n\x00\x01garbage")
    assert out == ok(b"GET /1 @h") + error(b"400 Bad Request", b"Bad request")
    assert h.closed


# -- bodies ---------------------------------------------------------------------------------------


async def test_content_length_body_read_by_handler() -> None:
    h = Harness()
    h.feed(b"POST /body HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\nhello", b" world")
    await settle()
    assert h.transport.take() == ok(b"hello world")


async def test_chunked_body_read_by_handler() -> None:
    h = Harness()
    h.feed(
        b"POST /body HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n"
    )
    await settle()
    assert h.transport.take() == ok(b"hello world")


async def test_expect_100_continue_is_sent_when_the_body_is_wanted() -> None:
    h = Harness()
    out = h.feed(
        b"POST /body HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"
    )
    await settle()
    assert out + h.transport.take() == b"HTTP/1.1 100 Continue\r\n\r\n"
    h.feed(b"data")
    await settle()
    assert h.transport.take() == ok(b"data")
    assert not h.closed


def test_expect_100_continue_refused_answers_without_continue_and_closes() -> None:
    h = Harness()
    out = h.feed(
        b"POST /deny HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"
    )
    # no 100: the client must not send the body; the connection cannot be reused
    assert out == DENY.replace(
        b"content-length: 26\r\n", b"content-length: 26\r\nconnection: close\r\n"
    )
    assert h.closed


def test_unknown_expectation_is_417() -> None:
    h = Harness()
    out = h.feed(b"GET / HTTP/1.1\r\nHost: h\r\nExpect: teapot\r\n\r\n")
    assert out == error(b"417 Expectation Failed", b"Expectation failed")
    assert h.closed


# -- malformed requests and limits ----------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"garbage\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nBad Header\r\n\r\n",
        b"GET / HTTP/9.9\r\nHost: h\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: abc\r\n\r\n",
        b"POST /body HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"GET * HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET ftp://h/x HTTP/1.1\r\nHost: h\r\n\r\n",
    ],
    ids=[
        "garbage",
        "header-without-colon",
        "bad-version",
        "two-hosts",
        "cl-and-te",
        "bad-content-length",
        "bad-chunk-size",
        "asterisk",
        "non-http-scheme",
    ],
)
async def test_malformed_request_is_400_and_closes(raw: bytes) -> None:
    h = Harness()
    out = h.feed(raw)
    await settle()
    assert out + h.transport.take() == error(b"400 Bad Request", b"Bad request")
    assert h.closed


def test_http_11_without_host_is_400() -> None:
    h = Harness()
    assert h.feed(b"GET / HTTP/1.1\r\n\r\n") == error(b"400 Bad Request", b"Bad request")
    assert h.handler.seen == []


def test_http_10_without_host_is_fine() -> None:
    h = Harness()
    assert h.feed(b"GET / HTTP/1.0\r\n\r\n") == ok(b"GET / @", close=True)


def test_long_uri_is_414() -> None:
    h = Harness(max_uri_size=64)
    assert h.feed(b"GET /" + b"a" * 63 + b" HTTP/1.1\r\nHost: h\r\n\r\n") == ok(
        b"GET /" + b"a" * 63 + b" @h"
    )
    h = Harness(max_uri_size=64)
    out = h.feed(b"GET /" + b"a" * 64 + b" HTTP/1.1\r\nHost: h\r\n\r\n")
    assert out == error(b"414 Request-URI Too Long", b"Request-URI too large")
    assert h.closed


def test_long_uri_split_across_reads_is_414() -> None:
    h = Harness(max_uri_size=64)
    out = h.feed(b"GET /" + b"a" * 40, b"a" * 40 + b" HTTP/1.1\r\n")
    assert out == error(b"414 Request-URI Too Long", b"Request-URI too large")


def test_too_many_headers_is_431() -> None:
    h = Harness(max_headers=5)
    fine = b"".join(b"X-%d: v\r\n" % i for i in range(4))
    assert h.feed(b"GET / HTTP/1.1\r\nHost: h\r\n" + fine + b"\r\n") == ok(b"GET / @h")
    h = Harness(max_headers=5)
    many = b"".join(b"X-%d: v\r\n" % i for i in range(6))
    out = h.feed(b"GET / HTTP/1.1\r\nHost: h\r\n" + many + b"\r\n")
    assert out == error(b"431 Request Header Fields Too Large", b"Request header fields too large")
    assert h.closed


def test_head_too_large_in_one_read_is_431() -> None:
    h = Harness(max_head_size=512)
    out = h.feed(b"GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + b"v" * 600 + b"\r\n\r\n")
    assert out == error(b"431 Request Header Fields Too Large", b"Request header fields too large")
    assert h.handler.seen == []


def test_head_too_large_arriving_slowly_is_431() -> None:
    h = Harness(max_head_size=512)
    out = h.feed(b"GET / HTTP/1.1\r\nHost: h\r\nX-Big: ", b"v" * 300, b"v" * 300)
    assert out == error(b"431 Request Header Fields Too Large", b"Request header fields too large")
    assert h.closed


def test_head_too_large_behind_a_body_in_the_same_read_is_431() -> None:
    h = Harness(max_head_size=512)
    out = h.feed(
        b"POST /deny HTTP/1.1\r\nHost: h\r\nContent-Length: 1000\r\n\r\n" + b"b" * 1000,
        b"GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + b"v" * 600 + b"\r\n\r\n",
    )
    assert out == DENY + error(
        b"431 Request Header Fields Too Large", b"Request header fields too large"
    )


def test_head_too_large_starting_inside_a_body_read_is_431() -> None:
    h = Harness(max_head_size=512)
    out = h.feed(
        b"POST /deny HTTP/1.1\r\nHost: h\r\nContent-Length: 1000\r\n\r\n",
        b"b" * 1000 + b"GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + b"v" * 400,
        b"v" * 400 + b"\r\n\r\n",
    )
    assert out == DENY + error(
        b"431 Request Header Fields Too Large", b"Request header fields too large"
    )


def test_many_small_pipelined_requests_in_one_big_read_are_fine() -> None:
    h = Harness(max_head_size=512)
    one = b"GET /p HTTP/1.1\r\nHost: h\r\nX-Pad: " + b"p" * 100 + b"\r\n\r\n"
    assert h.feed(one * 50) == ok(b"GET /p @h") * 50


async def test_head_size_limit_does_not_count_the_body() -> None:
    h = Harness(max_head_size=512)
    body = b"b" * 2000
    h.feed(b"POST /body HTTP/1.1\r\nHost: h\r\nContent-Length: 2000\r\n\r\n" + body)
    await settle()
    assert h.transport.take() == ok(body)
    assert not h.closed


def test_content_length_over_max_body_size_is_413() -> None:
    h = Harness(max_body_size=10)
    out = h.feed(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\n")
    assert out == error(b"413 Request Entity Too Large", b"Request size limit exceeded")
    assert h.handler.seen == []
    assert h.closed


async def test_chunked_body_over_max_body_size_is_413() -> None:
    h = Harness(max_body_size=10)
    out = h.feed(
        b"POST /body HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"6\r\nabcdef\r\n",
        b"6\r\nghijkl\r\n",
    )
    assert out == error(b"413 Request Entity Too Large", b"Request size limit exceeded")
    assert h.closed


def test_absolute_form_target_is_normalised() -> None:
    h = Harness()
    out = h.feed(b"GET http://Example.com:8080/p/q?x=1 HTTP/1.1\r\nHost: ignored\r\n\r\n")
    assert out == ok(b"GET /p/q?x=1 @Example.com:8080")
    exchange = h.handler.seen[0]
    assert (exchange.path, exchange.query, exchange.host) == (b"/p/q", b"x=1", b"Example.com:8080")


def test_absolute_form_without_path_gets_slash() -> None:
    h = Harness()
    assert h.feed(b"GET http://example.com HTTP/1.1\r\nHost: x\r\n\r\n") == ok(
        b"GET / @example.com"
    )


@pytest.mark.parametrize("target", [b"/a#f", b"/a?x=1#f", b"/#", b"http://h/a#f"])
def test_a_target_with_a_fragment_is_400_and_never_handled(target: bytes) -> None:
    h = Harness()
    out = h.feed(b"GET %b HTTP/1.1\r\nHost: h\r\n\r\n" % target)
    assert out == error(b"400 Bad Request", b"Bad request")
    assert h.handler.seen == [] and h.closed


# -- timeouts -------------------------------------------------------------------------------------


def test_head_timeout_is_408() -> None:
    h = Harness(head_timeout=5.0)
    h.feed(b"GET / HTTP/1.1\r\nHo")
    h.advance(4.9)
    assert h.transport.take() == b"" and not h.closed
    h.advance(0.2)
    assert h.transport.take() == error(b"408 Request Timeout", b"Request timeout")
    assert h.closed


def test_fresh_connection_without_bytes_closes_silently_after_head_timeout() -> None:
    h = Harness(head_timeout=5.0)
    h.advance(5.1)
    assert h.transport.take() == b""
    assert h.transport.events == ["close"]


def test_idle_keep_alive_connection_closes_after_keepalive_timeout() -> None:
    h = Harness(head_timeout=5.0, keepalive_timeout=20.0)
    h.feed(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    h.advance(10.0)  # past the head timeout: that one is for a fresh connection only
    assert not h.closed
    h.advance(10.1)
    assert h.transport.events == ["close"]
    assert h.transport.take() == b""


async def test_body_that_stops_arriving_is_408() -> None:
    h = Harness(head_timeout=5.0)
    h.feed(b"POST /body HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nabc")
    await settle()
    h.advance(5.1)
    assert h.transport.take() == error(b"408 Request Timeout", b"Request timeout")
    assert h.closed


def tick(h: Harness, seconds: float) -> None:
    """Time passing as the sweep sees it: one look per tick."""
    for _ in range(round(seconds / TICK_SECONDS)):
        h.advance(TICK_SECONDS)


async def test_a_body_a_plugin_buffers_trickling_in_is_408_at_its_deadline() -> None:
    """One byte a second never trips the between-bytes timeout; the whole-body deadline does."""
    h = Harness(head_timeout=5.0, request_body_timeout=10.0, request_body_min_rate=0)
    h.feed(b"POST /body HTTP/1.1\r\nHost: h\r\nContent-Length: 1000\r\n\r\n")
    await settle()
    for _ in range(10):
        tick(h, 1.0)
        assert h.feed(b"a") == b""
    tick(h, 1.0)
    assert h.transport.take() == error(b"408 Request Timeout", b"Request timeout")
    assert h.closed


async def test_a_streamed_body_below_the_minimum_rate_is_408_after_the_grace() -> None:
    h = Harness(head_timeout=60.0, request_body_min_rate=100)
    h.feed(b"POST /proxy/up HTTP/1.1\r\nHost: h\r\nContent-Length: 100000\r\n\r\n")
    assert h.upstream.sent().startswith(b"POST /proxy/up HTTP/1.1\r\n")  # streamed upstream
    for _ in range(5):  # 10 bytes/s: far below the rate, but within the grace
        tick(h, 1.0)
        h.feed(b"x" * 10)
    assert not h.closed
    tick(h, 1.0)
    assert h.transport.take() == error(b"408 Request Timeout", b"Request timeout")
    assert h.closed


def test_a_streamed_body_at_the_minimum_rate_goes_on() -> None:
    h = Harness(head_timeout=60.0, request_body_min_rate=100)
    h.feed(b"POST /proxy/up HTTP/1.1\r\nHost: h\r\nContent-Length: 100000\r\n\r\n")
    for _ in range(20):
        tick(h, 1.0)
        h.feed(b"x" * 120)
    assert not h.closed and h.transport.take() == b""


def test_time_with_reading_paused_does_not_count_against_the_rate() -> None:
    """The upstream not taking the body (its buffer full) is not the client being slow."""
    h = Harness(head_timeout=60.0, request_body_min_rate=100)
    h.feed(b"POST /proxy/up HTTP/1.1\r\nHost: h\r\nContent-Length: 100000\r\n\r\n")
    tick(h, 1.0)
    h.feed(b"x" * 200)
    exchange = h.conn.queue[0]
    exchange.upstream_write_paused()
    for _ in range(30):
        tick(h, 1.0)
    exchange.upstream_write_resumed()
    tick(h, 1.0)
    h.feed(b"x" * 200)
    tick(h, 1.0)
    assert not h.closed and h.transport.take() == b""


async def test_a_client_waiting_for_100_continue_is_not_slow() -> None:
    h = Harness(head_timeout=5.0, request_body_min_rate=100)
    h.feed(b"POST /async HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n")
    await settle()
    for _ in range(4):
        tick(h, 4.0)  # the gateway has not asked for the body: no timeout of the client's
    assert not h.closed


async def test_slow_pending_handler_is_not_a_client_timeout() -> None:
    h = Harness(head_timeout=5.0)
    h.feed(b"GET /async HTTP/1.1\r\nHost: h\r\n\r\n")
    await settle()
    h.advance(30.0)  # the request is complete: waiting on the gateway is not the client's fault
    assert not h.closed
    assert h.transport.take() == b""
    await h.handler.release()
    assert h.transport.take() == ok(b"GET /async @h")


# -- the client going away ------------------------------------------------------------------------


async def test_client_gone_cancels_the_pending_handler() -> None:
    h = Harness()
    h.feed(b"GET /async HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n")
    await settle()
    exchange = h.handler.seen[0]
    task = exchange.task
    assert task is not None and not task.done()
    h.conn.connection_lost(None)
    await settle()
    assert task.cancelled()
    assert exchange.finished
    assert not h.conn.queue
    assert h.conn not in h.server.connections
    assert h.transport.take() == b""


async def test_draining_answers_busy_connections_with_close() -> None:
    h = Harness()
    h.feed(b"GET /async HTTP/1.1\r\nHost: h\r\n\r\n")
    await settle()
    h.server.start_draining()
    assert not h.closed
    await h.handler.release()
    assert h.transport.take() == ok(b"GET /async @h", close=True)
    assert h.closed


def test_draining_keeps_an_idle_connection_for_the_grace_and_answers_it_with_close() -> None:
    """A request already on its way when the drain begins is answered, not lost."""
    h = Harness(drain_grace=2.0)
    assert h.feed(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n") == ok(b"GET /a @h")
    h.server.start_draining()
    h.advance(1.5)
    assert not h.closed
    assert h.feed(b"GET /b HTTP/1.1\r\nHost: h\r\n\r\n") == ok(b"GET /b @h", close=True)
    assert h.closed


def test_draining_closes_a_connection_idle_past_the_grace() -> None:
    h = Harness(drain_grace=2.0, keepalive_timeout=75.0)
    assert h.feed(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n") == ok(b"GET /a @h")
    h.advance(10.0)  # idle for a while before the drain: the grace still counts from its start
    h.server.start_draining()
    h.advance(1.9)
    assert not h.closed
    h.advance(0.3)
    assert h.closed and h.transport.take() == b""


async def test_draining_keeps_a_connection_whose_keep_alive_answer_began_before_it() -> None:
    """An answer that went out without `connection: close` (it began before the drain): the
    client may send its next request at once, so the connection stays for the grace."""
    h = Harness(drain_grace=2.0)
    h.feed(b"GET /proxy/1 HTTP/1.1\r\nHost: h\r\n\r\n")
    upstream = h.upstream.connections[0]
    upstream.data_received(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nab")
    h.server.start_draining()
    upstream.data_received(b"cd")
    assert h.transport.take().endswith(b"\r\n\r\nabcd") and not h.closed
    assert h.feed(b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n") == ok(b"GET /x @h", close=True)
    assert h.closed


# -- back-pressure between the two sides ----------------------------------------------------------


def test_client_write_pause_pauses_the_upstream_and_resume_resumes_it() -> None:
    h = Harness()
    h.feed(b"GET /proxy/1 HTTP/1.1\r\nHost: h\r\n\r\n")
    assert h.upstream.sent().startswith(b"GET /proxy/1 HTTP/1.1\r\nhost: upstream.test\r\n")
    transport = h.upstream.transport(h.upstream.connections[0])
    h.conn.pause_writing()
    assert not transport.reading
    h.conn.resume_writing()
    assert transport.reading


def test_next_pipelined_exchange_starts_paused_when_the_client_still_is() -> None:
    h = Harness()
    h.feed(b"GET /proxy/1 HTTP/1.1\r\nHost: h\r\n\r\nGET /proxy/2 HTTP/1.1\r\nHost: h\r\n\r\n")
    (upstream,) = h.upstream.connections
    transport = h.upstream.transport(upstream)
    h.conn.pause_writing()  # the client stopped reading
    h.upstream.answer(b"one")  # ...and the first answer completed anyway (it was already read)
    # the pooled connection went straight to the second request, which the client is still
    # not reading: the upstream must not be read either
    assert upstream.sink is h.handler.seen[1]
    assert not transport.reading
    h.conn.resume_writing()
    assert transport.reading
    h.upstream.answer(b"two")
    out = h.transport.take()
    assert out == (
        b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\none"
        b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\ntwo"
    )


def test_upstream_write_pause_holds_the_client_and_ends_with_the_exchange() -> None:
    h = Harness()
    h.feed(b"POST /proxy HTTP/1.1\r\nHost: h\r\nContent-Length: 6\r\n\r\nabc")
    (upstream,) = h.upstream.connections
    upstream.pause_writing()  # the upstream's write buffer is full
    assert h.transport.events == ["pause"]
    upstream.resume_writing()
    assert h.transport.events == ["pause", "resume"]
    upstream.pause_writing()
    h.feed(b"def")  # (already read before the pause took effect)
    assert h.upstream.sent().endswith(b"\r\n\r\nabcdef")
    h.upstream.answer(b"done")  # and the upstream never lifts its pause: it is pooled now
    assert h.transport.events == ["pause", "resume", "pause", "resume"]
    assert h.transport.take() == b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\ndone"
    assert h.feed(b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n") == ok(b"GET /next @h")


# -- the request head sent upstream ---------------------------------------------------------------


def test_forwarded_headers_follow_the_host_of_each_request_on_one_connection() -> None:
    """X-Forwarded-Host is prebuilt per connection: a pipelined request with another Host (or
    none, in HTTP/1.0) must still get its own."""
    h = Harness()
    h.feed(
        b"GET /proxy/1 HTTP/1.1\r\nHost: a.test:8000\r\n\r\n"
        b"GET /proxy/2 HTTP/1.1\r\nHost: [::1]:8000\r\n\r\n"
        b"GET /proxy/3 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
        b"GET /proxy/4 HTTP/1.1\r\nHost: a.test:8000\r\nX-Forwarded-For: 192.0.2.1\r\n\r\n"
    )
    tail = b"x-forwarded-proto: http\r\nx-forwarded-port: 8000\r\nx-real-ip: 203.0.113.7\r\n"
    expected = [
        b"x-forwarded-for: 203.0.113.7\r\n%bx-forwarded-host: a.test\r\n\r\n" % tail,
        b"x-forwarded-for: 203.0.113.7\r\n%bx-forwarded-host: [::1]\r\n\r\n" % tail,
        b"x-forwarded-for: 203.0.113.7\r\n%b\r\n" % tail,
        b"x-forwarded-for: 192.0.2.1, 203.0.113.7\r\n%bx-forwarded-host: a.test\r\n\r\n" % tail,
    ]
    transport = h.upstream.transport(h.upstream.connections[0])
    for index, lines in enumerate(expected):
        if index:
            transport.written.clear()
            h.upstream.answer(b"ok")  # the next request then goes out on the same connection
        head = h.upstream.sent()
        assert head.startswith(b"GET /proxy/%d HTTP/1.1\r\nhost: upstream.test\r\n" % (index + 1))
        assert head.endswith(lines), head


def test_http_version_is_read_from_the_request_line() -> None:
    """llhttp's keep-alive flag stands in for the version only where it cannot be wrong."""
    h = Harness()
    out = h.feed(b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    assert out == ok(b"GET /a @", keep_alive_10=True)
    out = h.feed(b"GET /b HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\n\r\n")
    assert out == ok(b"GET /b @h")
    out = h.feed(b"GET /c HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
    assert out == ok(b"GET /c @h", close=True)
    assert h.closed


def test_set_header_replaces_every_repeat_in_place() -> None:
    h = Harness()
    h.feed(b"GET /x HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nX-B: 2\r\nX-A: 3\r\nX-C: 4\r\nX-A: 5\r\n\r\n")
    exchange = h.handler.seen[0]
    exchange.headers = [(b"x-a", b"1"), (b"x-b", b"2"), (b"x-a", b"3"), (b"x-c", b"4")]
    exchange.set_header(b"x-a", b"new")
    assert exchange.headers == [(b"x-a", b"new"), (b"x-b", b"2"), (b"x-c", b"4")]
    exchange.set_header(b"x-c", b"C")
    exchange.set_header(b"x-d", b"D")
    assert exchange.headers == [(b"x-a", b"new"), (b"x-b", b"2"), (b"x-c", b"C"), (b"x-d", b"D")]


def test_proxy_connection_does_not_pass_an_old_version_for_http_11() -> None:
    """llhttp honours Proxy-Connection like Connection: the version must still be read."""
    h = Harness()
    out = h.feed(b"GET /a HTTP/1.0\r\nProxy-Connection: keep-alive\r\n\r\n")
    assert out == ok(b"GET /a @", keep_alive_10=True)  # an HTTP/1.0 answer: no Host needed
    h = Harness()
    out = h.feed(b"GET /a HTTP/2.0\r\nHost: h\r\nProxy-Connection: keep-alive\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 505 ")


def test_answers_to_one_read_of_pipelined_requests_go_out_in_one_write() -> None:
    h = Harness()
    out = h.feed(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n" * 3)
    assert out == ok(b"GET /a @h") * 3
    assert h.transport.writes == 1


# -- Upgrade requests and underscore names (request smuggling) -----------------------------------

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n"


def chunked(data: bytes, size: int = 7) -> bytes:
    pieces = [data[i : i + size] for i in range(0, len(data), size)]
    return b"".join(b"%x\r\n%b\r\n" % (len(piece), piece) for piece in pieces) + b"0\r\n\r\n"


@pytest.mark.parametrize("connection", [b"Upgrade", b"keep-alive, upgrade"])
@pytest.mark.parametrize("framing", ["length", "chunked"])
@pytest.mark.parametrize("split", [False, True])
async def test_upgrade_request_body_is_its_body_not_a_request(
    connection: bytes, framing: str, split: bool
) -> None:
    """llhttp skips an Upgrade request's body; the gateway reads it as the body all the same."""
    h = Harness()
    if framing == "length":
        framed = b"Content-Length: %d\r\n\r\n%b" % (len(SMUGGLED), SMUGGLED)
    else:
        framed = b"Transfer-Encoding: chunked\r\n\r\n" + chunked(SMUGGLED)
    head, _, body = framed.partition(b"\r\n\r\n")
    request = (
        b"POST /body HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: %b\r\n%b\r\n\r\n"
        % (connection, head)
    )
    after = b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n"
    if split:  # the head alone, then the body byte by byte, then the next request
        out = h.feed(request)
        out += h.feed(*(body[i : i + 1] for i in range(len(body))))
        out += h.feed(after)
    else:
        out = h.feed(request + body + after)
    await settle()
    assert out + h.transport.take() == ok(SMUGGLED) + ok(b"GET /next @h")
    assert [e.path for e in h.handler.seen] == [b"/body", b"/next"]
    assert not h.closed


async def test_upgrade_request_with_a_malformed_chunked_body_is_400() -> None:
    h = Harness()
    out = h.feed(
        b"POST /body HTTP/1.1\r\nHost: h\r\nUpgrade: foo\r\nConnection: upgrade\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n" + SMUGGLED
    )
    await settle()
    assert (out + h.transport.take()).startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert h.closed
    assert [e.path for e in h.handler.seen] == [b"/body"]


def test_upgrade_request_without_body_is_followed_by_the_next_request() -> None:
    h = Harness()
    out = h.feed(
        b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
        b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n"
    )
    assert out == ok(b"GET /ws @h") + ok(b"GET /next @h")
    assert h.handler.seen[0].headers == []  # Upgrade and Connection are hop-by-hop


UNDERSCORED = (
    b"GET / HTTP/1.1\r\nHost: h\r\nX_Custom: 1\r\nX-Plain: 2\r\nTransfer_Encoding: chunked\r\n"
    b"content_length: 5\r\nX_Forwarded_For: 10.0.0.1\r\nhost_: evil\r\n\r\n"
)


def test_underscore_names_are_dropped_by_default() -> None:
    h = Harness()
    assert h.feed(UNDERSCORED) == ok(b"GET / @h")
    assert h.handler.seen[0].headers == [(b"x-plain", b"2")]
    # and the next request starts clean
    h.feed(b"GET /b HTTP/1.1\r\nHost: h\r\nX-Other: 3\r\n\r\n")
    assert h.handler.seen[1].headers == [(b"x-other", b"3")]


def test_underscores_in_headers_keeps_names_that_alias_nothing_the_gateway_owns() -> None:
    h = Harness(underscores_in_headers=True)
    assert h.feed(UNDERSCORED) == ok(b"GET / @h")
    # host_ reads as HTTP_HOST_ in CGI terms: no alias of Host
    assert h.handler.seen[0].headers == [
        (b"x_custom", b"1"),
        (b"x-plain", b"2"),
        (b"host_", b"evil"),
    ]


@pytest.fixture
def owned_fields():
    """Fields the layers above own, as the proxy hands them over; back to none after."""
    yield Server.own_fields
    Server.own_fields((), ())


@pytest.mark.parametrize("underscores", [True, False])
def test_withheld_fields_and_every_alias_of_owned_ones_are_dropped(
    owned_fields, underscores: bool
) -> None:
    owned_fields({b"x-consumer-id"}, {b"x-user-email"})
    h = Harness(underscores_in_headers=underscores)
    h.feed(
        b"GET / HTTP/1.1\r\nHost: h\r\nX-Consumer-ID: forged\r\nX_Consumer_ID: forged\r\n"
        b"x_consumer-id: forged\r\nX_User_Email: forged\r\nX-User-Email: kept\r\n"
        b"X_Other: 1\r\n\r\n"
    )
    # the owned field itself is the handler's to set or replace; only its aliases go
    expected = [(b"x-user-email", b"kept")] + ([(b"x_other", b"1")] if underscores else [])
    assert h.handler.seen[0].headers == expected


def test_owning_other_fields_later_classifies_names_again(owned_fields) -> None:
    """A reload hands over other names: a name seen before is judged by the new ones."""
    h = Harness(underscores_in_headers=True)
    h.feed(b"GET / HTTP/1.1\r\nHost: h\r\nX_Token: 1\r\n\r\n")
    owned_fields((), {b"x-token"})
    h.feed(b"GET / HTTP/1.1\r\nHost: h\r\nX_Token: 1\r\n\r\n")
    assert [exchange.headers for exchange in h.handler.seen] == [[(b"x_token", b"1")], []]


def test_dropped_underscore_names_still_count_toward_the_head_size() -> None:
    h = Harness(max_head_size=512)
    out = h.feed(b"GET / HTTP/1.1\r\nHost: h\r\nX_Pad: " + b"a" * 600 + b"\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 431 ")
    assert h.closed


# -- state machines and the tunnel ----------------------------------------------------------------


def test_a_move_its_table_does_not_allow_raises() -> None:
    h = Harness()
    exchange = Exchange(h.conn, b"GET", b"/", b"", b"h", [], True)
    exchange.phase = FINISHED
    with pytest.raises(IllegalTransition, match="exchange: FINISHED may not move to WAITING"):
        exchange._move(WAITING)
    conn = h.upstream.connections[0]
    assert conn.phase == IDLE
    with pytest.raises(IllegalTransition, match="IDLE may not move to BODY"):
        conn._move(BODY)
    h.conn.state = LINGERING
    with pytest.raises(IllegalTransition, match="LINGERING may not move to HOLDING"):
        h.conn.move(HOLDING)


SWITCHED_101 = (
    b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n"
    b"sec-websocket-accept: x\r\n\r\n"
)


def test_a_101_hands_both_transports_to_a_tunnel() -> None:
    h = Harness()
    h.feed(
        b"GET /proxy/ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
        b"early"  # sent before the answer: held, then the tunnel's first bytes
    )
    upstream = h.upstream.connections[0]
    sent = h.upstream.sent()
    assert sent.startswith(b"GET /proxy/ws HTTP/1.1\r\n") and b"upgrade: websocket" in sent
    upstream.data_received(SWITCHED_101 + b"frame-from-upstream")
    client_end, upstream_end = h.transport.protocol, h.upstream.transport(upstream).protocol
    assert isinstance(client_end, TunnelEnd) and isinstance(upstream_end, TunnelEnd)
    out = h.transport.take()
    assert out.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert out.endswith(b"\r\n\r\nframe-from-upstream")  # the rest of the 101's read
    assert h.upstream.sent().endswith(b"early")
    assert h.conn.queue == [] and h.conn in h.server.connections  # still its listener's
    assert h.upstream.pool.busy == set()  # no longer a pooled connection
    client_end.data_received(b"to-upstream")
    upstream_end.data_received(b"to-client")
    assert h.upstream.sent().endswith(b"to-upstream") and h.transport.take() == b"to-client"
    upstream_end.pause_writing()  # the upstream's buffer is full: the client waits
    assert h.transport.events[-1] == "pause"
    upstream_end.resume_writing()
    assert h.transport.events[-1] == "resume"
    upstream_end.connection_lost(None)  # the upstream ends: the client side closes after
    assert h.closed and h.conn not in h.server.connections


def test_an_idle_tunnel_is_dropped_after_the_read_timeout() -> None:
    h = Harness()
    h.feed(
        b"GET /proxy/ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    )
    h.upstream.connections[0].data_received(SWITCHED_101)
    h.advance(30.0)  # read_timeout is 60 s
    assert not h.closed
    h.advance(31.0)
    assert h.transport.events[-1] == "abort"
    assert h.upstream.transport(h.upstream.connections[0]).closed
