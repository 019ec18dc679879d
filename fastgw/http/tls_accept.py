"""A TLS listener whose accepts the gateway owns: a connection is admitted (counted) at accept,
its handshake bound by ssl_handshake_timeout, then it is an ordinary client connection.

asyncio's `create_server(ssl=...)` calls the protocol only once the handshake is done, so the
connections in their handshake were counted nowhere: a flood of connects that never send a
ClientHello took every descriptor unseen. nginx counts a connection against worker_connections
from accept; so does this. The handshake and everything after it run on the gateway's own TLS
transport (fastgw/http/tls_transport.py), which tells the connection once its handshake is done.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import ssl
from typing import Final, Protocol, cast

from fastgw.http.admission import Admission
from fastgw.http.tls_transport import RECV_BUFFER_BYTES, TlsTransport
from fastgw.observability.ratelog import RateLimitedLog

log = logging.getLogger("fastgw.http")

# Connections accepted per readiness event at most, so that a burst of connects does not hold
# the loop from the connections already open.
ACCEPT_BATCH: Final = 128
# After an accept fails for want of descriptors or memory, accepting pauses this long (nginx
# pauses accepting for its accept_mutex_delay, 500 ms, the same way); the kernel keeps the rest
# in the listen queue meanwhile.
ACCEPT_RETRY_SECONDS: Final = 0.1
_OUT_OF_RESOURCES: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})

_accept_log = RateLimitedLog(log, logging.ERROR)


class Draining(Protocol):
    """A client connection (fastgw/http/server.py is one): an asyncio protocol, drained when
    its listener is being retired."""

    def drain(self, now: float) -> None: ...


class Listening(Protocol):
    """What a TLS listener needs of the listener state it serves (fastgw/http/server.py)."""

    admission: Admission
    draining: bool

    def admitted_connection(self, client_ip: str) -> Draining:
        """A client connection that knows it was admitted at accept (connection_made does not
        count it again)."""
        ...


class TlsListener:
    """One or more bound sockets (one per address family) whose connections speak TLS.

    Looks like the `asyncio.Server` of a plain listener where the gateway uses one: `sockets`,
    `close()`, `wait_closed()`.
    """

    def __init__(
        self,
        server: Listening,
        sockets: list[socket.socket],
        context: ssl.SSLContext,
        handshake_timeout: float,
    ) -> None:
        self.server = server
        self.sockets = sockets
        self.context = context
        self.handshake_timeout = handshake_timeout
        self.loop = asyncio.get_running_loop()
        self.handshakes: set[asyncio.Task[None]] = set()
        self.buffer = bytearray(RECV_BUFFER_BYTES)  # every connection's recv, copied out at once
        self.closed = False
        self.retiring = False  # a reload dropped it: what it still accepts drains at once
        for sock in sockets:
            self.loop.add_reader(sock.fileno(), self._accept, sock)

    def _accept(self, sock: socket.socket) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                client, address = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                if error.errno in _OUT_OF_RESOURCES:
                    _accept_log.emit("accepting a TLS connection failed: %s; pausing", error)
                    self.loop.remove_reader(sock.fileno())
                    self.loop.call_later(ACCEPT_RETRY_SECONDS, self._resume, sock)
                return  # anything else (ECONNABORTED: the client left first) is the client's
            self._admit(client, address)

    def _admit(self, client: socket.socket, address: object) -> None:
        client_ip = address[0] if isinstance(address, tuple) else "127.0.0.1"
        if self.server.draining or not self.server.admission.admit(client_ip, True):
            client.close()
            return
        task = self.loop.create_task(self._handshake(client, client_ip))
        self.handshakes.add(task)
        task.add_done_callback(self.handshakes.discard)

    def _resume(self, sock: socket.socket) -> None:
        if not self.closed:
            self.loop.add_reader(sock.fileno(), self._accept, sock)

    async def _handshake(self, client: socket.socket, client_ip: str) -> None:
        server = self.server
        admission = server.admission
        conn = server.admitted_connection(client_ip)
        transport: TlsTransport | None = None
        try:
            client.setblocking(False)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            transport = TlsTransport(
                self.loop,
                client,
                self.context,
                cast(asyncio.Protocol, conn),
                self.handshake_timeout,
                self.buffer,
            )
            await transport.opened
        except BaseException as error:
            # a client that never finished, sent no TLS, or left: nothing to answer it
            made = transport is not None and transport.made
            if transport is not None:
                transport.abort()
            else:
                client.close()
            admission.handshake_done()
            if not made:
                admission.release(client_ip)  # else conn's connection_lost releases it
            if not isinstance(error, Exception):
                raise  # cancelled (the drain's deadline)
            return
        admission.handshake_done()  # conn has its transport now (connection_made ran)
        if self.retiring:
            conn.drain(self.loop.time())

    @property
    def in_handshake(self) -> int:
        return len(self.handshakes)

    def abort_handshakes(self) -> None:
        for task in tuple(self.handshakes):
            task.cancel()

    def retire(self) -> None:
        """A reload dropped this listener: no new connection enters its queue (a backlog of 0:
        with SO_REUSEPORT the other workers' sockets take them), what it holds is accepted and
        drained, then it closes. Closing at once would reset the queued connections."""
        self.retiring = True
        for sock in self.sockets:
            sock.listen(0)
            for client, address in accept_queued(sock):
                self._admit(client, address)  # type: ignore[arg-type]
        self.close()

    def close(self) -> None:
        """Stop accepting (handshakes under way go on)."""
        if self.closed:
            return
        self.closed = True
        for sock in self.sockets:
            self.loop.remove_reader(sock.fileno())
            sock.close()

    async def wait_closed(self) -> None:
        if self.handshakes:
            await asyncio.gather(*self.handshakes, return_exceptions=True)


def accept_queued(sock: socket.socket) -> list[tuple[socket.socket, object]]:
    """Every connection a non-blocking listening socket holds in its queue now."""
    accepted: list[tuple[socket.socket, object]] = []
    while True:
        try:
            accepted.append(sock.accept())
        except (BlockingIOError, InterruptedError):
            return accepted
        except OSError:
            return accepted  # the client left first, or out of descriptors: nothing more now


def listening_sockets(
    host: str | None, port: int, reuse_port: bool, backlog: int
) -> list[socket.socket]:
    """Bound, listening, non-blocking sockets for `host` (None: every address of each family),
    as `loop.create_server` makes them."""
    infos = socket.getaddrinfo(
        host, port, family=socket.AF_UNSPEC, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    sockets: list[socket.socket] = []
    try:
        for family, kind, protocol, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, protocol)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as error:
                raise OSError(
                    error.errno,
                    f"error while attempting to bind on address {address!r}: {error.strerror}",
                ) from None
            sock.listen(backlog)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets
