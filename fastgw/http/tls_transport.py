"""A server-side TLS connection run by the gateway from the socket's readiness: the handshake,
then records in and out, with no layer between the socket, OpenSSL and the protocol.

The event loop's TLS (`connect_accepted_socket(ssl=...)`) stacks a transport, a TLS protocol
and `ssl.SSLObject`'s Python methods on the MemoryBIOs, and keeps a 256 KiB read buffer per
connection. Here one readable event is one `recv_into` the listener's shared buffer, one
`MemoryBIO.write`, OpenSSL's C session read until nothing is pending, and one `data_received`;
one `write` is one session write and one `send` (bench/README.md, "HTTPS on the gateway's own
TLS transport"). OpenSSL works on memory (a socket BIO would read each record in two syscalls).

The phases:
- HANDSHAKE: bound by the listener's handshake timeout; the protocol is not told of the
  connection yet.
- OPEN: records both ways.
- SHUT (`write_eof`): our close_notify follows what was queued, then the sending side of the
  socket shuts; what the peer still sends is read and dropped, so that closing never meets
  unread bytes (the kernel would answer them with a reset that destroys the answer in flight:
  RFC 9112 9.6). The protocol decides when to close (fastgw/http/server.py lingers, bounded).
- CLOSING (`close`): our close_notify after what was queued, sent within CLOSING_TIMEOUT; then
  the sending side shuts and the socket closes when the peer closes too, within LINGER_TIMEOUT
  (at once after a SHUT: the protocol lingered already). Reads are dropped meanwhile.
- CLOSED.
The peer's close_notify or FIN is its end of the connection: `eof_received`, then close (TLS has
no half-close for a peer to keep sending after it). A protocol callback that raises ends the
connection, as asyncio's own transports do; `connection_lost` goes to the protocol set then.

Compiled (build_info.COMPILED_MODULES): every request over HTTPS passes here twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from typing import Final, Protocol, cast

log = logging.getLogger("fastgw.http")

# The phases of a connection (the module's docstring says what each means).
HANDSHAKE: Final = 0
OPEN: Final = 1
SHUT: Final = 2
CLOSING: Final = 3
CLOSED: Final = 4

# What one session read may return: one TLS record's plaintext at most (RFC 8446 5.1), so one
# read takes a whole record and the allocation stays small.
RECORD_PLAINTEXT_MAX: Final = 16384
# What one recv may take: the listener's buffer (shared by its connections: each read copies
# out of it at once). Four full records and their overhead.
RECV_BUFFER_BYTES: Final = 65536
# asyncio's own write-buffer marks (a transport's defaults): the protocol is paused above the
# high one and resumed at the low one.
WRITE_HIGH_WATER: Final = 64 * 1024
WRITE_LOW_WATER: Final = 16 * 1024
# How long a closed connection may take to send what was queued before it (a client that stops
# reading would hold it forever): uvloop's ssl_shutdown_timeout, nginx's lingering_time.
CLOSING_TIMEOUT: Final = 30.0
# Once everything is sent and the sending side shut, how long the peer may take to close its
# side (what it sends meanwhile is dropped): nginx's lingering_timeout.
LINGER_TIMEOUT: Final = 5.0

_AGAIN: Final = (ssl.SSLWantReadError, ssl.SSLWantWriteError)


class Session(Protocol):
    """OpenSSL's session as ssl.SSLObject and the `_ssl` module's C object under it offer it."""

    def do_handshake(self) -> None: ...
    def read(self, size: int) -> bytes: ...
    def write(self, data: bytes | bytearray | memoryview) -> int: ...
    def pending(self) -> int: ...


def session_of(ssl_object: ssl.SSLObject) -> Session:
    """The C object under an SSLObject (its `_sslobj`, there since Python 3.7), whose methods
    the SSLObject's only pass on; the SSLObject itself should a Python version not have it."""
    return cast(Session, getattr(ssl_object, "_sslobj", ssl_object))


class TlsTransport(asyncio.Transport):
    """One accepted TLS connection. `opened` resolves when the handshake is done (the protocol
    has had connection_made by then), or fails (TimeoutError, ssl.SSLError, ConnectionError);
    cancelling the wait does not close the connection: `abort()` does."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        context: ssl.SSLContext,
        protocol: asyncio.Protocol,
        handshake_timeout: float,
        buffer: bytearray,
    ) -> None:
        super().__init__()
        self.loop = loop
        self.sock = sock
        self.fd = sock.fileno()
        self.protocol = protocol
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        # the public object (what extra info "ssl_object" gives, what the SNI callback gets);
        # its OpenSSL session is called directly on the way of every record
        self.ssl_object = context.wrap_bio(self.incoming, self.outgoing, server_side=True)
        self.session = session_of(self.ssl_object)
        self.buffer = buffer
        self.view = memoryview(buffer)
        self.out = bytearray()  # encrypted bytes the socket did not take yet
        self.phase = HANDSHAKE
        self.reading = True  # the protocol has not paused reading
        self.writing_paused = False  # the protocol was told to pause writing
        self.high_water = WRITE_HIGH_WATER
        self.low_water = WRITE_LOW_WATER
        self.error: Exception | None = None  # what ended the connection, for connection_lost
        self.made = False  # the protocol had connection_made (and will have connection_lost)
        self.write_shut = False  # the socket's sending side is shut
        self.peer_ended = False  # the peer's close_notify or FIN came
        self.closing_timeout = CLOSING_TIMEOUT
        self.peername: object = None
        self.sockname: object = None
        try:
            self.peername = sock.getpeername()
            self.sockname = sock.getsockname()
        except OSError:
            pass  # the client left already: the first read says so
        self.opened: asyncio.Future[None] = loop.create_future()
        self.timer: asyncio.TimerHandle | None = loop.call_later(
            handshake_timeout, self._handshake_expired
        )
        loop.add_reader(self.fd, self._readable)

    # -- reading ---------------------------------------------------------------------------------

    def _readable(self) -> None:
        try:
            count = self.sock.recv_into(self.buffer)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as error:
            self._fail(error)
            return
        phase = self.phase
        if not count:
            self._peer_ended()
        elif phase == OPEN:
            self.incoming.write(self.view[:count])
            self._read_records()
        elif phase == HANDSHAKE:
            self.incoming.write(self.view[:count])
            self._handshake()
        # SHUT, CLOSING: what the peer sends after our close is dropped

    def _read_records(self) -> None:
        """Every record whole in the incoming buffer, to the protocol in one data_received."""
        session = self.session
        incoming = self.incoming
        data = b""
        chunks: list[bytes] | None = None
        ended = False
        failure: Exception | None = None
        try:
            while incoming.pending or session.pending():
                chunk = session.read(RECORD_PLAINTEXT_MAX)
                if not chunk:
                    ended = True  # the peer's close_notify
                    break
                if not data:
                    data = chunk
                elif chunks is None:
                    chunks = [data, chunk]
                else:
                    chunks.append(chunk)
        except _AGAIN:
            pass  # a record not whole yet (or a handshake message answered below)
        except (ssl.SSLError, OSError) as error:
            failure = error  # after the records read before it
        self._flush_outgoing()  # TLS 1.3's post-handshake messages
        if chunks is not None:
            data = b"".join(chunks)
        if data and self.phase == OPEN:
            try:
                self.protocol.data_received(data)
            except Exception as error:
                self._protocol_failed(error)
                return
        if failure is not None:
            self._fail(failure)
        elif ended:
            self._peer_ended()

    def _peer_ended(self) -> None:
        """The peer's close_notify or FIN: TLS has no half-close, so the connection ends."""
        self.peer_ended = True
        phase = self.phase
        if phase in (OPEN, SHUT):
            try:
                self.protocol.eof_received()
            except Exception as error:
                self._protocol_failed(error)
                return
            self.close()
        elif phase == HANDSHAKE:
            self._fail(ConnectionResetError("the client closed the connection in its handshake"))
        elif phase == CLOSING:
            if self.out:
                self.loop.remove_reader(self.fd)  # nothing more to read; the rest goes out
            else:
                self._finish()

    # -- the handshake ---------------------------------------------------------------------------

    def _handshake(self) -> None:
        try:
            self.session.do_handshake()
        except _AGAIN:
            self._flush_outgoing()
            return
        except (ssl.SSLError, OSError) as error:
            self._flush_outgoing()  # the alert that says why, if OpenSSL wrote one
            self._fail(error)
            return
        self._flush_outgoing()
        if self.phase != HANDSHAKE:
            return  # the send failed
        self.phase = OPEN
        self._stop_timer()
        try:
            self.protocol.connection_made(self)
        except Exception as error:
            self._protocol_failed(error)  # (fails `opened`: the listener releases the slot)
            return
        self.made = True
        if not self.opened.done():
            self.opened.set_result(None)
        if self.phase == OPEN and self.reading and self.incoming.pending:
            self._read_records()  # the request came with the client's Finished

    def _flush_outgoing(self) -> None:
        """What OpenSSL wrote besides a `write` (handshake messages, alerts, close_notify)."""
        if self.outgoing.pending:
            self._send(self.outgoing.read())

    def _handshake_expired(self) -> None:
        self.timer = None
        if self.phase == HANDSHAKE:
            self._fail(TimeoutError("the TLS handshake did not finish in time"))

    def _stop_timer(self) -> None:
        timer = self.timer
        if timer is not None:
            timer.cancel()
            self.timer = None

    # -- writing ---------------------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.phase != OPEN or not data:
            return  # closing: nothing more goes after our close_notify
        try:
            self.session.write(data)
        except (ssl.SSLError, OSError) as error:
            self._fail(error)
            return
        self._send(self.outgoing.read())

    def _send(self, data: bytes) -> None:
        """Encrypted bytes to the socket, what it does not take queued in order."""
        out = self.out
        if out:
            out += data
        else:
            try:
                sent = self.sock.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as error:
                self._lost_send(error)
                return
            if sent == len(data):
                return
            out += data[sent:]
            self.loop.add_writer(self.fd, self._writable)
        if not self.writing_paused and len(out) > self.high_water and self.phase == OPEN:
            self.writing_paused = True
            self.protocol.pause_writing()

    def _writable(self) -> None:
        out = self.out
        try:
            sent = self.sock.send(out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as error:
            self._lost_send(error)
            return
        del out[:sent]
        if not out:
            self.loop.remove_writer(self.fd)
            if self.phase == CLOSING:
                self._linger()
                return
            if self.phase == SHUT:
                self._shut_write()
        if self.writing_paused and len(out) <= self.low_water and self.phase == OPEN:
            self.writing_paused = False
            self.protocol.resume_writing()

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        """Our close_notify after what is queued, then the sending side shuts; the peer's end
        still reaches the protocol (`eof_received`), the rest it sends is dropped."""
        if self.phase != OPEN:
            return
        self.phase = SHUT
        if not self.reading:
            self.reading = True  # what the peer still sends is read and dropped from now on
            self.loop.add_reader(self.fd, self._readable)
        self._send_close_notify()
        if not self.out and self.phase == SHUT:
            self._shut_write()

    def _send_close_notify(self) -> None:
        # our close_notify is written; the peer's is not waited for (nginx does not either)
        with contextlib.suppress(ssl.SSLError, OSError):
            self.ssl_object.unwrap()
        self._flush_outgoing()

    def _shut_write(self) -> None:
        if not self.write_shut:
            self.write_shut = True
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_WR)

    def get_write_buffer_size(self) -> int:
        return len(self.out)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self.low_water, self.high_water

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if high is None:
            high = WRITE_HIGH_WATER if low is None else 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self.high_water, self.low_water = high, low

    # -- reading control -------------------------------------------------------------------------

    def pause_reading(self) -> None:
        if self.reading and self.phase == OPEN:
            self.reading = False
            self.loop.remove_reader(self.fd)

    def resume_reading(self) -> None:
        if self.reading or self.phase != OPEN:
            return
        self.reading = True
        self.loop.add_reader(self.fd, self._readable)
        if self.incoming.pending or self.session.pending():
            self.loop.call_soon(self._resume_records)  # what arrived before the pause

    def _resume_records(self) -> None:
        if (
            self.phase == OPEN
            and self.reading
            and (self.incoming.pending or self.session.pending())
        ):
            self._read_records()

    def is_reading(self) -> bool:
        return self.reading and self.phase == OPEN

    # -- closing ---------------------------------------------------------------------------------

    def is_closing(self) -> bool:
        return self.phase >= CLOSING

    def close(self) -> None:
        """Our close_notify after what is queued; the socket closes once they are sent and the
        peer closed too (both bounded: the module's docstring)."""
        phase = self.phase
        if phase >= CLOSING:
            return
        if phase == HANDSHAKE:
            self.abort()
            return
        self.phase = CLOSING
        if phase == OPEN:
            self._send_close_notify()
        if self.phase != CLOSING:
            return  # the send failed: closed
        if phase == SHUT and self.write_shut:
            self._finish()  # the protocol lingered already
            return
        if not self.reading and not self.peer_ended:
            self.reading = True  # what arrives until the end is read and dropped
            self.loop.add_reader(self.fd, self._readable)
        self._stop_timer()
        if self.out:
            self.timer = self.loop.call_later(self.closing_timeout, self._closing_expired)
        else:
            self._linger()

    def _closing_expired(self) -> None:
        self.timer = None
        if self.phase == CLOSING:
            self._fail(TimeoutError("the peer did not take the rest of the connection in time"))

    def _linger(self) -> None:
        """CLOSING with everything sent: the sending side shuts; the end is the peer's close,
        or LINGER_TIMEOUT."""
        if self.peer_ended:
            self._finish()
            return
        self._shut_write()
        self._stop_timer()
        self.timer = self.loop.call_later(LINGER_TIMEOUT, self._finish)

    def abort(self) -> None:
        self._finish()

    def _lost_send(self, error: Exception) -> None:
        """A send failed: the peer is gone. Once closing, that is how it ends, not an error."""
        if self.phase == CLOSING:
            self._finish()
        else:
            self._fail(error)

    def _protocol_failed(self, error: Exception) -> None:
        log.error("a TLS connection's protocol failed (%s): closed", self.peername, exc_info=error)
        self._fail(error)

    def _fail(self, error: Exception) -> None:
        if self.phase == CLOSED:
            return
        if self.error is None:
            self.error = error
        log.debug("TLS connection from %s ended: %s", self.peername, error)
        if not self.opened.done():
            self.opened.set_exception(error)
        self._finish()

    def _finish(self) -> None:
        """The socket closes now; the protocol hears of it on the loop's next turn."""
        phase = self.phase
        if phase == CLOSED:
            return
        self.phase = CLOSED
        self._stop_timer()
        loop = self.loop
        loop.remove_reader(self.fd)  # (both are no-ops when not registered)
        loop.remove_writer(self.fd)
        self.out.clear()
        self.sock.close()
        if not self.opened.done():
            self.opened.set_exception(ConnectionAbortedError("closed in its TLS handshake"))
        if self.made:
            loop.call_soon(self._connection_lost)

    def _connection_lost(self) -> None:
        """On the loop's turn after the close, to the protocol set by then (an upgrade may
        have handed the connection to a tunnel meanwhile)."""
        self.protocol.connection_lost(self.error)

    # -- the rest of a transport -----------------------------------------------------------------

    def get_extra_info(self, name: str, default: object = None) -> object:
        if name == "peername":
            return self.peername
        if name == "sockname":
            return self.sockname
        if name == "ssl_object":
            return self.ssl_object
        if name == "socket":
            return self.sock
        if name == "sslcontext":
            return self.ssl_object.context
        if name == "peercert":
            return self.ssl_object.getpeercert()
        if name == "cipher":
            return self.ssl_object.cipher()
        if name == "compression":
            return self.ssl_object.compression()
        return default

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = cast(asyncio.Protocol, protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self.protocol
