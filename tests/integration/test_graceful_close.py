"""An error answer given while the client is still sending must reach it (RFC 9112 §9.6): the
gateway shuts its side down and drains the rest instead of closing into a reset."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable

import pytest

from tests.integration.conftest import EmbeddedGateway

pytestmark = pytest.mark.integration

BODY_SENT = 8 * 1024 * 1024  # far more than the kernel buffers between client and gateway
CHUNK = 64 * 1024


def answer_while_sending(port: int, head: bytes, filler: bytes) -> bytes:
    """Send `head`, then `filler` up to BODY_SENT bytes, and only then read (as a client that
    uploads before it reads, curl's way): returns everything read until the gateway closed.
    Had the gateway closed at once, the bytes still coming would draw a reset, which discards
    the answer waiting unread in the client's buffer."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(head)
    errors: list[BaseException] = []

    def keep_sending() -> None:
        sent = 0
        try:
            while sent < BODY_SENT:
                sent += sock.send(filler)
        except OSError as error:  # the gateway may stop reading once it gave up lingering
            errors.append(error)

    sender = threading.Thread(target=keep_sending, daemon=True)
    sender.start()
    sender.join(30)
    received = bytearray()
    try:
        while chunk := sock.recv(65536):
            received += chunk
    finally:
        sock.close()
    assert not errors, errors  # the gateway read (and dropped) all of it
    return bytes(received)


@pytest.mark.parametrize(
    ("status", "head", "filler"),
    [
        # a body over max_body_size: 413 at the head, while the body keeps coming
        (
            413,
            b"POST /echo HTTP/1.1\r\nHost: gw.test\r\nContent-Length: %d\r\n\r\n" % BODY_SENT,
            b"x" * CHUNK,
        ),
        # a head that never ends: 431 while the client is still sending fields
        (431, b"GET /echo HTTP/1.1\r\nHost: gw.test\r\n", b"X-Filler: " + b"y" * 1000 + b"\r\n"),
        # a malformed head (a field without a colon), then more bytes
        (400, b"GET /echo HTTP/1.1\r\nHost: gw.test\r\nno colon here\r\n", b"z" * CHUNK),
    ],
)
def test_the_client_reads_the_error_answer_instead_of_a_reset(
    make_gateway: Callable[..., EmbeddedGateway], status: int, head: bytes, filler: bytes
) -> None:
    gateway = make_gateway(max_body_size=1024)
    received = answer_while_sending(gateway.port, head, filler)
    assert received.startswith(b"HTTP/1.1 %d " % status), received[:200]
    assert b"connection: close" in received.lower()
    assert received.endswith(b"}")  # the whole JSON body arrived, not cut by a reset
