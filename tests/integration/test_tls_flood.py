"""20,000 TLS handshakes that never happen, while plain clients are served; RSS afterwards.

The attack, from outside: bare TCP connects to the TLS listener that never send a ClientHello,
round after round. They count from accept and hold at most half the client slots, so plain
clients keep being served; the heap they freed goes back to the system once they are gone.
The gateway runs with 1,000 descriptors (875 client connections), so the shape is the issue's
(20,000 descriptors) at a twentieth of the size.
"""

from __future__ import annotations

import socket
import time

from tests.integration.conftest import free_port
from tests.support.tls import session_pki

ROUNDS = 20
PER_ROUND = 1000  # connects per round: more than the gateway's descriptors
MIB = 1024 * 1024


def config(echo_port: int, plain: int, secure: int) -> str:
    pki = session_pki()
    return f"""\
_format_version: "3.0"
_fastgw:
  listen: ["127.0.0.1:{plain}", "127.0.0.1:{secure} ssl"]
  admin_listen: null
  ssl_cert: {pki.default.cert}
  ssl_cert_key: {pki.default.key}
services:
  - name: echo
    url: http://127.0.0.1:{echo_port}
    routes: [{{name: any, paths: [/echo], strip_path: false}}]
"""


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def open_fds(pid: int) -> int:
    import os

    return len(os.listdir(f"/proc/{pid}/fd"))


def plain_get(port: int) -> bytes:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"GET /echo/x HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n")
            return sock.recv(100)
    except OSError as error:
        return repr(error).encode()


def wait_until(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_unfinished_handshakes_never_starve_plain_clients_and_rss_comes_back(run_cli, echo) -> None:
    plain, secure = free_port(), free_port()
    cli = run_cli(config(echo.port, plain, secure), listen=None, nofile=1000)
    cli.log.wait_for(rf"listening on .*127\.0\.0\.1:{secure} ssl")
    assert plain_get(plain).startswith(b"HTTP/1.1 200 ")
    rss_before = rss(cli.pid)
    answers: list[bytes] = []
    peak = 0
    for _ in range(ROUNDS):
        connects = []
        for _ in range(PER_ROUND):
            sock = socket.socket()
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", secure))
            connects.append(sock)
        # the gateway has taken its share of them (or, before the fix, every descriptor)
        assert wait_until(lambda: open_fds(cli.pid) >= 437, timeout=10)
        peak = max(peak, rss(cli.pid))
        answers += [plain_get(plain) for _ in range(5)]
        for sock in connects:
            sock.close()
    served = [answer.startswith(b"HTTP/1.1 200 ") for answer in answers]
    assert all(served), {answer[:40] for answer in answers}
    # once they are gone the heap goes back: RSS within 40 MiB of where it was (the flood took
    # hundreds), waiting for the worker's trim (at most every 10 s)
    assert wait_until(lambda: rss(cli.pid) < rss_before + 40 * MIB, timeout=30), (
        f"RSS {rss_before // MIB} MiB before, {peak // MIB} at the peak, "
        f"{rss(cli.pid) // MIB} after"
    )
    assert plain_get(plain).startswith(b"HTTP/1.1 200 ")
