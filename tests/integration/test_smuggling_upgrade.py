"""Request smuggling through Upgrade requests and underscore field names, on real sockets,
over plain HTTP and TLS.

Until an upstream agrees to switch protocols, an Upgrade request is an ordinary request whose body
is framed by Content-Length or Transfer-Encoding (RFC 9110 §7.8, RFC 9112 §6): the upstream must
get that body as the body, and never a request parsed out of body bytes, and what follows it on
the connection is the next request. A WebSocket upgrade (without a chunked body) is offered
upstream; the others are dropped as hop-by-hop. The recording upstream never switches, so every
case here checks that an offered upgrade it declines leaves the framing intact. Field names with
"_" are dropped as nginx drops them (`underscores_in_headers off`), and names that fold into a
field the gateway owns (`Transfer_Encoding` read as Transfer-Encoding by CGI and WSGI) are never
forwarded.
"""

from __future__ import annotations

import time

import pytest

from tests.integration.test_hardening_wire import forwarded, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(params=["http", "https"])
def wire(request) -> str:
    return request.param


SMUGGLED = b"GET /SMUGGLED HTTP/1.1\r\nHost: gw.test\r\n\r\n"
NEXT = b"GET /next HTTP/1.1\r\nHost: gw.test\r\n\r\n"


def request_lines(upstream) -> list[bytes]:
    """The request line of everything the upstream received, complete or not."""
    return [raw.split(b"\r\n", 1)[0] for raw in upstream.received + upstream.unfinished]


def chunked(data: bytes, size: int = 10) -> bytes:
    pieces = [data[i : i + size] for i in range(0, len(data), size)]
    return b"".join(b"%x\r\n%b\r\n" % (len(piece), piece) for piece in pieces) + b"0\r\n\r\n"


def dechunk(data: bytes) -> bytes:
    """The data of a chunked body that a strict upstream framed (trailers included)."""
    out = bytearray()
    pos = 0
    while True:
        eol = data.index(b"\r\n", pos)
        size = int(data[pos:eol], 16)
        pos = eol + 2
        if size == 0:
            assert data[pos:] == b"\r\n", "no trailers are forwarded"
            return bytes(out)
        out += data[pos : pos + size]
        assert data[pos + size : pos + size + 2] == b"\r\n"
        pos += size + 2


UPGRADES = [
    (b"websocket", b"Upgrade"),
    (b"websocket", b"keep-alive, Upgrade"),
    (b"foo/2", b"upgrade"),
    (b"h2c", b"Upgrade, HTTP2-Settings"),
]


@pytest.mark.parametrize("answer_first", [True, False], ids=["answers-first", "reads-body"])
@pytest.mark.parametrize("pipelined", [False, True], ids=["alone", "pipelined"])
@pytest.mark.parametrize("framing", ["length", "chunked", "none"])
@pytest.mark.parametrize(("upgrade", "connection"), UPGRADES, ids=[u[1].decode() for u in UPGRADES])
def test_upgrade_request_reaches_the_upstream_as_one_request_with_its_body(
    recording_gateway,
    connect,
    upgrade: bytes,
    connection: bytes,
    framing: str,
    pipelined: bool,
    answer_first: bool,
) -> None:
    gateway, upstream = recording_gateway(answer_first=answer_first)
    client = connect(gateway.port)
    method = b"GET" if framing == "none" else b"POST"
    head = b"%b /ws HTTP/1.1\r\nHost: gw.test\r\nUpgrade: %b\r\nConnection: %b\r\n" % (
        method,
        upgrade,
        connection,
    )
    if framing == "length":
        request = head + b"Content-Length: %d\r\n\r\n%b" % (len(SMUGGLED), SMUGGLED)
    elif framing == "chunked":
        request = head + b"Transfer-Encoding: chunked\r\n\r\n" + chunked(SMUGGLED)
    else:
        request = head + b"\r\n"
    client.send(request + (NEXT if pipelined else b""))

    assert client.read_response().body == b"%b /ws HTTP/1.1" % method
    if pipelined:
        assert client.read_response().body == b"GET /next HTTP/1.1"
    # nothing else was answered in between: the next request gets the next answer
    assert client.request("GET", "/last").body == b"GET /last HTTP/1.1"

    expected = 3 if pipelined else 2
    assert wait_until(lambda: len(upstream.received) >= expected)
    received = upstream.received
    assert len(received) == expected, received
    first_head, _, first_body = received[0].partition(b"\r\n\r\n")
    # Kong offers a WebSocket upgrade upstream (a chunked one is not: see server.py); other
    # Upgrade values and the client's Connection are hop-by-hop and dropped
    offered = upgrade == b"websocket" and framing != "chunked"
    offer = b"\r\nconnection: keep-alive, Upgrade\r\nupgrade: websocket\r\n" if offered else b""
    if framing == "length":
        assert received[0] == forwarded(
            gateway,
            upstream,
            b"POST /ws" + offer,
            b"content-length: %d\r\n" % len(SMUGGLED),
            SMUGGLED,
        )
    elif framing == "chunked":
        assert first_head + b"\r\n\r\n" == forwarded(
            gateway, upstream, b"POST /ws", b"transfer-encoding: chunked\r\n"
        )
        assert dechunk(first_body) == SMUGGLED
    else:
        assert received[0] == forwarded(gateway, upstream, b"GET /ws" + offer)
    assert (b"upgrade" in first_head.lower()) == offered
    if pipelined:
        assert received[1] == forwarded(gateway, upstream, b"GET /next")
    assert received[-1] == forwarded(gateway, upstream, b"GET /last")
    assert b"GET /SMUGGLED HTTP/1.1" not in request_lines(upstream)
    assert upstream.errors == [] and upstream.unfinished == []


def test_upgrade_request_body_split_over_many_reads(recording_gateway, connect) -> None:
    gateway, upstream = recording_gateway()
    client = connect(gateway.port)
    client.send(
        b"POST /ws HTTP/1.1\r\nHost: gw.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Content-Length: %d\r\n\r\n" % len(SMUGGLED)
    )
    for byte in range(len(SMUGGLED)):
        time.sleep(0.002)  # one read each, most likely
        client.send(SMUGGLED[byte : byte + 1])
    assert client.read_response().body == b"POST /ws HTTP/1.1"
    assert client.request("GET", "/last").body == b"GET /last HTTP/1.1"
    assert wait_until(lambda: len(upstream.received) == 2)
    assert upstream.received[0].endswith(b"\r\n\r\n" + SMUGGLED)
    assert request_lines(upstream) == [b"POST /ws HTTP/1.1", b"GET /last HTTP/1.1"]


def test_upgrade_request_to_a_plugin_that_answers_discards_the_body(
    recording_gateway, connect
) -> None:
    """/deny answers 401 at once; the body after it is read and dropped, never run."""
    gateway, upstream = recording_gateway()
    client = connect(gateway.port)
    client.send(
        b"POST /deny HTTP/1.1\r\nHost: gw.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Content-Length: %d\r\n\r\n%b" % (len(SMUGGLED), SMUGGLED)
    )
    assert client.read_response().status == 401
    assert client.request("GET", "/last").body == b"GET /last HTTP/1.1"
    assert wait_until(lambda: len(upstream.received) == 1)
    assert request_lines(upstream) == [b"GET /last HTTP/1.1"]


# -- underscore field names -----------------------------------------------------------------------

UNDERSCORED_REQUEST = (
    b"POST /u HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 5\r\nTransfer_Encoding: chunked\r\n"
    b"CONTENT_LENGTH: 0\r\nX_Forwarded_For: 10.9.9.9\r\nX_Real_IP: 10.9.9.9\r\nConnection_: x\r\n"
    b"X_Custom_Id: 7\r\nX-Plain: 1\r\n\r\nhello"
)


def test_underscore_names_never_reach_the_upstream_by_default(recording_gateway, connect) -> None:
    gateway, upstream = recording_gateway()
    client = connect(gateway.port)
    client.send(UNDERSCORED_REQUEST)
    assert client.read_response().body == b"POST /u HTTP/1.1"
    assert wait_until(lambda: len(upstream.received) == 1)
    assert upstream.received[0] == forwarded(
        gateway, upstream, b"POST /u\r\nx-plain: 1\r\n", b"content-length: 5\r\n", b"hello"
    )


def test_underscores_in_headers_forwards_them_but_never_a_framing_alias(
    recording_gateway, connect
) -> None:
    gateway, upstream = recording_gateway(underscores_in_headers="true")
    client = connect(gateway.port)
    client.send(UNDERSCORED_REQUEST)
    assert client.read_response().body == b"POST /u HTTP/1.1"
    assert wait_until(lambda: len(upstream.received) == 1)
    # connection_ folds into "connection-", which is no field of the gateway's: kept
    assert upstream.received[0] == forwarded(
        gateway,
        upstream,
        b"POST /u\r\nconnection_: x\r\nx_custom_id: 7\r\nx-plain: 1\r\n",
        b"content-length: 5\r\n",
        b"hello",
    )
