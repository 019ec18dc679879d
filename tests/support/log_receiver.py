"""Real log receivers for the logging plugins' tests: an HTTP one (http-log) that can answer,
hold every request, be down and come back on the same port, and a TCP one (tcp-log), plain or
TLS, that keeps the lines it reads and the server name each connection asked for.

Each runs in threads of the test process; the gateway under test is another process.
"""

from __future__ import annotations

import contextlib
import json
import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

WAIT = 15.0  # generous bound of every wait below (they end on a state)


def wait_until(condition: Callable[[], bool], timeout: float = WAIT, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        time.sleep(0.01)


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes

    def records(self) -> list[dict[str, Any]]:
        """The body's records: one object, or an array of them."""
        document = json.loads(self.body)
        return document if isinstance(document, list) else [document]


def _drop(connections: list[socket.socket]) -> None:
    """Close `connections` now, whoever is reading them."""
    for connection in connections:
        with contextlib.suppress(OSError):
            connection.shutdown(socket.SHUT_RDWR)
        connection.close()
    connections.clear()


class _Tracking(ThreadingHTTPServer):
    """Keeps its connections, so that going down closes kept-alive ones too."""

    allow_reuse_address = True
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type) -> None:
        self.open: list[socket.socket] = []
        super().__init__(address, handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        connection, address = super().get_request()
        self.open.append(connection)
        return connection, address

    def drop_connections(self) -> None:
        _drop(self.open)


@dataclass
class HttpReceiver:
    """An HTTP log server on `port` (0: a free one, kept across stop/start)."""

    port: int = 0
    status: int = 200
    requests: list[Received] = field(default_factory=list)
    holding: int = 0  # requests being held right now
    _hold: threading.Event | None = None
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> HttpReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                hold = receiver._hold
                if hold is not None:
                    with receiver._lock:
                        receiver.holding += 1
                    hold.wait(WAIT)
                    with receiver._lock:
                        receiver.holding -= 1
                headers = {name.lower(): value for name, value in self.headers.items()}
                with receiver._lock:
                    receiver.requests.append(Received(self.command, self.path, headers, body))
                self.send_response(receiver.status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            do_PUT = do_PATCH = do_POST

            def log_message(self, format: str, *args: object) -> None:
                pass

        server = _Tracking(("127.0.0.1", self.port), Handler)
        self.port = server.server_address[1]
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Down: nothing listens on the port any more (connections are refused)."""
        server, self._server = self._server, None
        if server is not None:
            self.release()
            server.shutdown()
            server.server_close()
            server.drop_connections()

    def hold(self) -> None:
        """From now on, every request is held until `release`."""
        self._hold = threading.Event()

    def release(self) -> None:
        hold, self._hold = self._hold, None
        if hold is not None:
            hold.set()

    def records(self) -> list[dict[str, Any]]:
        with self._lock:
            return [record for request in self.requests for record in request.records()]


class _TcpHandler(socketserver.StreamRequestHandler):
    server: TcpServer

    def handle(self) -> None:
        connection = self.request
        name = getattr(connection, "sni", None)
        receiver = self.server.receiver
        with receiver.lock:
            receiver.connections += 1
            receiver.server_names.append(name)
        for line in self.rfile:
            with receiver.lock:
                receiver.lines.append(line)


class TcpServer(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True

    def __init__(self, port: int, receiver: TcpReceiver) -> None:
        self.receiver = receiver
        self.open: list[socket.socket] = []
        super().__init__(("127.0.0.1", port), _TcpHandler)

    def get_request(self) -> tuple[socket.socket, Any]:
        connection, address = super().get_request()
        self.open.append(connection)
        context = self.receiver.tls
        if context is None:
            return connection, address
        connection.settimeout(WAIT)  # the handshake's bound
        tls = context.wrap_socket(connection, server_side=True)
        tls.settimeout(None)  # then lines come when they come
        return tls, address

    def drop_connections(self) -> None:
        _drop(self.open)


@dataclass
class TcpReceiver:
    """A TCP (or, with `tls`, TLS) line receiver on `port` (0: a free one, kept)."""

    tls: ssl.SSLContext | None = None
    port: int = 0
    lines: list[bytes] = field(default_factory=list)
    server_names: list[str | None] = field(default_factory=list)
    connections: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    _server: TcpServer | None = None

    def start(self) -> TcpReceiver:
        if self.tls is not None:

            def remember(sock: ssl.SSLObject, name: str | None, context: object) -> None:
                sock.sni = name  # type: ignore[attr-defined]

            self.tls.sni_callback = remember  # type: ignore[assignment]
        server = TcpServer(self.port, self)
        self.port = server.server_address[1]
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
            server.drop_connections()

    def records(self) -> list[dict[str, Any]]:
        with self.lock:
            return [json.loads(line) for line in self.lines]
