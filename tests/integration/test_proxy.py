"""The proxy on loopback: a real echo upstream behind an embedded gateway, driven by raw sockets.

Connection reuse, pipelining, message framing without bodies, header rewriting, routing rewrites
and the gateway's own error answers (404, 502, 504).
"""

from __future__ import annotations

import json
import time

import pytest

pytestmark = pytest.mark.integration

JSON_TYPE = "application/json; charset=utf-8"
NO_ROUTE = b'{"message":"no Route matched with those values"}'
BAD_GATEWAY = b'{"message":"An invalid response was received from the upstream server"}'
TIMED_OUT = b'{"message":"The upstream server is timing out"}'

HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
}


def echoed(response) -> dict:
    """What the echo upstream saw: method, path (with query), headers, body."""
    assert response.status == 200, (response.status, response.body)
    return json.loads(response.body)


def upstream_headers(response) -> dict[str, list[str]]:
    seen: dict[str, list[str]] = {}
    for name, value in echoed(response)["headers"]:
        seen.setdefault(name, []).append(value)
    return seen


# -- basics and connection reuse ------------------------------------------------------------------


def test_get_is_proxied_with_method_path_and_query(gateway, connect) -> None:
    client = connect(gateway.port)
    response = client.request("GET", "/echo/a/b?x=1&y=%20z")
    seen = echoed(response)
    assert (seen["method"], seen["path"], seen["body"]) == ("GET", "/echo/a/b?x=1&y=%20z", "")
    assert response.header("content-type") == "application/json"
    assert int(response.header("content-length")) == len(response.body)


def test_post_body_reaches_upstream(gateway, connect) -> None:
    client = connect(gateway.port)
    seen = echoed(client.request("POST", "/echo", [("Content-Type", "text/plain")], b"hello"))
    assert (seen["method"], seen["body"]) == ("POST", "hello")
    assert ["content-length", "5"] in seen["headers"]


def test_empty_body_keeps_its_explicit_content_length(gateway, connect) -> None:
    client = connect(gateway.port)
    seen = upstream_headers(client.request("POST", "/echo", [("Content-Length", "0")]))
    assert seen["content-length"] == ["0"]
    seen = upstream_headers(client.request("GET", "/echo"))
    assert "content-length" not in seen and "transfer-encoding" not in seen


def test_keep_alive_reuses_one_upstream_connection(gateway, connect) -> None:
    client = connect(gateway.port)
    for i in range(5):
        assert echoed(client.request("GET", f"/echo/{i}"))["path"] == f"/echo/{i}"
    # a second client connection is served from the same pooled upstream connection
    other = connect(gateway.port)
    assert echoed(other.request("GET", "/echo/other"))["path"] == "/echo/other"
    assert gateway.wait_for(lambda: not gateway.pool().busy)
    assert gateway.pool_state() == (1, 0)
    assert gateway.call(lambda: gateway.pool().idle[0].requests) == 6


def test_two_concurrent_clients_use_two_upstream_connections(gateway, connect) -> None:
    first, second = connect(gateway.port), connect(gateway.port)
    first.send(b"GET /sleep?ms=300 HTTP/1.1\r\nHost: a\r\n\r\n")
    second.send(b"GET /sleep?ms=300 HTTP/1.1\r\nHost: b\r\n\r\n")
    assert first.read_response().status == 200
    assert second.read_response().status == 200
    assert gateway.wait_for(lambda: not gateway.pool().busy)
    assert gateway.pool_state() == (2, 0)


# -- pipelining -----------------------------------------------------------------------------------


def test_pipelined_requests_are_answered_in_order(gateway, connect) -> None:
    client = connect(gateway.port)
    client.send(
        b"GET /sleep?ms=200 HTTP/1.1\r\nHost: a\r\n\r\n"
        b"POST /echo/2 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\ntwo"
        b"GET /echo/3 HTTP/1.1\r\nHost: a\r\n\r\n"
    )
    assert echoed(client.read_response())["path"] == "/sleep?ms=200"
    second = echoed(client.read_response())
    assert (second["path"], second["body"]) == ("/echo/2", "two")
    assert echoed(client.read_response())["path"] == "/echo/3"
    assert not client.is_closed(0.2)


def test_pipelined_local_401_does_not_corrupt_the_next_request(gateway, connect) -> None:
    client = connect(gateway.port)
    client.send(
        b"GET /echo/1 HTTP/1.1\r\nHost: a\r\n\r\n"
        b"POST /deny HTTP/1.1\r\nHost: a\r\nContent-Length: 22\r\n\r\nGET /smuggled HTTP/1.1"
        b"GET /echo/3 HTTP/1.1\r\nHost: a\r\n\r\n"
    )
    assert echoed(client.read_response())["path"] == "/echo/1"
    denied = client.read_response()
    assert (denied.status, denied.body) == (401, b'{"message":"Unauthorized"}')
    assert echoed(client.read_response())["path"] == "/echo/3"


def test_bodiless_responses_keep_the_framing(gateway, connect) -> None:
    client = connect(gateway.port)
    client.send(
        b"HEAD /bytes?size=100 HTTP/1.1\r\nHost: a\r\n\r\n"
        b"GET /status/204 HTTP/1.1\r\nHost: a\r\n\r\n"
        b"GET /status/304 HTTP/1.1\r\nHost: a\r\n\r\n"
        b"HEAD /stream?size=100 HTTP/1.1\r\nHost: a\r\n\r\n"
        b"HEAD /echo HTTP/1.1\r\nHost: a\r\n\r\n"
        b"GET /echo/last HTTP/1.1\r\nHost: a\r\n\r\n"
    )
    head = client.read_response(head=True)
    assert (head.status, head.header("content-length")) == (200, "100")
    no_content = client.read_response()
    assert no_content.status == 204
    assert "content-length" not in no_content.names()
    assert "transfer-encoding" not in no_content.names()
    not_modified = client.read_response()
    assert not_modified.status == 304
    assert "transfer-encoding" not in not_modified.names()
    head_stream = client.read_response(head=True)
    assert head_stream.status == 200
    assert "transfer-encoding" not in head_stream.names()
    head_echo = client.read_response(head=True)
    assert head_echo.status == 200
    # if any of the above had a body the gateway sent, this would read garbage
    assert echoed(client.read_response())["path"] == "/echo/last"
    assert client.buffer == b""


# -- headers --------------------------------------------------------------------------------------


def test_hop_by_hop_headers_removed_and_forwarding_headers_added(gateway, connect) -> None:
    client = connect(gateway.port)
    response = client.request(
        "GET",
        "/echo",
        [
            ("Connection", "keep-alive, X-Drop-Me, x-also-drop"),
            ("X-Drop-Me", "1"),
            ("X-Also-Drop", "2"),
            ("Keep-Alive", "timeout=5"),
            ("TE", "trailers"),
            ("Trailer", "X-T"),
            ("Proxy-Authorization", "Basic Zm9vOmJhcg=="),
            ("Proxy-Connection", "keep-alive"),
            ("X-Forwarded-For", "198.51.100.1"),
            ("X-Forwarded-For", "198.51.100.2"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "spoofed.example"),
            ("X-Forwarded-Port", "1"),
            ("X-Real-IP", "6.6.6.6"),
            ("X-Keep", "yes"),
            ("Authorization", "Bearer abc"),
        ],
        host="gw.test:8443",
    )
    seen = upstream_headers(response)
    assert not HOP_BY_HOP & seen.keys()
    assert "x-drop-me" not in seen and "x-also-drop" not in seen
    assert seen["host"] == [f"127.0.0.1:{gateway.call(lambda: gateway.pool().port)}"]
    assert seen["x-keep"] == ["yes"]
    assert seen["authorization"] == ["Bearer abc"]
    assert seen["x-forwarded-for"] == ["198.51.100.1, 198.51.100.2, 127.0.0.1"]
    assert seen["x-forwarded-proto"] == ["http"]
    assert seen["x-forwarded-host"] == ["gw.test"]
    assert seen["x-forwarded-port"] == [str(gateway.port)]
    assert seen["x-real-ip"] == ["127.0.0.1"]
    assert set(seen) == {
        "host",
        "x-keep",
        "authorization",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-forwarded-port",
        "x-real-ip",
    }


def test_x_forwarded_for_is_created_when_absent(gateway, connect) -> None:
    seen = upstream_headers(connect(gateway.port).request("GET", "/echo"))
    assert seen["x-forwarded-for"] == ["127.0.0.1"]
    assert seen["x-forwarded-host"] == ["gw.test"]


def test_websocket_upgrade_declined_upstream_keeps_the_connection_usable(gateway, connect) -> None:
    """The upstream answers 200 instead of 101: an ordinary response, the next request its own."""
    client = connect(gateway.port)
    response = client.request(
        "GET", "/echo/ws", [("Connection", "Upgrade"), ("Upgrade", "websocket")]
    )
    seen = upstream_headers(response)
    assert seen["upgrade"] == ["websocket"]  # offered, as Kong does
    assert seen["connection"] == ["keep-alive, Upgrade"]
    assert echoed(client.request("GET", "/echo/after"))["path"] == "/echo/after"


def test_other_upgrades_are_not_offered_upstream(gateway, connect) -> None:
    client = connect(gateway.port)
    response = client.request("GET", "/echo/h2", [("Connection", "Upgrade"), ("Upgrade", "h2c")])
    seen = upstream_headers(response)
    assert "upgrade" not in seen and "connection" not in seen
    assert echoed(client.request("GET", "/echo/after"))["path"] == "/echo/after"


def test_response_hop_by_hop_headers_are_not_forwarded(gateway, connect) -> None:
    client = connect(gateway.port)
    response = client.request("GET", "/close?size=5")  # the upstream says Connection: close
    assert response.body == b"xxxxx"
    assert "connection" not in response.names()
    assert not client.is_closed(0.2)  # that was the upstream hop's business only


def test_host_is_rewritten_to_the_upstream(gateway, connect) -> None:
    seen = upstream_headers(connect(gateway.port).request("GET", "/echo", host="public.example"))
    assert seen["host"] == [f"127.0.0.1:{gateway.call(lambda: gateway.pool().port)}"]


def test_preserve_host_keeps_the_client_host(gateway, connect) -> None:
    seen = upstream_headers(connect(gateway.port).request("GET", "/preserve/x", host="pub.example"))
    assert seen["host"] == ["pub.example"]
    assert echoed(connect(gateway.port).request("GET", "/preserve/x"))["path"] == "/preserve/x"


# -- routing rewrites -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "upstream"),
    [
        ("/strip/a/b?x=1", "/a/b?x=1"),
        ("/strip", "/"),
        ("/strip/", "/"),
        ("/echo/kept", "/echo/kept"),
        ("/based/x?q", "/base/x?q"),
        ("/based", "/base"),
    ],
)
def test_strip_path_and_service_path(gateway, connect, target: str, upstream: str) -> None:
    assert echoed(connect(gateway.port).request("GET", target))["path"] == upstream


def test_no_route_is_404_with_kongs_message(gateway, connect) -> None:
    client = connect(gateway.port)
    response = client.request("GET", "/nothing/here")
    assert (response.status, response.body) == (404, NO_ROUTE)
    assert response.header("content-type") == JSON_TYPE
    assert echoed(client.request("GET", "/echo"))["path"] == "/echo"  # still usable


def test_absolute_form_target_is_routed_by_its_path(gateway, connect) -> None:
    client = connect(gateway.port)
    client.send(b"GET http://gw.test/echo/abs?q=1 HTTP/1.1\r\nHost: other\r\n\r\n")
    seen = echoed(client.read_response())
    assert seen["path"] == "/echo/abs?q=1"
    assert ["x-forwarded-host", "gw.test"] in seen["headers"]


def test_http_10_client_gets_a_closed_connection(gateway, connect) -> None:
    client = connect(gateway.port)
    client.send(b"GET /echo/old HTTP/1.0\r\n\r\n")
    response = client.read_response()
    assert echoed(response)["path"] == "/echo/old"
    assert response.header("connection") == "close"
    assert client.is_closed()


def test_http_10_client_gets_close_delimited_instead_of_chunked(gateway, connect) -> None:
    client = connect(gateway.port)
    client.send(b"GET /stream?size=70000 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    response = client.read_response()
    assert response.status == 200
    assert not response.chunked
    assert "transfer-encoding" not in response.names()
    assert response.body == b"x" * 70000
    assert client.is_closed()


# -- upstream faults ------------------------------------------------------------------------------


def test_upstream_refused_is_502(gateway, connect) -> None:
    client = connect(gateway.port)
    response = client.request("GET", "/dead/x")
    assert (response.status, response.body) == (502, BAD_GATEWAY)
    assert response.header("content-type") == JSON_TYPE
    assert echoed(client.request("GET", "/echo"))["path"] == "/echo"


def test_slow_upstream_is_504_after_read_timeout(gateway, connect) -> None:
    client = connect(gateway.port)
    started = time.monotonic()
    response = client.request("GET", "/slow/sleep?ms=3000")
    elapsed = time.monotonic() - started
    assert (response.status, response.body) == (504, TIMED_OUT)  # the upstream still sleeps
    assert elapsed >= 0.3  # read_timeout 300 ms: a timeout never fires early (timers.py)
    # the timed-out upstream connection is dropped, not pooled
    assert gateway.pool_state(2) == (0, 0)
    assert echoed(client.request("GET", "/echo"))["path"] == "/echo"


def test_read_timeout_does_not_cut_a_slow_but_steady_upstream(gateway, connect) -> None:
    # the timeout is between reads, not for the whole response
    response = connect(gateway.port).request("GET", "/slow/stream?size=3000000")
    assert (response.status, len(response.body)) == (200, 3_000_000)


OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


def answer_once(conn) -> None:
    """Answers the first request on a connection; the next one finds the connection closing
    without a byte of answer: what an upstream whose keep-alive timeout just fired looks like."""
    if conn.read_head() is not None:
        conn.send(OK)
        conn.read_head()


def test_idempotent_request_on_a_stale_pooled_connection_is_retried(raw_gateway, connect) -> None:
    flaky_gateway, flaky = raw_gateway(answer_once)
    client = connect(flaky_gateway.port)
    assert client.request("GET", "/one").body == b"ok"
    assert flaky_gateway.wait_for(lambda: len(flaky_gateway.pool().idle) == 1)
    response = client.request("GET", "/two")
    assert (response.status, response.body) == (200, b"ok")
    assert flaky.connections == 2
    # the first try reached the stale connection, the retry a fresh one
    assert flaky.requests == [b"GET /one HTTP/1.1", b"GET /two HTTP/1.1", b"GET /two HTTP/1.1"]


def test_non_idempotent_request_on_a_stale_pooled_connection_is_not_retried(
    raw_gateway, connect
) -> None:
    flaky_gateway, flaky = raw_gateway(answer_once)
    client = connect(flaky_gateway.port)
    assert client.request("GET", "/one").body == b"ok"
    assert flaky_gateway.wait_for(lambda: len(flaky_gateway.pool().idle) == 1)
    response = client.request("POST", "/two", body=b"data")
    assert (response.status, response.body) == (502, BAD_GATEWAY)
    assert flaky.connections == 1


@pytest.mark.parametrize(
    "answer",
    [
        b"NOT HTTP AT ALL\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nx-big: " + b"v" * 100_000 + b"\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n" + b"".join(b"x-%d: v\r\n" % i for i in range(300)) + b"\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n",
    ],
    ids=["garbage", "head-too-large", "too-many-headers", "closed-in-head"],
)
def test_malformed_upstream_response_is_502(raw_gateway, connect, answer: bytes) -> None:
    def script(conn) -> None:
        conn.read_head()
        conn.send(answer)

    gateway, _ = raw_gateway(script)
    response = connect(gateway.port).request("GET", "/x")
    assert (response.status, response.body) == (502, BAD_GATEWAY)
    assert gateway.pool_state() == (0, 0)


def test_upstream_closing_mid_body_aborts_the_client_connection(raw_gateway, connect) -> None:
    def script(conn) -> None:
        conn.read_head()
        conn.send(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n" + b"y" * 10)

    gateway, _ = raw_gateway(script)
    client = connect(gateway.port)
    client.send(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
    # the head and 10 bytes arrive, then the connection ends: the client can tell the body is
    # short (a complete-looking response would be a lie)
    with pytest.raises(ConnectionError):
        client.read_response()
    assert gateway.pool_state() == (0, 0)


def test_pipelined_requests_across_every_response_framing(gateway, connect) -> None:
    client = connect(gateway.port)
    client.send(
        b"GET /close?size=10 HTTP/1.1\r\nHost: a\r\n\r\n"
        b"GET /stream?size=20 HTTP/1.1\r\nHost: a\r\n\r\n"
        b"GET /bytes?size=30 HTTP/1.1\r\nHost: a\r\n\r\n"
        b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 200000\r\n\r\n"
        + b"u" * 200_000
        + b"GET /echo/end HTTP/1.1\r\nHost: a\r\n\r\n"
    )
    assert [client.read_response().body for _ in range(3)] == [b"x" * 10, b"x" * 20, b"x" * 30]
    assert json.loads(client.read_response().body)["size"] == 200_000
    assert echoed(client.read_response())["path"] == "/echo/end"


def test_early_upstream_answer_ends_the_client_connection(raw_gateway, connect) -> None:
    def script(conn) -> None:
        conn.read_head()
        conn.send(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 4\r\n\r\nbig!")
        time.sleep(0.5)  # then the upstream would read on, but the gateway is gone

    gateway, _ = raw_gateway(script)
    client = connect(gateway.port)
    client.send(b"POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000\r\n\r\n" + b"z" * 1000)
    response = client.read_response()
    assert (response.status, response.body) == (413, b"big!")
    # the rest of the body cannot be framed for another request
    assert response.header("connection") == "close"
    assert client.is_closed()
    assert gateway.pool_state() == (0, 0)


def test_informational_upstream_responses_are_not_forwarded(raw_gateway, connect) -> None:
    def script(conn) -> None:
        while conn.read_head() is not None:
            conn.send(
                b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload\r\n\r\n"
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
            )

    gateway, _ = raw_gateway(script)
    client = connect(gateway.port)
    for _ in range(2):
        response = client.request("GET", "/")
        assert (response.status, response.body) == (200, b"ok")
        assert "link" not in response.names()
    assert client.buffer == b""


# -- limits and timeouts through the running gateway ----------------------------------------------


def test_client_keepalive_timeout_closes_an_idle_connection(make_gateway, connect) -> None:
    gateway = make_gateway(keepalive_timeout=0.3)
    client = connect(gateway.port)
    assert client.request("GET", "/echo").status == 200
    started = time.monotonic()
    assert client.is_closed(10.0)  # closed by the gateway, silently
    assert time.monotonic() - started >= 0.3  # not before the keepalive_timeout


def test_head_timeout_answers_408(make_gateway, connect) -> None:
    gateway = make_gateway(head_timeout=0.3)
    client = connect(gateway.port)
    client.send(b"GET /echo HTTP/1.1\r\nHost: a\r\n")  # the blank line never comes
    response = client.read_response()
    assert (response.status, response.body) == (408, b'{"message":"Request timeout"}')
    assert client.is_closed()


def test_request_limits_from_the_config(make_gateway, connect) -> None:
    gateway = make_gateway(max_body_size=1000, max_uri_size=100, max_headers=10)
    response = connect(gateway.port).request("POST", "/upload", body=b"b" * 1001)
    assert (response.status, response.body) == (
        413,
        b'{"message":"Request size limit exceeded"}',
    )
    assert connect(gateway.port).request("GET", "/echo/" + "u" * 100).status == 414
    many = [(f"X-{i}", "v") for i in range(11)]
    assert connect(gateway.port).request("GET", "/echo", many).status == 431
    assert uploaded_size(connect(gateway.port).request("POST", "/upload", body=b"b" * 1000)) == 1000


def uploaded_size(response) -> int:
    assert response.status == 200, response.body
    return json.loads(response.body)["size"]


def test_upstream_idle_connections_expire(make_gateway, connect) -> None:
    gateway = make_gateway(upstream_idle_timeout=0.3)
    assert connect(gateway.port).request("GET", "/echo").status == 200
    assert gateway.pool_state() == (1, 0)
    assert gateway.wait_for(lambda: not gateway.pool().idle, timeout=2.0)


def test_upstream_connection_retired_after_max_requests(make_gateway, connect) -> None:
    gateway = make_gateway(upstream_max_requests=2)
    client = connect(gateway.port)
    assert client.request("GET", "/echo").status == 200
    assert gateway.pool_state() == (1, 0)
    assert client.request("GET", "/echo").status == 200
    assert gateway.pool_state() == (0, 0)  # served its two: closed, not pooled
    assert client.request("GET", "/echo").status == 200
    assert gateway.call(lambda: [c.requests for c in gateway.pool().idle]) == [1]


def test_upstream_pool_size_zero_disables_upstream_keep_alive(make_gateway, connect) -> None:
    gateway = make_gateway(upstream_pool_size=0)
    client = connect(gateway.port)
    for _ in range(3):
        assert client.request("GET", "/echo").status == 200
        assert gateway.pool_state() == (0, 0)


def test_connection_close_from_the_client(gateway, connect) -> None:
    client = connect(gateway.port)
    response = client.request("GET", "/echo", [("Connection", "close")])
    assert response.status == 200
    assert response.header("connection") == "close"
    assert client.is_closed()
    assert gateway.pool_state() == (1, 0)  # the client's close is not the upstream's
