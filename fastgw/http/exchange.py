"""One request/response exchange: the plugin-facing context, request streaming and response framing.

The exchange streams the client's body to the upstream as it arrives and the upstream's response
back to the client, re-framing both; it buffers only while no upstream is attached yet.
"""

from __future__ import annotations

import asyncio
import errno
import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from fastgw.http import responses
from fastgw.http.headers import host_without_port
from fastgw.http.upstream import UpstreamConnection, UpstreamTarget
from fastgw.ratelog import RateLimitedLog

if TYPE_CHECKING:
    from fastgw.http.server import ServerConnection

log = logging.getLogger("fastgw.http")
_out_of_fds_log = RateLimitedLog(log, logging.ERROR)

BODY_NONE = 0
BODY_LENGTH = 1
BODY_CHUNKED = 2

# A request body waiting for its upstream is buffered up to this size, then the client is paused.
BODY_BUFFER_LIMIT = 64 * 1024
# A body the client keeps sending after the gateway answered it is read and dropped up to this
# size so the connection stays usable; past it the connection is closed.
DISCARD_LIMIT = 1024 * 1024

IDEMPOTENT_METHODS = frozenset((b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"))

NO_BODY_STATUSES = frozenset((204, 304))


class Exchange:
    """A request from the client, the plugin context for it, and the response going back."""

    # What every request reads lives in slots, the cheapest attribute access, set once in
    # __init__. What only bodies, local answers, async plugins and failures need is a class
    # default instead, written to the instance's __dict__ (made on first write) when it
    # changes: a plain request never pays for setting it.
    __slots__ = (
        "__dict__",
        "body_mode",
        "conn",
        "content_length",
        "expect_continue",
        "finished",
        "head_request",
        "headers",
        "host",
        "http_10",
        "keep_alive",
        "method",
        "path",
        "query",
        "request_complete",
        "responded",
        "response_chunked",
        "response_complete",
        "response_started",
        "target",
        "upstream",
        "upstream_host",
        "upstream_path",
        "upstream_read_paused",
        "x_forwarded_for",
    )

    body_buffered = 0
    body_chunks: list[bytes] | tuple[()] = ()
    body_limit = BODY_BUFFER_LIMIT
    body_received = 0
    body_waiter: asyncio.Future[None] | None = None
    continue_sent = False
    discarding = False
    local_body = b""
    local_headers: Sequence[tuple[bytes, bytes]] = ()
    local_status = 0
    pending: Awaitable[None] | None = None  # what an async handler returned
    response_close_delimited = False
    retried = False
    task: asyncio.Task[None] | None = None

    def __init__(
        self,
        conn: ServerConnection,
        method: bytes,
        path: bytes,
        query: bytes,
        host: bytes,
        headers: list[tuple[bytes, bytes]],
        keep_alive: bool,
    ) -> None:
        """A bodiless HTTP/1.1 request; `expect_body` and the framing fields say otherwise."""
        self.conn = conn
        self.method = method
        self.path = path
        self.upstream_path = path
        self.query = query
        self.host = host
        self.headers = headers
        self.keep_alive = keep_alive
        self.head_request = method == b"HEAD"
        self.http_10 = False
        self.body_mode = BODY_NONE
        self.request_complete = True
        self.content_length = -1  # -1 when absent; an explicit 0 is forwarded
        self.expect_continue = False
        self.x_forwarded_for: bytes | None = None
        self.responded = False
        self.target: UpstreamTarget | None = None
        self.upstream_host: bytes | None = None  # set by routing when the route preserves Host
        self.upstream: UpstreamConnection | None = None
        self.response_started = False
        self.response_complete = False
        self.response_chunked = False
        self.upstream_read_paused = False
        self.finished = False

    def expect_body(self, body_mode: int, expect_continue: bool) -> None:
        """A body follows the head (Content-Length or chunked); it streams in later."""
        self.body_mode = body_mode
        self.request_complete = False
        self.body_chunks = []
        self.expect_continue = expect_continue

    @property
    def client_ip(self) -> str:
        return self.conn.client_ip

    # -- the plugin context (fastgw.pipeline.RequestContext) -------------------------------------

    def get_header(self, name: bytes) -> bytes | None:
        for header_name, value in self.headers:
            if header_name == name:
                return value
        return None

    def set_header(self, name: bytes, value: bytes) -> None:
        headers = self.headers
        index = 0
        for header in headers:
            if header[0] == name:
                break
            index += 1
        else:
            headers.append((name, value))
            return
        headers[index] = (name, value)
        for later in range(index + 1, len(headers)):
            if headers[later][0] == name:
                # a repeated header: one value replaces them all (rare, so rebuilt)
                self.headers = headers[: index + 1] + [
                    header for header in headers[index + 1 :] if header[0] != name
                ]
                return

    def remove_header(self, name: bytes) -> None:
        self.headers = [header for header in self.headers if header[0] != name]

    def set_query(self, query: bytes) -> None:
        self.query = query

    def has_body(self) -> bool:
        return self.body_mode != BODY_NONE

    async def read_body(self, limit: int) -> bytes | None:
        if self.body_mode == BODY_NONE:
            return b""
        if self.body_mode == BODY_LENGTH and self.content_length > limit:
            return None
        self.body_limit = max(limit, BODY_BUFFER_LIMIT)
        if not self.request_complete and self.body_buffered <= limit:
            self._send_continue()
            self.body_waiter = asyncio.get_running_loop().create_future()
            self.conn.resume_for_buffer()
            try:
                await self.body_waiter
            finally:
                self.body_waiter = None
        if self.body_buffered > limit:
            return None
        return b"".join(self.body_chunks)

    def replace_body(self, body: bytes) -> None:
        if not self.request_complete:
            raise RuntimeError("replace_body needs the whole body: call read_body first")
        self.body_chunks = [body]
        self.body_buffered = len(body)
        self.body_mode = BODY_LENGTH
        self.content_length = len(body)

    def respond(
        self, status: int, body: bytes, headers: Sequence[tuple[bytes, bytes]] = ()
    ) -> None:
        self.responded = True
        self.target = None
        self.local_status = status
        self.local_body = body
        self.local_headers = list(headers)

    # -- running the handler ---------------------------------------------------------------------

    def begin(self) -> None:
        """Called when this exchange becomes the connection's active one."""
        try:
            pending = self.conn.handler(self)
        except Exception:
            log.exception("request handler failed")
            self.respond_error(500)
            return
        if pending is None:
            self._after_handler()
        else:
            self.pending = pending
            self.task = asyncio.ensure_future(self._await_handler(pending))

    async def _await_handler(self, pending: Awaitable[None]) -> None:
        try:
            await pending
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("request handler failed")
            if not self.finished:
                self.respond_error(500)
            return
        if not self.finished:
            self._after_handler()

    def _after_handler(self) -> None:
        if self.responded:
            self._write_local_response()
            return
        target = self.target
        if target is None:
            self.respond_error(500)
            return
        if self.expect_continue:
            self._send_continue()
        upstream = target.pool.acquire()
        if upstream is not None:
            self._send_to(upstream)
        else:
            self.task = asyncio.ensure_future(self._connect())

    def _send_continue(self) -> None:
        if self.expect_continue and not self.continue_sent and not self.request_complete:
            self.continue_sent = True
            self.conn.write(responses.CONTINUE_100)

    async def _connect(self) -> None:
        target = self.target
        assert target is not None
        status = 502
        for _ in range(target.retries + 1):
            try:
                conn = await target.pool.connect(target.connect_timeout)
            except TimeoutError:
                status = 504
                continue
            except OSError as error:
                status = 502
                if error.errno in (errno.EMFILE, errno.ENFILE):
                    _out_of_fds_log.emit(
                        "cannot connect to an upstream: out of file descriptors (%s); "
                        "answering 502",
                        error.strerror,
                    )
                continue
            if self.finished:
                target.pool.release(conn)
                return
            self._send_to(conn)
            return
        if not self.finished:
            self.upstream_failed(status)

    # -- the request, towards the upstream -------------------------------------------------------

    def _send_to(self, upstream: UpstreamConnection) -> None:
        self.upstream = upstream
        target = self.target
        assert target is not None
        conn = self.conn
        parts = [self.method, b" ", self.upstream_path]
        if self.query:
            parts += (b"?", self.query)
        if self.upstream_host is None:
            parts.append(target.version_and_host)
        else:
            parts += (b" HTTP/1.1\r\nhost: ", self.upstream_host, b"\r\n")
        for name, value in self.headers:
            parts += (name, b": ", value, b"\r\n")
        if self.x_forwarded_for is None:
            parts.append(b"x-forwarded-for: ")
        else:
            parts += (b"x-forwarded-for: ", self.x_forwarded_for, b", ")
        # the client's address and the other X-Forwarded-* lines, prebuilt per connection
        host = self.host
        if host == conn.valid_host:
            parts.append(conn.forwarded_tail)
        elif host:
            parts += (conn.forwarded_lines, b"x-forwarded-host: ", host_without_port(host), b"\r\n")
        else:
            parts.append(conn.forwarded_lines)
        if self.body_mode == BODY_NONE and self.content_length != 0:
            parts.append(b"\r\n")
        else:
            self._body_framing(parts)
        upstream.send(self, b"".join(parts), target.read_timeout)
        if conn.read_paused:
            conn.resume_for_buffer()
        if conn.write_paused:
            # The client stopped reading during an earlier (pipelined) answer and has not
            # caught up: no pause_writing will come, so hold this upstream back from the start.
            self.client_write_paused()

    def _body_framing(self, parts: list[bytes]) -> None:
        """The end of the request head for a body, and the body received so far."""
        body_mode = self.body_mode
        if body_mode == BODY_NONE:
            # an explicit "content-length: 0" (e.g. an empty POST) is kept: some need it
            parts.append(b"content-length: 0\r\n\r\n")
            return
        if body_mode == BODY_LENGTH:
            parts.append(b"content-length: %d\r\n\r\n" % self.content_length)
            parts += self.body_chunks
        else:
            parts.append(b"transfer-encoding: chunked\r\n\r\n")
            for chunk in self.body_chunks:
                parts += (b"%x\r\n" % len(chunk), chunk, b"\r\n")
            if self.request_complete:
                parts.append(b"0\r\n\r\n")
        self.body_chunks = []

    def on_request_body(self, chunk: bytes) -> None:
        self.body_received += len(chunk)
        if self.discarding:
            if self.body_received > DISCARD_LIMIT:
                # The answer is out; reading the rest of a large body is not worth it.
                self.keep_alive = False
                self.conn.close_after_response()
                if self.response_complete:
                    self._done()
            return
        upstream = self.upstream
        if upstream is not None and upstream.transport is not None:
            if self.body_mode == BODY_CHUNKED:
                upstream.transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
            else:
                upstream.transport.write(chunk)
            return
        self.body_chunks.append(chunk)
        self.body_buffered += len(chunk)
        if self.body_buffered > self.body_limit:
            waiter = self.body_waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
            self.conn.pause_for_buffer()

    def on_request_complete(self) -> None:
        self.request_complete = True
        waiter = self.body_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        upstream = self.upstream
        if upstream is not None and self.body_mode == BODY_CHUNKED and upstream.transport:
            upstream.transport.write(b"0\r\n\r\n")
        if self.response_complete:
            self._done()

    # -- flow control ----------------------------------------------------------------------------

    def upstream_write_paused(self) -> None:
        self.conn.pause_for_upstream()

    def upstream_write_resumed(self) -> None:
        self.conn.resume_for_upstream()

    def client_write_paused(self) -> None:
        upstream = self.upstream
        if upstream is not None and not self.upstream_read_paused and upstream.transport:
            self.upstream_read_paused = True
            upstream.transport.pause_reading()

    def client_write_resumed(self) -> None:
        upstream = self.upstream
        if self.upstream_read_paused:
            self.upstream_read_paused = False
            if upstream is not None and upstream.transport and not upstream.closed:
                upstream.transport.resume_reading()

    # -- the response, towards the client --------------------------------------------------------

    def upstream_head(
        self,
        status: int,
        head: list[bytes],
        content_length: bytes | None,
        upstream_chunked: bool,
    ) -> Callable[[bytes], object]:
        """Write the client's response head; returns where the body's bytes go.

        `head` holds the upstream's end-to-end header lines as pieces, ready to write.
        """
        out = self.conn.out
        out.append(responses.STATUS_LINES.get(status) or responses.status_line(status))
        out += head
        if not self.request_complete:
            # Answered before the whole body arrived: the rest of the body will most likely
            # be cut off (see upstream_complete), so say now that the connection ends.
            self.keep_alive = False
        sink = out.append
        if self.head_request or status in NO_BODY_STATUSES:
            if content_length is not None and status != 204:
                out += (b"content-length: ", content_length, b"\r\n")
        elif content_length is not None:
            out += (b"content-length: ", content_length, b"\r\n")
        else:
            self.response_close_delimited = not upstream_chunked
            if self.http_10:
                self.keep_alive = False
            else:
                self.response_chunked = True
                out.append(b"transfer-encoding: chunked\r\n")
                sink = self._write_chunk
        if not self.keep_alive:
            out.append(b"connection: close\r\n\r\n")
        elif self.http_10:
            out.append(b"connection: keep-alive\r\n\r\n")
        else:
            out.append(b"\r\n")
        self.response_started = True
        return sink

    def _write_chunk(self, body: bytes) -> None:
        if body:  # an empty chunk would end the body
            self.conn.out += (b"%x\r\n" % len(body), body, b"\r\n")

    def upstream_complete(self, upstream: UpstreamConnection, reusable: bool) -> None:
        conn = self.conn
        if self.response_chunked:
            conn.out.append(b"0\r\n\r\n")
        self.response_complete = True
        self.upstream = None
        if self.upstream_read_paused:
            self.upstream_read_paused = False
            if upstream.transport is not None and not upstream.closed:
                upstream.transport.resume_reading()
        if self.request_complete:
            if reusable:
                upstream.pool.release(upstream)
            else:
                upstream.close()
        else:
            # The upstream answered before the whole body arrived; the rest cannot be framed
            # for another request: it is read and dropped, then the connection closes.
            upstream.close()
            self.keep_alive = False
            self.discarding = True
            conn.close_after_response()
        if conn.read_paused:
            # A write-buffer pause of this upstream must not outlive the exchange (it may never
            # be lifted once the connection is pooled or closed).
            conn.resume_for_upstream()
        self.finished = True
        conn.exchange_done(self)  # flushes the response

    def upstream_lost(self, upstream: UpstreamConnection) -> None:
        """The upstream closed or reset the connection while this exchange used it."""
        self.upstream = None
        if self.finished:
            return
        if self.response_started:
            if self.response_close_delimited:
                self.upstream_complete(upstream, False)
            else:
                self.conn.abort()  # a truncated response must not look complete
            return
        if (
            not self.retried
            and upstream.requests > 1
            and not upstream.got_response_bytes
            and self.body_mode == BODY_NONE
            and self.method in IDEMPOTENT_METHODS
        ):
            # A pooled connection the upstream had already closed: retry once on a fresh one.
            self.retried = True
            self.task = asyncio.ensure_future(self._connect())
            return
        self.upstream_failed(502)

    def upstream_failed(self, status: int) -> None:
        """The upstream timed out (504) or misbehaved (502)."""
        upstream = self.upstream
        self.upstream = None
        if upstream is not None:
            upstream.abort()
        if self.finished:
            return
        if self.response_started:
            self.conn.flush()
            self.conn.abort()
            return
        self.conn.out.clear()
        self.respond_error(status)

    # -- local answers ---------------------------------------------------------------------------

    def respond_error(self, status: int, message: str | None = None) -> None:
        body, headers = responses.error_parts(status, message)
        self.respond(status, body, headers)
        self._write_local_response()

    def _write_local_response(self) -> None:
        headers = self.local_headers
        if not self.request_complete:
            if self.expect_continue and not self.continue_sent:
                # The client has not sent its body and may never: do not wait for it.
                self.keep_alive = False
            else:
                self.discarding = True
        self.conn.write(
            responses.build_response(
                self.local_status,
                self.local_body,
                headers,
                keep_alive=self.keep_alive,
                head_only=self.head_request,
                http_10=self.http_10,
            )
        )
        self.response_started = True
        self.response_complete = True
        if self.request_complete or not self.keep_alive:
            self._done()

    def _done(self) -> None:
        if not self.finished:
            self.finished = True
            self.conn.exchange_done(self)

    def abort(self) -> None:
        """The client went away: release everything without reusing the upstream connection."""
        self.finished = True
        waiter = self.body_waiter
        if waiter is not None and not waiter.done():
            waiter.cancel()
        if self.task is not None and not self.task.done():
            self.task.cancel()
            pending = self.pending
            if inspect.iscoroutine(pending) and (
                inspect.getcoroutinestate(pending) == inspect.CORO_CREATED
            ):
                pending.close()  # cancelled before it ran: not "never awaited"
        upstream = self.upstream
        self.upstream = None
        if upstream is not None:
            upstream.abort()
