"""Kong's log record as a line: the fast way writes exactly what the reference way writes, for
real exchanges of every shape (proxied, local, queries with secrets, bytes JSON escapes, repeated
names, who authenticated, serialize values), and takes the reference way whenever it must."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from fastgw.config import parse_config
from fastgw.config.consumers import Consumer
from fastgw.http.exchange import Exchange
from fastgw.plugins.api import (
    Authenticated,
    Credential,
    LogContext,
    Plugin,
    RouteInfo,
    set_serialize_value,
)
from fastgw.plugins.kong_log.line import fast_line, record_line, route_record
from fastgw.plugins.kong_log.record import slow_line
from fastgw.proxy.dispatch import RouteLog, request_head_size
from tests.support.wire import Harness

CONFIG = """
_format_version: "3.0"
services:
  - name: echo
    url: http://127.0.0.1:9/base
    routes: [{name: logged, paths: ["/proxy"], hosts: ["gw.test"]}]
"""
SENSITIVE = frozenset({b"authorization", b"proxy-authorization", b"cookie", b"x-access-token"})


class Capture(Plugin):
    """A logger that keeps, for each finished request, its line both ways."""

    name = "capture"
    has_log = True

    def __init__(self) -> None:
        self.lines: list[tuple[bytes | None, bytes, bytes]] = []  # (fast, reference, logged)

    def log(self, ctx: LogContext, route: RouteInfo) -> None:
        assert isinstance(ctx, Exchange)
        logged = record_line(ctx, route)
        record = route_record(route)
        fast = fast_line(ctx, record)
        self.lines.append((fast, slow_line(ctx, record.epoch_offset, record), logged))


class Logged:
    """A real client connection whose requests all go through a log phase with `Capture`."""

    def __init__(self, *, entities: bool = True) -> None:
        self.harness = Harness()
        self.capture = Capture()
        config = parse_config(CONFIG)
        service = config.services[0]
        route = service.routes[0]
        self.route = RouteInfo(
            "echo",
            "logged",
            service if entities else None,
            route if entities else None,
            SENSITIVE,
        )
        self.hook = RouteLog(self.route, None, (self.capture,))
        self.edit: object = None
        self.harness.handler.before = self._begin

    def _begin(self, exchange: Exchange) -> None:
        exchange.hook = self.hook
        exchange.started_at = time.monotonic()
        exchange.request_size = request_head_size(exchange)
        if callable(self.edit):
            self.edit(exchange)

    def request(self, head: bytes, upstream_answer: bytes | None = None) -> tuple[bytes, dict]:
        """One request; its (line, parsed record). `upstream_answer`: the upstream's bytes."""
        self.harness.feed(head)
        if upstream_answer is not None:
            self.harness.upstream.connections[0].data_received(upstream_answer)
        fast, reference, logged = self.capture.lines.pop()
        assert fast is None or fast == reference, (fast, reference)
        assert logged == (fast if fast is not None else reference)
        self.fast = fast
        return logged, json.loads(logged)


@pytest.fixture
def logged() -> Iterator[Logged]:
    yield Logged()


UPSTREAM_OK = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nContent-Type: text/plain\r\n"
    b"Via:  1.1 edge \r\nContent-Length: 2\r\n\r\nok"
)


def test_a_proxied_request_takes_the_fast_way_and_writes_kongs_record(logged: Logged) -> None:
    line, record = logged.request(
        b"GET /proxy/a HTTP/1.1\r\nHost: gw.test\r\nUser-Agent: t\r\n"
        b"Authorization: Basic c2VjcmV0\r\nAccept: */*\r\n\r\n",
        UPSTREAM_OK,
    )
    assert logged.fast is not None
    assert b"c2VjcmV0" not in line
    request = record["request"]
    assert request["uri"] == "/proxy/a" and request["url"] == "http://gw.test/proxy/a"
    assert request["headers"] == {
        "user-agent": "t",
        "authorization": "REDACTED",
        "accept": "*/*",
    }
    assert record["upstream_uri"] == "/proxy/a" and record["upstream_status"] == "200"
    assert record["response"]["headers"] == {
        "server": "nginx/1.22.1",
        "content-type": "text/plain",
        "via": "1.1 edge",
    }
    assert record["response"]["status"] == 200 and record["source"] == "upstream"
    assert record["route"]["name"] == "logged" and record["service"]["name"] == "echo"
    assert set(record["latencies"]) == {"kong", "proxy", "request", "receive"}
    assert record["client_ip"] == "203.0.113.7"
    assert abs(record["started_at"] / 1000 - time.time()) < 60


def test_a_local_answer_has_no_upstream_part(logged: Logged) -> None:
    _, record = logged.request(b"GET /deny HTTP/1.1\r\nHost: gw.test\r\n\r\n")
    assert logged.fast is not None
    assert record["response"]["status"] == 401 and record["source"] == "kong"
    assert record["response"]["headers"] == {"www-authenticate": "Basic"}
    assert record["upstream_uri"] == "" and record["upstream_status"] == ""
    assert record["latencies"]["proxy"] == -1 and record["latencies"]["receive"] == 0


def test_secret_query_parameters_are_redacted_on_the_fast_way(logged: Logged) -> None:
    line, record = logged.request(
        b"GET /proxy/q?client_id=me&client_secret=s3cr%22t&flag HTTP/1.1\r\nHost: gw.test\r\n\r\n",
        UPSTREAM_OK,
    )
    assert logged.fast is not None and b"s3cr" not in line
    assert record["request"]["querystring"] == {
        "client_id": "me",
        "client_secret": "REDACTED",
        "flag": True,
    }
    assert record["request"]["uri"] == "/proxy/q?client_id=me&client_secret=REDACTED&flag="
    assert record["upstream_uri"] == "/proxy/q?client_id=me&client_secret=REDACTED&flag="


@pytest.mark.parametrize(
    "head",
    [
        b'GET /proxy/"quoted"\\ HTTP/1.1\r\nHost: gw.test\r\n\r\n',  # '"' and '\' in the path
        b'GET /proxy/x HTTP/1.1\r\nHost: gw.test\r\nX-Q: say "hi"\r\n\r\n',
        b"GET /proxy/x HTTP/1.1\r\nHost: gw.test\r\nX-Tab: a\tb\r\n\r\n",
        b"GET /proxy/x HTTP/1.1\r\nHost: gw.test\r\nX-Latin: caf\xe9\r\n\r\n",
        b"GET /proxy/x HTTP/1.1\r\nHost: gw.test\r\nX-A: 1\r\nX-A: 2\r\n\r\n",  # repeated
    ],
)
def test_bytes_json_would_escape_take_the_reference_way(logged: Logged, head: bytes) -> None:
    line, record = logged.request(head, UPSTREAM_OK)
    assert logged.fast is None
    assert record["request"]["method"] == "GET" and b"\n" not in line


@pytest.mark.parametrize(
    ("answer", "headers"),
    [
        (b'X-Q: a"b\\c\r\n', {"x-q": 'a"b\\c'}),
        (b"X-Tab:\ta\tb\t\r\n", {"x-tab": "a\tb"}),  # whitespace around it is not the value
        (b"X-Latin: \xff\r\n", {"x-latin": "\xff"}),
        (b"Set-Cookie: a=1\r\nSet-Cookie: b=2\r\n", {"set-cookie": ["REDACTED", "REDACTED"]}),
        (b"Via: 1\r\nvia: 2\r\n", {"via": ["1", "2"]}),
    ],
)
def test_upstream_headers_json_would_escape_or_that_repeat_take_the_reference_way(
    logged: Logged, answer: bytes, headers: dict
) -> None:
    response = b"HTTP/1.1 200 OK\r\n" + answer + b"Content-Length: 2\r\n\r\nok"
    _, record = logged.request(b"GET /proxy/x HTTP/1.1\r\nHost: gw.test\r\n\r\n", response)
    assert logged.fast is None
    assert record["response"]["headers"] == headers


MANY = b"".join(b"X-H%d: v\r\n" % index for index in range(14))


@pytest.mark.parametrize(("extra", "fast"), [(b"", True), (b"x-h3: again\r\n", False)])
def test_many_header_names_a_repeated_one_among_them_takes_the_reference_way(
    logged: Logged, extra: bytes, fast: bool
) -> None:
    head = b"GET /proxy/x HTTP/1.1\r\nHost: gw.test\r\n" + MANY + extra + b"\r\n"
    response = b"HTTP/1.1 200 OK\r\n" + MANY + extra + b"Content-Length: 2\r\n\r\nok"
    _, record = logged.request(head, response)
    assert (logged.fast is not None) is fast
    assert record["request"]["headers"]["x-h13"] == "v"
    assert record["response"]["headers"]["x-h3"] == ("v" if fast else ["v", "again"])


def test_a_single_set_cookie_is_redacted_on_the_fast_way(logged: Logged) -> None:
    response = b"HTTP/1.1 200 OK\r\nSet-Cookie: session=s3cret\r\nContent-Length: 2\r\n\r\nok"
    line, record = logged.request(b"GET /proxy/x HTTP/1.1\r\nHost: gw.test\r\n\r\n", response)
    assert logged.fast is not None and b"s3cret" not in line
    assert record["response"]["headers"] == {"set-cookie": "REDACTED"}


def test_who_authenticated_is_kongs_consumer_and_authenticated_entity(logged: Logged) -> None:
    consumer = Consumer("c-1", "alice", "A-1", ("gold",))

    def authenticate(exchange: Exchange) -> None:
        exchange.principal = Authenticated(consumer, Credential("keyauth_credentials", "k-1"))

    logged.edit = authenticate
    _, record = logged.request(b"GET /proxy/x HTTP/1.1\r\nHost: gw.test\r\n\r\n", UPSTREAM_OK)
    assert logged.fast is not None
    assert record["consumer"] == {
        "id": "c-1",
        "username": "alice",
        "custom_id": "A-1",
        "tags": ["gold"],
    }
    assert record["authenticated_entity"] == {"id": "k-1", "consumer_id": "c-1"}


def test_an_anonymous_consumer_has_no_authenticated_entity(logged: Logged) -> None:
    def anonymous(exchange: Exchange) -> None:
        exchange.principal = Authenticated(Consumer("anon", "nobody", None), None, anonymous=True)

    logged.edit = anonymous
    _, record = logged.request(b"GET /deny HTTP/1.1\r\nHost: gw.test\r\n\r\n")
    assert record["consumer"] == {"id": "anon", "username": "nobody"}
    assert "authenticated_entity" not in record


def test_serialize_values_plain_ones_fast_the_rest_the_kong_way(logged: Logged) -> None:
    def correlate(exchange: Exchange) -> None:
        set_serialize_value(exchange, "correlation_id", 'id-"1"')

    logged.edit = correlate
    _, record = logged.request(b"GET /proxy/x HTTP/1.1\r\nHost: gw.test\r\n\r\n", UPSTREAM_OK)
    assert logged.fast is not None and record["correlation_id"] == 'id-"1"'

    def nested(exchange: Exchange) -> None:
        set_serialize_value(exchange, "request.tag", "t")
        set_serialize_value(exchange, "a\\.b", 1)
        set_serialize_value(exchange, "upstream_status", "hidden", "replace")
        set_serialize_value(exchange, "missing", "x", "replace")
        set_serialize_value(exchange, "route", None)

    logged.edit = nested
    _, record = logged.request(b"GET /proxy/x HTTP/1.1\r\nHost: gw.test\r\n\r\n", UPSTREAM_OK)
    assert logged.fast is None
    assert record["request"]["tag"] == "t" and record["a.b"] == 1
    assert record["upstream_status"] == "hidden"
    assert "missing" not in record and "route" not in record


def test_without_a_route_the_record_has_no_entities() -> None:
    unrouted = Logged(entities=False)
    _, record = unrouted.request(b"GET /deny HTTP/1.1\r\nHost: gw.test\r\n\r\n")
    assert unrouted.fast is not None
    assert "route" not in record and "service" not in record


def test_two_loggers_on_a_route_serialize_a_request_once(logged: Logged) -> None:
    second = Capture()
    logged.hook = RouteLog(logged.route, None, (logged.capture, second))
    line, _ = logged.request(b"GET /proxy/x HTTP/1.1\r\nHost: gw.test\r\n\r\n", UPSTREAM_OK)
    ((_, _, again),) = second.lines
    assert again is line  # the very same bytes: made once
