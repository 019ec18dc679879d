"""A slow body cannot hold the gateway: the body a plugin buffers has a whole deadline, a streamed
one a minimum rate, and one client address cannot take every connection slot.

The attack, from outside: `POST` with `Content-Length: 60000` to a route whose openid-connect
plugin looks for credentials in the body, then one byte at a time, each before the between-bytes
timeout (nginx's client_body_timeout idea) would fire, on as many connections as the gateway
takes. The test's gateway runs with 256 descriptors (192 client connections) and short timeouts,
so the same shape takes seconds.
"""

from __future__ import annotations

import contextlib
import socket
import time

from tests.integration.conftest import proxy_config

HEAD_TIMEOUT = 2  # the between-bytes bound; the holder sends a byte every TRICKLE seconds
TRICKLE = 0.5
BODY_DEADLINE = 3  # request_body_timeout
ATTACKER, CLIENT = "127.0.0.2", "127.0.0.1"  # two loopback addresses: two client addresses

OIDC_ROUTE = """\
  - name: protected
    url: http://127.0.0.1:9
    routes:
      - name: form-credentials
        paths: [/token-in-body]
        plugins:
          - name: openid-connect
            config:
              issuer: http://127.0.0.1:9/
              auth_methods: [client_credentials]
"""


def config(echo_port: int, closed_port: int, **settings: object) -> str:
    return proxy_config(echo_port, closed_port, **settings) + OIDC_ROUTE


def open_holders(port: int, count: int) -> list[socket.socket]:
    holders = []
    for _ in range(count):
        sock = socket.create_connection(
            ("127.0.0.1", port), timeout=5, source_address=(ATTACKER, 0)
        )
        sock.sendall(
            b"POST /token-in-body HTTP/1.1\r\nHost: gw.test\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 60000\r\n\r\n"
        )
        holders.append(sock)
    return holders


def trickle(holders: list[socket.socket]) -> None:
    for sock in holders:
        with contextlib.suppress(OSError):  # refused or answered: nothing to hold
            sock.send(b"a")


def answer_of(sock: socket.socket) -> bytes | None:
    """What the gateway sent on `sock`: None while it sent nothing yet, b"" once it closed the
    connection without a word (a refused one)."""
    sock.setblocking(False)
    try:
        return sock.recv(4096)
    except BlockingIOError:
        return None
    except OSError:
        return b""
    finally:
        sock.setblocking(True)


def get_from(port: int, source: str) -> bytes:
    try:
        with socket.create_connection(
            ("127.0.0.1", port), timeout=5, source_address=(source, 0)
        ) as sock:
            sock.sendall(b"GET /echo/x HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n")
            return sock.recv(100)
    except OSError:
        return b""


def test_a_slow_body_holder_is_cut_at_the_deadline_while_others_are_served(
    run_cli, echo, closed_port
) -> None:
    cli = run_cli(
        config(
            echo.port,
            closed_port,
            head_timeout=HEAD_TIMEOUT,
            request_body_timeout=BODY_DEADLINE,
            request_body_min_rate=0,  # the whole-body deadline alone
        ),
        nofile=256,
    )
    cli.wait_listening()
    cli.log.wait_for(r"up to 192 client connections per worker")
    holders = open_holders(cli.port, 192)  # every slot the gateway has, from one address
    started = time.monotonic()
    try:
        served = []
        # while the holders trickle (each byte well inside the between-bytes timeout), another
        # address is served
        while time.monotonic() - started < BODY_DEADLINE - 1:
            trickle(holders)
            served.append(get_from(cli.port, CLIENT).startswith(b"HTTP/1.1 200 "))
            time.sleep(TRICKLE)
        assert served and all(served), served
        # and the holders get their 408 once the whole body is overdue, though they never
        # stopped sending
        deadline = started + BODY_DEADLINE + 10  # a generous bound, not a timing assertion
        answers: dict[int, bytes] = {}
        while len(answers) < len(holders) and time.monotonic() < deadline:
            trickle(holders)
            for index, sock in enumerate(holders):
                if index not in answers:
                    answer = answer_of(sock)
                    if answer is not None:
                        answers[index] = answer
            time.sleep(TRICKLE)
        cut = [answer for answer in answers.values() if answer.startswith(b"HTTP/1.1 408 ")]
        # three quarters of the slots from one address; the other 48 were refused at once
        assert (len(cut), len(answers)) == (144, 192), sorted({a[:12] for a in answers.values()})
    finally:
        for sock in holders:
            sock.close()
    assert get_from(cli.port, ATTACKER).startswith(b"HTTP/1.1 200 ")  # the address is free again
