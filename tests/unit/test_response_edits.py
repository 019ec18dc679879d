"""Response edits (Kong's kong.response.set_header / add_header / clear_header) and response
filters, applied by the real exchange to an upstream's answer and to a local one."""

from __future__ import annotations

from fastgw.http.exchange import Exchange
from fastgw.http.response_edits import ResponseEdits, ResponseFilter
from tests.support.wire import Harness


class Recorder(ResponseFilter):
    def __init__(self) -> None:
        self.events: list[object] = []

    def response_head(self, status: int, fields: bytes, edits: ResponseEdits) -> None:
        self.events.append(("head", status, fields))
        edits.add(b"x-seen", b"%d" % status)

    def response_body(self, data: bytes) -> None:
        self.events.append(("body", data))

    def response_complete(self) -> None:
        self.events.append("complete")

    def response_aborted(self) -> None:
        self.events.append("aborted")


def proxied(edit, answer: bytes) -> tuple[Harness, bytes]:
    h = Harness()
    h.handler.before = edit
    h.feed(b"GET /proxy HTTP/1.1\r\nHost: gw\r\n\r\n")
    (upstream,) = h.upstream.connections
    upstream.data_received(answer)
    return h, h.transport.take()


UPSTREAM = b"HTTP/1.1 200 OK\r\nServer: up\r\nVary: Accept\r\nContent-Length: 2\r\n\r\nok"


def test_a_request_no_plugin_touched_is_unchanged() -> None:
    _, sent = proxied(None, UPSTREAM)
    assert sent == b"HTTP/1.1 200 OK\r\nServer: up\r\nVary: Accept\r\ncontent-length: 2\r\n\r\nok"


def test_set_replaces_the_upstreams_field_add_keeps_it_remove_drops_it() -> None:
    def edit(exchange: Exchange) -> None:
        exchange.set_response_header(b"vary", b"Origin")
        exchange.add_response_header(b"x-rate", b"1")
        exchange.add_response_header(b"x-rate", b"2")
        exchange.remove_response_header(b"server")

    _, sent = proxied(edit, UPSTREAM)
    assert sent == (
        b"HTTP/1.1 200 OK\r\nvary: Origin\r\nx-rate: 1\r\nx-rate: 2\r\ncontent-length: 2\r\n\r\nok"
    )


def test_a_later_set_replaces_an_earlier_add() -> None:
    def edit(exchange: Exchange) -> None:
        exchange.add_response_header(b"x-id", b"a")
        exchange.set_response_header(b"x-id", b"b")

    _, sent = proxied(edit, UPSTREAM)
    assert b"x-id: b\r\n" in sent and b"x-id: a" not in sent


def test_edits_apply_to_a_local_answer_too() -> None:
    h = Harness()

    def edit(exchange: Exchange) -> None:
        exchange.set_response_header(b"www-authenticate", b"Key")
        exchange.add_response_header(b"x-request-id", b"7")

    h.handler.before = edit
    sent = h.feed(b"GET /deny HTTP/1.1\r\nHost: gw\r\n\r\n")
    assert sent.startswith(b"HTTP/1.1 401 Unauthorized\r\nwww-authenticate: Key\r\n")
    assert b"www-authenticate: Basic" not in sent
    assert b"x-request-id: 7\r\n" in sent


def test_a_filter_sees_the_head_the_body_and_the_end_and_may_edit_the_head() -> None:
    recorder = Recorder()
    _, sent = proxied(lambda exchange: exchange.add_response_filter(recorder), UPSTREAM)
    assert b"x-seen: 200\r\n" in sent
    assert recorder.events == [
        ("head", 200, b"Server: up\r\nVary: Accept\r\n"),
        ("body", b"ok"),
        "complete",
    ]


def test_a_filter_of_a_local_answer_or_an_abort_is_told_it_aborted() -> None:
    h = Harness()
    recorder = Recorder()
    h.handler.before = lambda exchange: exchange.add_response_filter(recorder)
    h.feed(b"GET /deny HTTP/1.1\r\nHost: gw\r\n\r\n")
    assert recorder.events == ["aborted"]

    h = Harness()
    other = Recorder()
    h.handler.before = lambda exchange: exchange.add_response_filter(other)
    h.feed(b"GET /proxy HTTP/1.1\r\nHost: gw\r\n\r\n")
    h.conn.connection_lost(None)
    assert other.events == ["aborted"]


def test_shared_values_are_made_once_per_request() -> None:
    h = Harness()
    seen = []

    def edit(exchange: Exchange) -> None:
        exchange.shared()["correlation"] = "x"
        seen.append(exchange.shared())

    h.handler.before = edit
    h.feed(b"GET /a HTTP/1.1\r\nHost: gw\r\n\r\nGET /b HTTP/1.1\r\nHost: gw\r\n\r\n")
    assert seen[0] == {"correlation": "x"} and seen[0] is not seen[1]
