"""The proxy's listening sockets: opened at start, changed by a reload (the new ones open first,
the dropped ones stop accepting and their connections drain), closed at stop.

A plain listener is the event loop's server; a TLS one accepts in the gateway, so that its
connections count from accept (fastgw/http/tls_accept.py).
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
from typing import Final

from fastgw.config import Listener
from fastgw.http.server import Server, ServerConnection
from fastgw.http.tls_accept import TlsListener, accept_queued, listening_sockets

# Pending connections the kernel queues per listener; nginx's default on Linux is 511.
LISTEN_BACKLOG: Final = 1024

# a bound listener: the event loop's (plain, admin) or the gateway's own (TLS)
Listening = asyncio.base_events.Server | TlsListener


class ProxyListeners:
    """The proxy listeners in config order, each with the server that serves it."""

    def __init__(self, proxy: Server, reuse_port: bool) -> None:
        self.proxy = proxy
        self.reuse_port = reuse_port
        self.bound: list[tuple[Listener, Listening]] = []
        # connections taken from a retired listener's queue, until their transport exists
        self._adopting: set[asyncio.Task[tuple[asyncio.Transport, ServerConnection]]] = set()

    @property
    def servers(self) -> list[Listening]:
        return [server for _, server in self.bound]

    async def open(
        self, listeners: tuple[Listener, ...], tls: ssl.SSLContext | None, handshake: float
    ) -> None:
        for listener in listeners:
            self.bound.append((listener, await self._listen(listener, tls, handshake)))

    async def change(
        self, listeners: tuple[Listener, ...], tls: ssl.SSLContext | None, handshake: float
    ) -> None:
        """Serve `listeners` from now on: the added ones open first (all or none: an OSError
        leaves everything as it was), then the dropped ones stop accepting and the connections
        they accepted drain (Server.start_draining, with the drain's grace)."""
        current = dict(self.bound)
        opened: dict[Listener, Listening] = {}
        try:
            for listener in listeners:
                if listener not in current and listener not in opened:
                    opened[listener] = await self._listen(listener, tls, handshake)
        except BaseException:
            for server in opened.values():
                server.close()
            raise
        dropped = [server for listener, server in self.bound if listener not in listeners]
        self.bound = [(item, current.get(item) or opened[item]) for item in listeners]
        addresses = _addresses(dropped)
        if addresses:
            self.proxy.start_draining(lambda conn: _accepted_on(conn, addresses))
        for server in dropped:
            self._retire(server)

    def _retire(self, server: Listening) -> None:
        """Close a dropped listener without losing what the kernel queued on it.

        With --workers N the workers' sockets share the port (SO_REUSEPORT); a socket closing
        resets the connections queued on it, whose clients may have sent a request already,
        while the other workers' sockets still take new ones. So the queue is closed to new
        connections first (a backlog of 0), what it holds is accepted and drained (answered
        with `connection: close`), and only then is the socket closed.
        """
        if isinstance(server, TlsListener):
            server.retire()
            return
        spares = [socket.socket(fileno=os.dup(sock.fileno())) for sock in server.sockets]
        for spare in spares:
            spare.listen(0)
        server.close()  # the kernel's socket stays open through the spare descriptor
        loop = asyncio.get_running_loop()
        for spare in spares:
            spare.setblocking(False)
            for client, _ in accept_queued(spare):
                task = loop.create_task(
                    loop.connect_accepted_socket(self._draining_connection, client)
                )
                self._adopting.add(task)
                task.add_done_callback(self._adopting.discard)
            spare.close()

    def _draining_connection(self) -> ServerConnection:
        conn = self.proxy.protocol_factory()
        conn.drain(self.proxy.ticker.now or 1e-9)
        return conn

    async def _listen(
        self, listener: Listener, tls: ssl.SSLContext | None, handshake: float
    ) -> Listening:
        host = listener.host or None
        if not listener.ssl:
            return await asyncio.get_running_loop().create_server(
                self.proxy.protocol_factory,
                host,
                listener.port,
                reuse_port=self.reuse_port or None,
                backlog=LISTEN_BACKLOG,
            )
        assert tls is not None  # built for every config with an ssl listener
        sockets = listening_sockets(host, listener.port, self.reuse_port, LISTEN_BACKLOG)
        return TlsListener(self.proxy, sockets, tls, handshake)

    def abort_handshakes(self) -> None:
        for server in self.servers:
            if isinstance(server, TlsListener):
                server.abort_handshakes()

    def close(self) -> None:
        for server in self.servers:
            server.close()

    async def wait_closed(self) -> None:
        for server in self.servers:
            await server.wait_closed()
        self.bound = []


def bound_addresses(servers: list[Listening]) -> list[tuple[str, int]]:
    """The (host, port) each server's sockets bound, in order (useful with port 0)."""
    result = []
    for server in servers:
        for sock in server.sockets:
            address = sock.getsockname()
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                result.append((address[0], address[1]))
    return result


def _addresses(servers: list[Listening]) -> set[tuple[str, int]]:
    """Where `servers` listen; a wildcard host ("0.0.0.0", "::") as "" (any local address)."""
    return {
        ("" if host in ("0.0.0.0", "::") else host, port) for host, port in bound_addresses(servers)
    }


def _accepted_on(conn: ServerConnection, addresses: set[tuple[str, int]]) -> bool:
    transport = conn.transport
    local = transport.get_extra_info("sockname") if transport is not None else None
    if not isinstance(local, tuple):
        return False
    return (local[0], local[1]) in addresses or ("", local[1]) in addresses
