"""The gateway's TLS transport (fastgw/http/tls_transport.py) against Python's own TLS client
over a real socket pair, on uvloop as the gateway runs it: the handshake and its bound, records
both ways, back-pressure both ways, and each way a connection ends."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
import uvloop

from fastgw.http.tls_transport import (
    RECV_BUFFER_BYTES,
    WRITE_HIGH_WATER,
    TlsTransport,
    session_of,
)
from tests.support import tls as support_tls


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> support_tls.TestPki:
    return support_tls.make_pki(Path(tmp_path_factory.mktemp("pki")))


def server_context(pki: support_tls.TestPki) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.default.cert, pki.default.key)
    return context


@pytest.fixture(scope="module")
def contexts(pki) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    return server_context(pki), ssl.create_default_context(cafile=str(pki.ca))


class Recorder(asyncio.Protocol):
    """What the transport told its protocol, in order."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.data = bytearray()
        self.transport: asyncio.Transport | None = None
        self.lost: asyncio.Future[Exception | None] | None = None
        self.received = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.events.append("made")
        self.transport = transport  # type: ignore[assignment]
        self.lost = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self.data += data
        self.received.set()

    def eof_received(self) -> bool | None:
        self.events.append("eof")
        return None

    def pause_writing(self) -> None:
        self.events.append("pause_writing")

    def resume_writing(self) -> None:
        self.events.append("resume_writing")

    def connection_lost(self, exc: Exception | None) -> None:
        self.events.append("lost")
        assert self.lost is not None
        self.lost.set_result(exc)


def run(test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    uvloop.run(asyncio.wait_for(test(), 30))


def serve(
    server: ssl.SSLContext, timeout: float = 10.0, protocol: Recorder | None = None
) -> tuple[TlsTransport, Recorder, socket.socket]:
    """A transport on one end of a socket pair; the other end for the client."""
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    protocol = protocol if protocol is not None else Recorder()
    transport = TlsTransport(
        asyncio.get_running_loop(), ours, server, protocol, timeout, bytearray(RECV_BUFFER_BYTES)
    )
    return transport, protocol, theirs


def tls_client(sock: socket.socket, client: ssl.SSLContext) -> ssl.SSLSocket:
    return client.wrap_socket(sock, server_hostname="localhost")


def test_records_go_both_ways_after_the_handshake(contexts) -> None:
    server, client = contexts

    async def test() -> None:
        transport, protocol, theirs = serve(server)

        def talk() -> bytes:
            with tls_client(theirs, client) as tls:
                tls.sendall(b"GET / HTTP/1.1\r\n\r\n")
                answer = tls.recv(100)
                tls.unwrap()  # its close_notify, and ours back
                return answer

        answer = asyncio.create_task(asyncio.to_thread(talk))
        await transport.opened
        assert protocol.events == ["made"]
        assert transport.get_extra_info("ssl_object").version() in ("TLSv1.2", "TLSv1.3")
        await protocol.received.wait()
        assert bytes(protocol.data) == b"GET / HTTP/1.1\r\n\r\n"
        transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
        assert await answer == b"HTTP/1.1 200 OK\r\n\r\n"
        assert protocol.lost is not None
        assert await protocol.lost is None  # the client's close_notify: a clean end
        assert protocol.events == ["made", "eof", "lost"]
        assert transport.is_closing()

    run(test)


def test_a_handshake_that_never_comes_times_out_and_closes(contexts) -> None:
    server, _ = contexts

    async def test() -> None:
        transport, protocol, theirs = serve(server, timeout=0.2)
        with pytest.raises(TimeoutError):
            await transport.opened
        assert protocol.events == []  # the protocol never heard of it
        theirs.settimeout(5)
        assert theirs.recv(10) == b""  # closed on our side
        theirs.close()

    run(test)


def test_not_tls_fails_the_handshake(contexts) -> None:
    server, _ = contexts

    async def test() -> None:
        transport, protocol, theirs = serve(server)
        theirs.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        with pytest.raises(ssl.SSLError):
            await transport.opened
        assert protocol.events == []
        theirs.close()

    run(test)


def test_a_client_leaving_in_its_handshake_fails_it(contexts) -> None:
    server, _ = contexts

    async def test() -> None:
        transport, protocol, theirs = serve(server)
        theirs.close()
        with pytest.raises(ConnectionError):
            await transport.opened
        assert protocol.events == []

    run(test)


def test_close_sends_close_notify_after_what_was_written(contexts) -> None:
    server, client = contexts

    async def test() -> None:
        transport, protocol, theirs = serve(server)

        def read_all() -> tuple[bytes, bool]:
            with tls_client(theirs, client) as tls:
                tls.sendall(b"x")
                got = b""
                while chunk := tls.recv(65536):
                    got += chunk
                # recv gave b"" on a close_notify; a bare FIN would raise SSLEOFError
                return got, True

        reading = asyncio.create_task(asyncio.to_thread(read_all))
        await transport.opened
        await protocol.received.wait()
        transport.write(b"a" * 100_000)
        transport.write(b"b")
        transport.close()
        got, clean = await reading
        assert got == b"a" * 100_000 + b"b" and clean
        assert protocol.lost is not None
        assert await protocol.lost is None
        assert protocol.events[0] == "made" and protocol.events[-1] == "lost"
        transport.write(b"after")  # ignored once closing: no error, nothing sent

    run(test)


def test_a_slow_reader_pauses_writing_and_gets_every_byte_in_order(contexts) -> None:
    server, client = contexts
    size = 8 * 1024 * 1024
    pattern = bytes(range(256)) * (size // 256)

    async def test() -> None:
        transport, protocol, theirs = serve(server)
        start_reading = threading.Event()

        def read_slowly() -> bytes:
            with tls_client(theirs, client) as tls:
                tls.sendall(b"go")
                start_reading.wait(10)
                got = bytearray()
                while len(got) < size:
                    chunk = tls.recv(65536)
                    if not chunk:
                        break
                    got += chunk
                return bytes(got)

        reading = asyncio.create_task(asyncio.to_thread(read_slowly))
        await transport.opened
        await protocol.received.wait()
        for offset in range(0, size, 65536):
            transport.write(pattern[offset : offset + 65536])
        assert protocol.events[-1] == "pause_writing"
        assert transport.get_write_buffer_size() > WRITE_HIGH_WATER
        start_reading.set()
        assert await reading == pattern
        assert "resume_writing" in protocol.events
        assert transport.get_write_buffer_size() == 0
        transport.close()

    run(test)


def test_paused_reading_holds_records_until_resumed(contexts) -> None:
    server, client = contexts

    async def test() -> None:
        transport, protocol, theirs = serve(server)
        second = threading.Event()

        def send_two() -> None:
            with tls_client(theirs, client) as tls:
                tls.sendall(b"first")
                second.wait(10)
                tls.sendall(b"second")
                tls.recv(10)  # until we close

        sending = asyncio.create_task(asyncio.to_thread(send_two))
        await transport.opened
        await protocol.received.wait()
        assert bytes(protocol.data) == b"first"
        transport.pause_reading()
        assert not transport.is_reading()
        second.set()
        await asyncio.sleep(0.3)
        assert bytes(protocol.data) == b"first"  # held while paused
        protocol.received.clear()
        transport.resume_reading()
        await protocol.received.wait()
        assert bytes(protocol.data) == b"firstsecond"
        transport.close()
        await sending

    run(test)


def test_abort_ends_at_once_and_the_protocol_hears_once(contexts) -> None:
    server, client = contexts

    async def test() -> None:
        transport, protocol, theirs = serve(server)

        def hold() -> bytes:
            with tls_client(theirs, client) as tls:
                tls.sendall(b"x")
                try:
                    return tls.recv(10)
                except (ssl.SSLError, OSError):
                    return b""

        holding = asyncio.create_task(asyncio.to_thread(hold))
        await transport.opened
        await protocol.received.wait()
        transport.abort()
        transport.abort()
        transport.close()
        assert protocol.lost is not None
        await protocol.lost
        await asyncio.sleep(0)
        assert protocol.events.count("lost") == 1
        assert await holding == b""

    run(test)


def test_sni_reaches_the_context_callback_through_the_ssl_object(pki, contexts) -> None:
    _, client = contexts
    seen: list[tuple[object, str | None]] = []

    async def test() -> None:
        def remember(ssl_object: ssl.SSLObject, name: str | None, _: ssl.SSLContext) -> None:
            seen.append((ssl_object, name))

        context = server_context(pki)
        context.sni_callback = remember  # type: ignore[assignment]
        transport, _, theirs = serve(context)

        def hello() -> bytes:
            with tls_client(theirs, client) as tls:
                return tls.recv(10)  # until we close

        talking = asyncio.create_task(asyncio.to_thread(hello))
        await transport.opened
        assert seen == [(transport.get_extra_info("ssl_object"), "localhost")]
        transport.close()
        assert await talking == b""

    run(test)


def test_the_session_is_the_c_object_under_the_ssl_object_or_the_ssl_object(contexts) -> None:
    server, _ = contexts
    ssl_object = server.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_side=True)
    session = session_of(ssl_object)
    assert session is not ssl_object and type(session).__module__ == "_ssl"
    for method in ("do_handshake", "read", "write", "pending"):
        assert callable(getattr(session, method))

    class Elsewhere:
        """An SSLObject of a Python whose C object is not where 3.7-3.13 keep it."""

    other = Elsewhere()
    assert session_of(other) is other  # type: ignore[arg-type]


def test_a_peer_that_stops_reading_cannot_hold_a_closed_connection(contexts) -> None:
    server, client = contexts

    async def test() -> None:
        transport, protocol, theirs = serve(server)
        release = threading.Event()

        def never_read() -> None:
            with tls_client(theirs, client) as tls:
                tls.sendall(b"x")
                release.wait(10)

        holding = asyncio.create_task(asyncio.to_thread(never_read))
        await transport.opened
        await protocol.received.wait()
        transport.closing_timeout = 0.3
        for _ in range(64):
            transport.write(b"a" * 65536)  # far more than the socket takes
        transport.close()
        assert transport.get_write_buffer_size() > 0
        assert protocol.lost is not None
        assert isinstance(await protocol.lost, TimeoutError)
        release.set()
        await holding

    run(test)


def test_bytes_the_peer_sends_after_the_close_do_not_reset_the_answer(contexts) -> None:
    server, client = contexts
    size = 2 * 1024 * 1024

    async def test() -> None:
        transport, protocol, theirs = serve(server)
        sent_more = threading.Event()

        def pipeline_then_read() -> tuple[int, bool]:
            with tls_client(theirs, client) as tls:
                tls.sendall(b"first")
                sent_more.wait(10)
                tls.sendall(b"second request, never read" * 100)
                got = 0
                while chunk := tls.recv(65536):  # to our close_notify (a reset raises)
                    got += len(chunk)
                return got, True

        reading = asyncio.create_task(asyncio.to_thread(pipeline_then_read))
        await transport.opened
        await protocol.received.wait()
        transport.pause_reading()  # as a gateway holding a pipelined request
        sent_more.set()
        await asyncio.sleep(0.2)
        transport.write(b"r" * size)
        transport.close()
        assert await reading == (size, True)
        assert protocol.lost is not None
        assert await protocol.lost is None

    run(test)


def test_write_eof_ends_the_sending_side_and_the_peer_ends_the_connection(contexts) -> None:
    server, client = contexts

    async def test() -> None:
        transport, protocol, theirs = serve(server)

        def read_then_close() -> bytes:
            with tls_client(theirs, client) as tls:
                tls.sendall(b"x")
                got = b""
                while chunk := tls.recv(65536):
                    got += chunk
                tls.sendall(b"ignored")  # TLS has no half-close: dropped, the FIN ends it
                return got

        reading = asyncio.create_task(asyncio.to_thread(read_then_close))
        await transport.opened
        await protocol.received.wait()
        assert transport.can_write_eof()
        transport.write(b"answer")
        transport.write_eof()
        transport.write(b"too late")  # after write_eof: not sent
        assert await reading == b"answer"
        assert protocol.lost is not None
        assert await protocol.lost is None
        assert protocol.events[-2:] == ["eof", "lost"]
        assert bytes(protocol.data) == b"x"  # "ignored" never reached the protocol

    run(test)


class Failing(Recorder):
    """A protocol whose `where` callback raises."""

    def __init__(self, where: str) -> None:
        super().__init__()
        self.where = where

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self.where == "connection_made":
            raise RuntimeError("connection_made failed")

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.where == "data_received":
            raise RuntimeError("data_received failed")


@pytest.mark.parametrize("where", ["connection_made", "data_received"])
def test_a_protocol_callback_that_raises_ends_the_connection(contexts, where) -> None:
    server, client = contexts

    async def test() -> None:
        protocol = Failing(where)
        transport, _, theirs = serve(server, protocol=protocol)

        def talk() -> bytes:
            try:
                with tls_client(theirs, client) as tls:
                    tls.sendall(b"x")
                    return tls.recv(10)
            except (ssl.SSLError, OSError):
                return b""  # closed before or after its handshake finished on this side

        talking = asyncio.create_task(asyncio.to_thread(talk))
        if where == "connection_made":
            with pytest.raises(RuntimeError):
                await transport.opened  # the listener releases the connection's slot
            await asyncio.sleep(0.05)
            assert "lost" not in protocol.events  # it never was made
            assert not transport.made
        else:
            await transport.opened
            assert protocol.lost is not None
            assert isinstance(await protocol.lost, RuntimeError)
        assert transport.is_closing()
        assert await talking == b""

    run(test)


def test_connection_lost_goes_to_the_protocol_set_last(contexts) -> None:
    server, client = contexts

    async def test() -> None:
        transport, protocol, theirs = serve(server)

        def hello() -> None:
            with tls_client(theirs, client) as tls, contextlib.suppress(ssl.SSLError, OSError):
                tls.recv(10)  # until we abort

        talking = asyncio.create_task(asyncio.to_thread(hello))
        await transport.opened
        transport.abort()
        successor = Recorder()
        successor.connection_made(transport)  # (only to give it its future)
        transport.set_protocol(successor)  # an upgrade in the same turn as the close
        assert successor.lost is not None
        assert await successor.lost is None
        assert "lost" not in protocol.events
        await talking

    run(test)
