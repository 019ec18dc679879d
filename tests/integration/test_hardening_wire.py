"""Hostile bytes on the wire, limits and upstream faults: real sockets, exact answers, and the
gateway serving a normal request afterwards.

Smuggling cases run against a recording upstream that keeps the exact bytes it received, so each
test also proves what the upstream never saw. What llhttp (inside httptools) rejects by itself is
verified here, not assumed: the gateway never calls `set_dangerous_leniencies`, and each lenient
flag has a case below that would pass the bytes if the flag were on (named in `LENIENCY_CASES`).
"""

from __future__ import annotations

import json
import resource
import socket
import struct
import threading
import time
from http import HTTPStatus
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


@pytest.fixture(params=["http", "https"])
def wire(request) -> str:
    """Every case on an embedded gateway runs over plain HTTP and over TLS."""
    return request.param


HOST = b"gw.test"

# The gateway's own JSON answers: Kong's wording; every error answer closes the connection.
MESSAGES = {
    400: "Bad request",
    405: "Method not allowed",
    408: "Request timeout",
    413: "Request size limit exceeded",
    414: "Request-URI too large",
    431: "Request header fields too large",
    501: "Not implemented",
    502: "An invalid response was received from the upstream server",
    504: "The upstream server is timing out",
    505: "HTTP version not supported",
}


def gateway_error(status: int, *, close: bool = True) -> bytes:
    """The exact bytes of the gateway's error answer, built independently of fastgw."""
    body = json.dumps({"message": MESSAGES[status]}, separators=(",", ":")).encode()
    return (
        b"HTTP/1.1 %d %b\r\ncontent-type: application/json; charset=utf-8\r\n"
        b"content-length: %d\r\n%b\r\n%b"
        % (
            status,
            HTTPStatus(status).phrase.encode(),
            len(body),
            b"connection: close\r\n" if close else b"",
            body,
        )
    )


def forwarded(gateway, upstream, head: bytes, framing: bytes = b"", body: bytes = b"") -> bytes:
    """The exact request the gateway sends upstream for `head` ("GET /x" plus header lines).

    `framing` is the gateway's own body framing line(s), e.g. b"content-length: 5\\r\\n"."""
    request_line, _, headers = head.partition(b"\r\n")
    return (
        b"%b HTTP/1.1\r\nhost: 127.0.0.1:%d\r\n%bx-forwarded-for: 127.0.0.1\r\n"
        b"x-forwarded-proto: %b\r\nx-forwarded-port: %d\r\nx-real-ip: 127.0.0.1\r\n"
        b"x-forwarded-host: gw.test\r\n%b\r\n%b"
        % (
            request_line,
            upstream.port,
            headers,
            gateway.scheme.encode(),
            gateway.port,
            framing,
            body,
        )
    )


def read_all(client) -> bytes:
    """Everything until the gateway closes (a reset after the answer counts as closing)."""
    client.sock.settimeout(5.0)
    data = bytearray(client.buffer)
    client.buffer.clear()
    while True:
        try:
            chunk = client.sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return bytes(data)


def wait_until(predicate, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return bool(predicate())


def still_serves(gateway, upstream, connect) -> None:
    """A fresh client gets a normal proxied answer, and the upstream got exactly that request."""
    before = len(upstream.received)
    client = connect(gateway.port)
    response = client.request("GET", "/after")
    assert (response.status, response.body) == (200, b"GET /after HTTP/1.1")
    assert wait_until(lambda: len(upstream.received) == before + 1)
    assert upstream.received[-1] == forwarded(gateway, upstream, b"GET /after")
    assert upstream.errors == []


def reset(sock: socket.socket) -> None:
    """Close with an RST instead of a FIN (SO_LINGER 0)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


# -- request smuggling: rejected at the head, the upstream sees nothing ---------------------------

POST = b"POST / HTTP/1.1\r\nHost: gw.test\r\n"

# (id, request bytes, answer). nginx answers the same statuses except where noted; h11 agrees.
HEAD_REJECTS = [
    # CL and TE together: RFC 9112 §6.1 allows a server to drop CL, nginx does; we refuse, as
    # h11 does, because a front end that picked CL is how CL.TE smuggling works.
    ("cl-and-te", POST + b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("te-and-cl", POST + b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n", 400),
    ("cl-twice-same", POST + b"Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc", 400),
    ("cl-twice-differing", POST + b"Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400),
    ("cl-comma-same", POST + b"Content-Length: 3, 3\r\n\r\nabc", 400),
    ("cl-comma-differing", POST + b"Content-Length: 3, 4\r\n\r\nabcd", 400),
    ("cl-signed", POST + b"Content-Length: +3\r\n\r\nabc", 400),
    ("cl-hex", POST + b"Content-Length: 0x3\r\n\r\nabc", 400),
    ("cl-overflow", POST + b"Content-Length: 184467440737095516160\r\n\r\n", 400),
    # Transfer-Encoding: only a lone `chunked` (nginx: 501 for an unknown coding, 400 for TE in
    # HTTP/1.0; h11: 501). A final chunked over another coding is understood but not supported.
    ("te-gzip-chunked", POST + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
    ("te-two-fields", POST + b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n", 501),
    ("te-chunked-not-last", POST + b"Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n", 400),
    ("te-gzip", POST + b"Transfer-Encoding: gzip\r\n\r\nabc", 400),
    ("te-identity", POST + b"Transfer-Encoding: identity\r\n\r\nabc", 400),
    ("te-xchunked", POST + b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", 400),
    (
        "te-chunked-twice",
        POST + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
        400,
    ),
    ("te-in-http-1.0", b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("te-space-before-colon", POST + b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n", 400),
    # header syntax (RFC 9112 §5.1, §5.2)
    ("obs-fold", b"GET / HTTP/1.1\r\nHost: gw.test\r\nX-A: 1\r\n  folded\r\n\r\n", 400),
    ("obs-fold-tab", b"GET / HTTP/1.1\r\nHost: gw.test\r\nX-A: 1\r\n\tfolded\r\n\r\n", 400),
    ("space-before-colon", b"GET / HTTP/1.1\r\nHost: gw.test\r\nX-A : 1\r\n\r\n", 400),
    ("tab-before-colon", b"GET / HTTP/1.1\r\nHost: gw.test\r\nX-A\t: 1\r\n\r\n", 400),
    ("space-before-first-header", b"GET / HTTP/1.1\r\n Host: gw.test\r\n\r\n", 400),
    ("nul-in-value", b"GET / HTTP/1.1\r\nHost: gw.test\r\nX-A: a\x00b\r\n\r\n", 400),
    ("cr-in-value", b"GET / HTTP/1.1\r\nHost: gw.test\r\nX-A: a\rb\r\n\r\n", 400),
    ("lf-in-value", b"GET / HTTP/1.1\r\nHost: gw.test\r\nX-A: a\nX-B: b\r\n\r\n", 400),
    ("ctl-in-value", b"GET / HTTP/1.1\r\nHost: gw.test\r\nX-A: a\x01b\r\n\r\n", 400),
    ("bare-lf-lines", b"GET / HTTP/1.1\nHost: gw.test\n\n", 400),
    ("nul-in-name", b"GET / HTTP/1.1\r\nHost: gw.test\r\nX\x00A: b\r\n\r\n", 400),
    # the request target (RFC 9112 §3.2: no whitespace or controls)
    ("nul-in-target", b"GET /a\x00b HTTP/1.1\r\nHost: gw.test\r\n\r\n", 400),
    ("cr-in-target", b"GET /a\rb HTTP/1.1\r\nHost: gw.test\r\n\r\n", 400),
    ("lf-in-target", b"GET /a\nb HTTP/1.1\r\nHost: gw.test\r\n\r\n", 400),
    ("space-in-target", b"GET /a b HTTP/1.1\r\nHost: gw.test\r\n\r\n", 400),
    ("del-in-target", b"GET /a\x7fb HTTP/1.1\r\nHost: gw.test\r\n\r\n", 400),
    # a fragment is not part of a request target (RFC 9112 §3.2), in any of its forms
    ("fragment", b"GET /a#frag HTTP/1.1\r\nHost: gw.test\r\n\r\n", 400),
    ("fragment-after-query", b"GET /a?x=1#frag HTTP/1.1\r\nHost: gw.test\r\n\r\n", 400),
    ("fragment-empty", b"GET /a# HTTP/1.1\r\nHost: gw.test\r\n\r\n", 400),
    ("fragment-absolute", b"GET http://gw.test/a#f HTTP/1.1\r\nHost: gw.test\r\n\r\n", 400),
    # Host (RFC 9112 §3.2: exactly one, valid)
    ("two-hosts", b"GET / HTTP/1.1\r\nHost: gw.test\r\nHost: evil.test\r\n\r\n", 400),
    ("host-with-path", b"GET / HTTP/1.1\r\nHost: evil.test/x\r\n\r\n", 400),
    ("host-with-userinfo", b"GET / HTTP/1.1\r\nHost: user@evil.test\r\n\r\n", 400),
    ("host-with-space", b"GET / HTTP/1.1\r\nHost: gw.test evil.test\r\n\r\n", 400),
    # versions: llhttp takes 0.9 and 2.0 in a request line; nginx answers 505 above 1.x
    ("http-2.0", b"GET / HTTP/2.0\r\nHost: gw.test\r\n\r\n", 505),
    ("http-0.9-line", b"GET / HTTP/0.9\r\nHost: gw.test\r\n\r\n", 505),
    ("http-1.2", b"GET / HTTP/1.2\r\nHost: gw.test\r\n\r\n", 400),
    ("connect", b"CONNECT gw.test:443 HTTP/1.1\r\nHost: gw.test:443\r\n\r\n", 405),
    ("connect-path", b"CONNECT / HTTP/1.1\r\nHost: gw.test\r\n\r\nGET /x HTTP/1.1\r\n\r\n", 405),
]

# Which of the cases above llhttp's lenient flags would let through (all must stay off).
LENIENCY_CASES = {
    "lenient_headers": "cr-in-value",
    "lenient_chunked_length": "cl-and-te",
    "lenient_transfer_encoding": "te-chunked-not-last",
    "lenient_version": "http-1.2",
    "lenient_optional_cr_before_lf": "bare-lf-lines",
    "lenient_optional_lf_after_cr": "cr-in-value",
    # body-level ones are in BODY_REJECTS; keep-alive and data-after-close in the pipelining tests
    "lenient_optional_crlf_after_chunk": "chunk-data-without-crlf",
    "lenient_spaces_after_chunk_size": "space-after-chunk-size",
}


def test_every_leniency_has_a_case() -> None:
    ids = {case[0] for case in HEAD_REJECTS} | {case[0] for case in BODY_REJECTS}
    assert set(LENIENCY_CASES.values()) <= ids
    # and nothing in the gateway turns one on
    sources = Path(__file__).resolve().parents[2] / "fastgw"
    assert not [p for p in sources.rglob("*.py") if "set_dangerous_leniencies" in p.read_text()]


@pytest.mark.parametrize(
    ("raw", "status"), [case[1:] for case in HEAD_REJECTS], ids=[c[0] for c in HEAD_REJECTS]
)
def test_hostile_head_is_refused_and_never_forwarded(
    recording_gateway, connect, raw: bytes, status: int
) -> None:
    gateway, upstream = recording_gateway()
    client = connect(gateway.port)
    client.send(raw)
    assert read_all(client) == gateway_error(status)
    still_serves(gateway, upstream, connect)
    # the one request the upstream ever saw is the one still_serves sent
    assert len(upstream.received) == 1 and upstream.unfinished == []


def test_smuggled_request_in_a_body_is_just_body_and_the_next_request_its_own(
    recording_gateway, connect
) -> None:
    """Content-Length framing decides: what follows the body is parsed (and routed, and run
    through plugins) as the next request, exactly as the upstream is then told."""
    gateway, upstream = recording_gateway()
    client = connect(gateway.port)
    client.send(
        POST + b"Content-Length: 5\r\n\r\nhello"
        b"GET /deny HTTP/1.1\r\nHost: gw.test\r\n\r\n"
        b"GET /next HTTP/1.1\r\nHost: gw.test\r\n\r\n"
    )
    assert client.read_response().body == b"POST / HTTP/1.1"
    assert client.read_response().status == 401  # /deny is answered by its plugin
    assert client.read_response().body == b"GET /next HTTP/1.1"
    assert upstream.received == [
        forwarded(gateway, upstream, b"POST /", b"content-length: 5\r\n", b"hello"),
        forwarded(gateway, upstream, b"GET /next"),
    ]


# -- malformed chunked bodies: the head went upstream, the body never completes there ------------

CHUNKED_HEAD = POST + b"Transfer-Encoding: chunked\r\n\r\n"

BODY_REJECTS = [
    ("chunk-size-not-hex", b"zz\r\nab\r\n0\r\n\r\n"),
    ("chunk-size-negative", b"-1\r\na\r\n0\r\n\r\n"),
    ("chunk-size-overflow", b"fffffffffffffffff1\r\n"),
    ("chunk-size-0x", b"0x3\r\nabc\r\n0\r\n\r\n"),
    ("space-after-chunk-size", b"3 \r\nabc\r\n0\r\n\r\n"),
    ("chunk-data-without-crlf", b"3\r\nabcX\r\n0\r\n\r\n"),
    ("chunk-data-bare-lf", b"3\r\nabc\n0\r\n\r\n"),
    ("chunk-extension-bare-lf", b"3;ext\nabc\r\n0\r\n\r\n"),
    ("missing-final-crlf", b"0\r\nGET /smuggled HTTP/1.1\r\nHost: gw.test\r\n\r\n"),
    ("trailer-obs-fold", b"0\r\nX-T: 1\r\n folded\r\n\r\n"),
]


@pytest.mark.parametrize(
    "tail", [case[1] for case in BODY_REJECTS], ids=[c[0] for c in BODY_REJECTS]
)
def test_malformed_chunked_body_is_400_and_the_upstream_never_gets_a_whole_request(
    recording_gateway, connect, tail: bytes
) -> None:
    gateway, upstream = recording_gateway()
    client = connect(gateway.port)
    client.send(CHUNKED_HEAD + b"3\r\nabc\r\n")
    prefix = forwarded(gateway, upstream, b"POST /", b"transfer-encoding: chunked\r\n")
    # the head and the good chunk are streamed upstream before the bad bytes arrive
    assert wait_until(lambda: upstream.pending() == prefix + b"3\r\nabc\r\n")
    client.send(tail)
    assert read_all(client) == gateway_error(400)
    # the gateway drops the upstream connection: the request stays unfinished there
    assert wait_until(lambda: len(upstream.unfinished) == 1)
    assert upstream.unfinished[0].startswith(prefix + b"3\r\nabc\r\n")
    assert upstream.received == []
    assert wait_until(lambda: gateway.pool_state() == (0, 0))
    still_serves(gateway, upstream, connect)


def test_chunk_extensions_and_trailers_are_not_forwarded(recording_gateway, connect) -> None:
    gateway, upstream = recording_gateway()
    client = connect(gateway.port)
    client.send(
        CHUNKED_HEAD + b'3;name=value;quoted="a b"\r\nabc\r\n0;last\r\n'
        b"Authorization: Bearer forged\r\nX-Injected: 1\r\n\r\n"
    )
    assert client.read_response().body == b"POST / HTTP/1.1"
    # trailers are neither merged into the headers nor sent on (RFC 9110 §6.5.2)
    assert upstream.received == [
        forwarded(
            gateway,
            upstream,
            b"POST /",
            b"transfer-encoding: chunked\r\n",
            b"3\r\nabc\r\n0\r\n\r\n",
        )
    ]


def test_endless_chunk_extension_is_cut_off(recording_gateway, connect) -> None:
    """llhttp skips extensions without a bound; the gateway allows 16 KiB of non-data bytes
    beyond 16 per chunk plus twice the data (Go's rule), so this stream ends with a 400."""
    gateway, upstream = recording_gateway()
    client = connect(gateway.port)
    client.send(CHUNKED_HEAD + b"1;")
    started = time.monotonic()
    for _ in range(6):  # 24 KiB of one extension, in separate reads
        time.sleep(0.05)
        client.send(b"e" * 4096)
    assert read_all(client) == gateway_error(400)
    assert time.monotonic() - started < 2.0
    assert wait_until(lambda: len(upstream.unfinished) == 1)
    assert upstream.received == []
    still_serves(gateway, upstream, connect)


def test_many_one_byte_chunks_are_fine(recording_gateway, connect) -> None:
    """Streaming a byte at a time (5 bytes of framing per byte of data) is legitimate."""
    gateway, upstream = recording_gateway()
    client = connect(gateway.port)
    chunks = 5000
    client.send(CHUNKED_HEAD + b"1;x\r\nb\r\n" * chunks + b"0\r\n\r\n")
    assert client.read_response().body == b"POST / HTTP/1.1"
    assert wait_until(lambda: len(upstream.received) == 1)
    body = upstream.received[0].split(b"\r\n\r\n", 1)[1]
    # re-chunked by the gateway (its own chunk sizes), but the data is all there
    data = b"".join(body.split(b"\r\n")[1::2])
    assert data == b"b" * chunks


# -- limits ---------------------------------------------------------------------------------------


def test_uri_over_the_limit_is_414(recording_gateway, connect) -> None:
    # max_uri_size default 8 KiB: one nginx large_client_header_buffers buffer holds the line
    gateway, upstream = recording_gateway()
    client = connect(gateway.port)
    fits = "/" + "u" * (8 * 1024 - 1)
    assert client.request("GET", fits).body == f"GET {fits} HTTP/1.1".encode()
    client.send(b"GET /%b HTTP/1.1\r\nHost: gw.test\r\n\r\n" % (b"u" * 8 * 1024))
    assert read_all(client) == gateway_error(414)
    still_serves(gateway, upstream, connect)


def test_head_over_the_limit_is_431(recording_gateway, connect) -> None:
    # max_head_size default 32 KiB: nginx's large_client_header_buffers 4 x 8k
    gateway, upstream = recording_gateway()
    client = connect(gateway.port)
    client.send(b"GET / HTTP/1.1\r\nHost: gw.test\r\nX-Big: %b\r\n\r\n" % (b"v" * 33 * 1024))
    assert read_all(client) == gateway_error(431)
    # and arriving slowly, a piece per read, without ever finishing the head
    client = connect(gateway.port)
    client.send(b"GET / HTTP/1.1\r\nHost: gw.test\r\n")
    for _ in range(40):
        try:
            client.send(b"X-Drip: " + b"v" * 1000 + b"\r\n")
        except OSError:
            break
        time.sleep(0.005)
    assert read_all(client) == gateway_error(431)
    still_serves(gateway, upstream, connect)


def test_too_many_headers_is_431(recording_gateway, connect) -> None:
    # max_headers default 100 (h11 and uvicorn cap the count similarly)
    gateway, upstream = recording_gateway()
    client = connect(gateway.port)
    hundred = [(f"X-{i}", "v") for i in range(100)]
    assert client.request("GET", "/fits", hundred).status == 200
    client.send(b"GET / HTTP/1.1\r\nHost: gw.test\r\n%b\r\n" % (b"X-H: v\r\n" * 101))
    assert read_all(client) == gateway_error(431)
    still_serves(gateway, upstream, connect)


def test_body_over_max_body_size_is_413(recording_gateway, connect) -> None:
    gateway, upstream = recording_gateway(max_body_size=1000)
    client = connect(gateway.port)
    # announced: refused before a byte of body is read (nginx client_max_body_size)
    client.send(POST + b"Content-Length: 1001\r\n\r\n")
    assert read_all(client) == gateway_error(413)
    # chunked: refused when the running total passes the limit
    client = connect(gateway.port)
    client.send(CHUNKED_HEAD + b"3e8\r\n" + b"a" * 1000 + b"\r\n")
    assert wait_until(lambda: upstream.pending().endswith(b"a" * 1000 + b"\r\n"))
    client.send(b"1\r\nb\r\n")
    assert read_all(client) == gateway_error(413)
    assert wait_until(lambda: len(upstream.unfinished) == 1)
    assert upstream.received == []
    still_serves(gateway, upstream, connect)


def test_slowloris_head_gets_408_after_head_timeout(recording_gateway, connect) -> None:
    """head_timeout bounds the whole head, however steadily it drips (nginx
    client_header_timeout works the same way: the timer is not reset by reads)."""
    gateway, upstream = recording_gateway(head_timeout=1)
    client = connect(gateway.port)
    stop = threading.Event()

    def drip() -> None:
        for byte in b"GET / HTTP/1.1\r\nHost: gw.test\r\nX-Slow: " + b"s" * 1000:
            if stop.wait(0.05):
                return
            try:
                client.sock.send(bytes([byte]))
            except OSError:
                return

    started = time.monotonic()
    dripper = threading.Thread(target=drip, daemon=True)
    dripper.start()
    answer = read_all(client)
    elapsed = time.monotonic() - started
    stop.set()
    dripper.join()
    assert answer == gateway_error(408)  # the drip went on: the head's own deadline ended it
    assert elapsed >= 1.0  # a timeout never fires early (timers.py)
    assert upstream.received == []
    still_serves(gateway, upstream, connect)


def test_connection_that_never_sends_is_closed_silently(recording_gateway, connect) -> None:
    gateway, upstream = recording_gateway(head_timeout=1)
    client = connect(gateway.port)
    started = time.monotonic()
    assert read_all(client) == b""  # nothing was asked, so nothing is answered
    assert time.monotonic() - started >= 1.0  # a timeout never fires early (timers.py)
    still_serves(gateway, upstream, connect)


def test_idle_keep_alive_connection_is_closed_silently_after_keepalive_timeout(
    recording_gateway, connect
) -> None:
    # keepalive_timeout default 75 s as nginx's; 1 s here
    gateway, upstream = recording_gateway(head_timeout=5, keepalive_timeout=1)
    client = connect(gateway.port)
    assert client.request("GET", "/first").status == 200
    started = time.monotonic()
    assert read_all(client) == b""
    assert time.monotonic() - started >= 1.0  # the keepalive_timeout, not the head_timeout (5)
    still_serves(gateway, upstream, connect)


def test_idle_keep_alive_then_a_partial_head_gets_the_head_timeout(
    recording_gateway, connect
) -> None:
    gateway, upstream = recording_gateway(head_timeout=1, keepalive_timeout=30)
    client = connect(gateway.port)
    assert client.request("GET", "/first").status == 200
    client.send(b"GET /second HTTP/1.1\r\n")
    started = time.monotonic()
    assert read_all(client) == gateway_error(408)
    assert time.monotonic() - started >= 1.0  # a timeout never fires early (timers.py)
    still_serves(gateway, upstream, connect)


# -- many connections: memory and file descriptors (CLI gateway in a subprocess) ------------------

IDLE_CONNECTIONS = 10_000
# An idle keep-alive connection costs the gateway ~3.5 KiB of RSS (measured: the ServerConnection
# with slots, its httptools parser with ten bound callbacks, uvloop's transport and libuv handle;
# 5.4 KiB before ServerConnection had slots); the bound leaves room for allocator noise.
IDLE_CONNECTION_BOUND_KIB = 4.5


def memory_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def open_fds(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def raise_own_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed <= hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    elif hard < needed:
        pytest.skip(f"needs {needed} file descriptors; the hard limit is {hard}")


def test_10000_idle_keep_alive_connections(run_cli, gateway_config, connect, record_property):
    raise_own_fd_limit(IDLE_CONNECTIONS + 200)
    cli = run_cli(gateway_config())
    cli.wait_listening()
    limit = cli.log.wait_for(r"open-file limit (\d+).*up to (\d+) client connections")[0]
    if int(limit.group(2)) < IDLE_CONNECTIONS + 10:
        pytest.skip(f"the gateway may hold {limit.group(2)} connections only")
    assert connect(cli.port).request("GET", "/echo").status == 200  # warm up
    baseline, fds_before = memory_kib(cli.pid), open_fds(cli.pid)

    socks: list[socket.socket] = []
    try:
        for _ in range(IDLE_CONNECTIONS):
            socks.append(socket.create_connection(("127.0.0.1", cli.port), timeout=10))
        # one request on each (answered by the gateway itself), so all of them are idle
        # keep-alive connections with a parser that has served a request
        for sock in socks:
            sock.sendall(b"GET /deny HTTP/1.1\r\nHost: gw.test\r\n\r\n")
        for sock in socks:
            assert sock.recv(4096).startswith(b"HTTP/1.1 401 ")
        time.sleep(0.5)
        grown = memory_kib(cli.pid) - baseline
        fds = open_fds(cli.pid) - fds_before
        per_connection = grown / IDLE_CONNECTIONS
        record_property("rss_growth_kib", grown)
        print(f"\n{IDLE_CONNECTIONS} idle: RSS +{grown} KiB, {per_connection:.2f} KiB each")
        assert fds == IDLE_CONNECTIONS  # one descriptor each, nothing leaked or refused
        assert per_connection < IDLE_CONNECTION_BOUND_KIB
        # and a normal request is served alongside them
        assert connect(cli.port).request("GET", "/echo/busy").status == 200
    finally:
        for sock in socks:
            sock.close()
    assert "connection limit reached" not in cli.log.text()


def test_file_descriptor_limit_refuses_with_a_log_line_then_recovers(
    run_cli, gateway_config, connect
) -> None:
    """With 256 descriptors the gateway admits 192 clients (the rest of the descriptors stay
    for upstream connections), one address at most three quarters of them, refuses the others
    at once with one log line per limit, and recovers."""
    cli = run_cli(gateway_config(), nofile=256)
    cli.wait_listening()
    cli.log.wait_for(r"open-file limit 256: up to 192 client connections per worker")
    socks: list[socket.socket] = []
    served = refused = 0
    try:
        for source in ("127.0.0.1",) * 150 + ("127.0.0.2",) * 150:
            socks.append(
                socket.create_connection(
                    ("127.0.0.1", cli.port), timeout=5, source_address=(source, 0)
                )
            )
        for sock in socks:
            try:
                sock.sendall(b"GET /deny HTTP/1.1\r\nHost: gw.test\r\n\r\n")
                answer = sock.recv(4096)
            except OSError:  # reset: refused
                answer = b""
            if answer.startswith(b"HTTP/1.1 401 "):
                served += 1
            else:
                refused += 1
        assert (served, refused) == (192, 108)  # 144 from the first address, 48 from the other
        cli.log.wait_for(r"connection limit per client address reached: 127\.0\.0\.1 holds 144")
        lines = cli.log.wait_for(r"connection limit reached: 192 client connections open")
        assert len(lines) == 1
        assert cli.log.text().count("connection limit reached") == 1  # rate-limited
        assert cli.log.text().count("per client address reached") == 1
        assert cli.proc.poll() is None
    finally:
        for sock in socks:
            sock.close()
    # once the connections are gone, normal service: local and proxied
    assert wait_until(lambda: open_fds(cli.pid) < 64, timeout=5)
    client = connect(cli.port)
    assert client.request("GET", "/deny").status == 401
    assert client.request("GET", "/echo/after").status == 200


# -- upstream faults -------------------------------------------------------------------------------

BAD_GATEWAY = gateway_error(502, close=False)
TIMED_OUT = gateway_error(504, close=False)


def answer_with(*parts: bytes, pause: float = 0.0, then_reset: bool = False):
    """A script: read one request head, send `parts` (pausing between them), then close or reset."""

    def script(conn) -> None:
        if conn.read_head() is None:
            return
        for index, part in enumerate(parts):
            if index and pause:
                time.sleep(pause)
            conn.send(part)
        if then_reset:
            reset(conn.sock)

    return script


def serve_forever(answer: bytes):
    def script(conn) -> None:
        while conn.read_head() is not None:
            conn.send(answer)

    return script


@pytest.mark.parametrize(
    "status_line",
    [
        b"HTTP/1.1 2000 OK\r\n",
        b"HTTP/1.1 20 OK\r\n",
        b"HTTP/1.1 abc OK\r\n",
        b"HTTP/1.1\r\n",
        b"HTTP/2 200\r\n",
        b"ICY 200 OK\r\n",
        b"HTTP/1.1 200 OK\n",
    ],
)
def test_malformed_status_line_is_502(raw_gateway, connect, status_line: bytes) -> None:
    gateway, _ = raw_gateway(answer_with(status_line + b"content-length: 2\r\n\r\nok"))
    client = connect(gateway.port)
    client.send(b"GET /x HTTP/1.1\r\nHost: gw.test\r\n\r\n")
    assert exact_response(client) == BAD_GATEWAY
    assert gateway.pool_state() == (0, 0)


def exact_response(client) -> bytes:
    response = client.read_response()
    return response.raw_head + response.body


def test_upstream_reset_before_answering_is_502(raw_gateway, connect) -> None:
    gateway, upstream = raw_gateway(answer_with(then_reset=True))
    client = connect(gateway.port)
    client.send(b"GET /x HTTP/1.1\r\nHost: gw.test\r\n\r\n")
    assert exact_response(client) == BAD_GATEWAY
    assert gateway.pool_state() == (0, 0)
    client.send(b"GET /y HTTP/1.1\r\nHost: gw.test\r\n\r\n")  # the client connection is fine
    assert exact_response(client) == BAD_GATEWAY
    assert upstream.connections == 2  # a new upstream connection each time


def test_upstream_closing_without_a_response_is_502(raw_gateway, connect) -> None:
    gateway, upstream = raw_gateway(answer_with())
    client = connect(gateway.port)
    client.send(b"GET /x HTTP/1.1\r\nHost: gw.test\r\n\r\n")
    assert exact_response(client) == BAD_GATEWAY
    assert upstream.requests == [b"GET /x HTTP/1.1"]  # a fresh connection: no retry
    assert gateway.pool_state() == (0, 0)


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_upstream_reset_mid_response_closes_the_client_connection(
    raw_gateway, connect, framing: str
) -> None:
    if framing == "chunked":
        head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n"
    else:
        head = b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nhello"
    gateway, _ = raw_gateway(answer_with(head, pause=0.0, then_reset=True))
    client = connect(gateway.port)
    client.send(b"GET /x HTTP/1.1\r\nHost: gw.test\r\n\r\n")
    started = time.monotonic()
    with pytest.raises(ConnectionError):  # a truncated response must not look complete
        client.read_response()
    assert time.monotonic() - started < 1.0  # at once, not after a timeout
    assert wait_until(lambda: gateway.pool_state() == (0, 0))


def test_upstream_hanging_is_504(raw_gateway, connect) -> None:
    release = threading.Event()

    def hang(conn) -> None:
        conn.read_head()
        release.wait(30)  # hangs until the test is over: only the gateway can end it

    gateway, _ = raw_gateway(hang, read_timeout=300)
    client = connect(gateway.port)
    started = time.monotonic()
    client.send(b"GET /x HTTP/1.1\r\nHost: gw.test\r\n\r\n")
    assert exact_response(client) == TIMED_OUT
    assert time.monotonic() - started >= 0.3  # a timeout never fires early (timers.py)
    assert gateway.pool_state() == (0, 0)
    release.set()


def test_upstream_hanging_mid_response_closes_the_client_after_read_timeout(
    raw_gateway, connect
) -> None:
    release = threading.Event()

    def stall(conn) -> None:
        conn.read_head()
        conn.send(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nhello")
        release.wait(30)  # stalls until the test is over: only the gateway can end it

    gateway, _ = raw_gateway(stall, read_timeout=300)
    client = connect(gateway.port)
    client.send(b"GET /x HTTP/1.1\r\nHost: gw.test\r\n\r\n")
    started = time.monotonic()
    with pytest.raises(ConnectionError):  # closed by the gateway, not left hanging
        client.read_response()
    assert time.monotonic() - started >= 0.3  # a timeout never fires early (timers.py)
    assert gateway.pool_state() == (0, 0)
    release.set()


def test_malformed_chunk_in_the_upstream_response_closes_the_client(raw_gateway, connect) -> None:
    gateway, _ = raw_gateway(
        answer_with(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n")
    )
    client = connect(gateway.port)
    client.send(b"GET /x HTTP/1.1\r\nHost: gw.test\r\n\r\n")
    with pytest.raises(ConnectionError):
        client.read_response()
    assert wait_until(lambda: gateway.pool_state() == (0, 0))


SMUGGLED_RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nevil!"


@pytest.mark.parametrize(
    "extra",
    [SMUGGLED_RESPONSE, b"garbage", SMUGGLED_RESPONSE[:30]],
    ids=["whole-response", "garbage", "partial-head"],
)
def test_response_bigger_than_announced_is_cut_and_its_connection_dropped(
    raw_gateway, connect, extra: bytes
) -> None:
    """Bytes after the announced body in the same read: the client gets exactly the announced
    response, and neither this client's next (pipelined) request nor anyone else is ever
    answered from those bytes: the connection is not pooled."""
    answers = iter([b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok" + extra])

    def script(conn) -> None:
        while conn.read_head() is not None:
            conn.send(next(answers, b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\ngood"))

    gateway, upstream = raw_gateway(script)
    client = connect(gateway.port)
    client.send(b"GET /1 HTTP/1.1\r\nHost: gw.test\r\n\r\nGET /2 HTTP/1.1\r\nHost: gw.test\r\n\r\n")
    first, second = client.read_response(), client.read_response()
    assert (first.status, first.body) == (200, b"ok")
    assert (second.status, second.body) == (200, b"good")
    assert upstream.connections == 2
    assert client.request("GET", "/3").body == b"good"
    assert wait_until(lambda: gateway.pool_state() == (1, 0))


def test_bytes_arriving_on_an_idle_pooled_connection_drop_it(raw_gateway, connect) -> None:
    first = threading.Event()

    def script(conn) -> None:
        if not first.is_set():
            first.set()
            conn.read_head()
            conn.send(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            time.sleep(0.2)  # the connection is pooled by now
            conn.send(SMUGGLED_RESPONSE)
            conn.read_head()
            return
        while conn.read_head() is not None:
            conn.send(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\ngood")

    gateway, upstream = raw_gateway(script)
    client = connect(gateway.port)
    assert client.request("GET", "/1").body == b"ok"
    assert wait_until(lambda: gateway.pool_state() == (1, 0))
    assert wait_until(lambda: gateway.pool_state() == (0, 0))  # dropped, not kept
    assert client.request("GET", "/2").body == b"good"
    assert upstream.connections == 2


# -- pipelining: order, and local answers in the middle ------------------------------------------


def test_pipeline_of_proxied_and_local_answers_stays_in_order(recording_gateway, connect) -> None:
    gateway, upstream = recording_gateway()
    client = connect(gateway.port)
    client.send(
        b"GET /slow/1 HTTP/1.1\r\nHost: gw.test\r\n\r\n"
        # 401 from a plugin, with a body that looks like a request: it is body, and dropped
        b"POST /deny HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 35\r\n\r\n"
        b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /3 HTTP/1.1\r\nHost: gw.test\r\n\r\n"
        # 403 from a plugin, chunked body, with a trailer
        b"POST /forbid HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n"
        b"POST /5 HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 2\r\n\r\nhi"
    )
    answers = [client.read_response() for _ in range(5)]
    assert [(r.status, r.body) for r in answers] == [
        (200, b"GET /slow/1 HTTP/1.1"),
        (401, b'{"message":"Unauthorized"}'),
        (200, b"GET /3 HTTP/1.1"),
        (403, b'{"message":"Forbidden"}'),
        (200, b"POST /5 HTTP/1.1"),
    ]
    assert upstream.received == [
        forwarded(gateway, upstream, b"GET /slow/1"),
        forwarded(gateway, upstream, b"GET /3"),
        forwarded(gateway, upstream, b"POST /5", b"content-length: 2\r\n", b"hi"),
    ]
    assert not client.is_closed(0.2)


def test_pipelined_401_whose_body_arrives_later_does_not_corrupt_the_next(
    recording_gateway, connect
) -> None:
    gateway, upstream = recording_gateway()
    client = connect(gateway.port)
    client.send(b"POST /deny HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 40\r\n\r\n")
    assert client.read_response().status == 401  # answered before its body
    client.send(b"GET /smuggled HTTP/1.1\r\nHost: gw.test\r\n\r\n" + b"GET /3 HTTP/1.1\r\n")
    client.send(b"Host: gw.test\r\n\r\n")
    assert client.read_response().body == b"GET /3 HTTP/1.1"
    assert upstream.received == [forwarded(gateway, upstream, b"GET /3")]


def test_pipeline_ends_at_a_malformed_request_after_answering_the_ones_before(
    recording_gateway, connect
) -> None:
    gateway, upstream = recording_gateway()
    client = connect(gateway.port)
    client.send(
        b"GET /slow/1 HTTP/1.1\r\nHost: gw.test\r\n\r\n"
        b"GET /2 HTTP/1.1\r\nHost: gw.test\r\n\r\n"
        b"GET /3 HTTP/1.1\r\nHost: gw.test\r\nX-A : smuggle\r\n\r\n"
        b"GET /4 HTTP/1.1\r\nHost: gw.test\r\n\r\n"
    )
    assert client.read_response().body == b"GET /slow/1 HTTP/1.1"
    assert client.read_response().body == b"GET /2 HTTP/1.1"
    assert read_all(client) == gateway_error(400)
    assert upstream.received == [
        forwarded(gateway, upstream, b"GET /slow/1"),
        forwarded(gateway, upstream, b"GET /2"),
    ]
    still_serves(gateway, upstream, connect)


def test_loop_errors_become_one_rate_limited_line(caplog) -> None:
    """What uvloop reports through the loop's exception handler (e.g. a failing accept) is one
    line per kind of error per 10 s, however often it happens: a client can repeat it at will."""
    from fastgw.process.worker import LoopErrors

    handler = LoopErrors()
    error = OSError(24, "Too many open files")
    with caplog.at_level("ERROR", logger="fastgw"):
        for _ in range(1000):
            handler(None, {"message": "Fatal error on server TCPServer", "exception": error})
        handler(
            None, {"message": "protocol.data_received() call failed.", "exception": KeyError("x")}
        )
    lines = [record.getMessage() for record in caplog.records]
    assert lines == [
        "event loop: Fatal error on server TCPServer: [Errno 24] Too many open files",
        "event loop: protocol.data_received() call failed.: KeyError('x')",
    ]
    assert caplog.records[0].exc_info is None  # an OSError: no traceback
    assert caplog.records[1].exc_info is not None  # anything else is a bug: traceback
