"""One request/response exchange: the plugin-facing context, request streaming and response framing.

The exchange streams the client's body to the upstream as it arrives and the upstream's response
back to the client, re-framing both; it buffers only while no upstream is attached yet. It knows
its client only as a `ClientSide` (the connection one layer up implements it) and is itself the
`ResponseSink` its upstream connection feeds.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from time import monotonic
from typing import Final

from mypy_extensions import trait

from fastgw.balancer.balancer import NO_PEER_MESSAGE, Balancer
from fastgw.balancer.health import TCP_FAILURE, TIMEOUT
from fastgw.balancer.retry import GIVE_UP, RESEND_STALE, after_lost, may_retry_connect
from fastgw.http.flow import EXCHANGE_PAUSES, PAUSE_BUFFER, PAUSE_UPSTREAM, FlowControl
from fastgw.http.response_head import ForwardedHead
from fastgw.http.responses import (
    CONTINUE_100,
    STATUS_LINES,
    build_response,
    error_parts,
    status_line,
)
from fastgw.http.upstream import ResponseSink, UpstreamConnection
from fastgw.http.vocabulary import NO_BODY_STATUSES
from fastgw.proxy.targets import ConnectFailed, UpstreamTarget

log = logging.getLogger("fastgw.http")

BODY_NONE: Final = 0
BODY_LENGTH: Final = 1
BODY_CHUNKED: Final = 2

# A request body waiting for its upstream is buffered up to this size, then the client is paused.
BODY_BUFFER_LIMIT: Final = 64 * 1024
# A body the client keeps sending after the gateway answered it is read and dropped up to this
# size so the connection stays usable; past it the connection is closed.
DISCARD_LIMIT: Final = 1024 * 1024

# The exchange's phase: where its response is. The request body streams on independently of it
# (`request_complete`); the exchange is finished once both are done, or once it gave up on the
# rest of the request.
HANDLING: Final = 0  # the handler (routing, plugins) runs
CONNECTING: Final = 1  # waiting for an upstream connection
WAITING: Final = 2  # the request went upstream; no response head yet
STREAMING: Final = 3  # the response head went to the client; its body follows
TUNNEL: Final = 4  # the upstream switched protocols (101): bytes both ways until either closes
COMPLETE: Final = 5  # the whole response is out; the rest of the request body is read and dropped
FINISHED: Final = 6  # handed back to the connection (or aborted): nothing more happens

_CHUNK_END: Final = b"\r\n"
_LAST_CHUNK: Final = b"0\r\n\r\n"
# What a WebSocket upgrade offers upstream (Kong's upstream_connection / upstream_upgrade), and
# the fields a 101 going to the client must carry besides the upstream's end-to-end ones.
_OFFER_UPGRADE: Final = b"connection: keep-alive, Upgrade\r\nupgrade: websocket\r\n"
_SWITCHED: Final = b"HTTP/1.1 101 Switching Protocols\r\n"
_SWITCHED_FIELDS: Final = b"connection: upgrade\r\nupgrade: websocket\r\n\r\n"

Handler = Callable[["Exchange"], Awaitable[None] | None]


@trait
class CompletionHook:
    """Told once when an exchange is over: its response is out in full, or it was aborted.

    The handler attaches one (`Exchange.hook`) to the exchanges that need it; an exchange
    without one pays nothing, not even the clock reads of its timings.
    """

    __slots__ = ()

    def exchange_complete(self, exchange: Exchange) -> None:
        raise NotImplementedError


@trait
class ClientSide:
    """What an exchange needs of its client connection."""

    __slots__ = ()

    flow: FlowControl
    client_ip: str
    server_name: bytes | None  # the SNI of a TLS connection (b"" when none); None without TLS

    def write(self, data: bytes) -> None:
        """Queue response bytes; they go out with the next flush, in one write."""
        raise NotImplementedError

    def flush(self) -> None:
        raise NotImplementedError

    def forwarded_fields(self, host: bytes) -> bytes:
        """The client's address ending X-Forwarded-For, then the other X-Forwarded-* lines."""
        raise NotImplementedError

    def connection_memo(self) -> dict[object, object]:
        """Per-connection values plugins keep between a connection's requests."""
        raise NotImplementedError

    def exchange_done(self, exchange: Exchange) -> None:
        """The exchange answered in full (its bytes are queued): on to the next one."""
        raise NotImplementedError

    def abort(self) -> None:
        """Drop the connection at once (a response that cannot be completed)."""
        raise NotImplementedError

    def start_tunnel(self, exchange: Exchange) -> None:
        """The exchange switched protocols and its request is complete: relay raw bytes to it."""
        raise NotImplementedError

    def end_tunnel(self) -> None:
        """The tunnel's upstream side ended: send what is queued, then close."""
        raise NotImplementedError


class Exchange(ResponseSink):
    """A request from the client, the plugin context for it, and the response going back."""

    # What every request reads lives in slots, the cheapest attribute access in pure Python, set
    # once in __init__. What only bodies, local answers, async plugins and failures need is a
    # class default instead, written to the instance's __dict__ (made on first write) when it
    # changes: a plain request never pays for setting it.
    __slots__ = (
        "__dict__",
        "body_mode",
        "client",
        "content_length",
        "expect_continue",
        "head_request",
        "headers",
        "host",
        "http_10",
        "keep_alive",
        "method",
        "path",
        "phase",
        "query",
        "request_complete",
        "responded",
        "response_chunked",
        "target",
        "upstream",
        "upstream_host",
        "upstream_path",
        "x_forwarded_for",
    )

    body_buffered = 0
    body_chunks: list[bytes] = []  # never appended to: expect_body gives a body its own list
    body_limit = BODY_BUFFER_LIMIT
    body_received = 0
    body_waiter: asyncio.Future[None] | None = None
    # Set by routing for a service balanced over a Kong upstream: a target is picked per try.
    balancer: Balancer | None = None
    # Who plugins authenticated (Kong's consumer, else the credential): consistent hashing's key.
    consumer_id = b""
    continue_sent = False
    local_body = b""
    local_headers: Sequence[tuple[bytes, bytes]] = ()
    local_status = 0
    pending: Awaitable[None] | None = None  # what an async handler returned
    resent = False  # sent again on a fresh connection after a stale pooled one (retry.py)
    response_close_delimited = False
    tried: tuple[UpstreamTarget, ...] = ()  # targets that failed this request
    tries = 0  # attempts counted against the service's retries
    upgrade = False  # a WebSocket upgrade request: offered upstream, a 101 makes a tunnel
    upstream_held = False  # the upstream's reading is paused for a slow client
    task: asyncio.Future[None] | None = None
    # Completion facts, kept only for an exchange with a hook (time.monotonic() seconds; 0.0 is
    # "not reached"): when the handler began, when the request went upstream if that was not
    # at once, when the upstream's response head came, when the exchange ended.
    hook: CompletionHook | None = None
    started_at = 0.0
    sent_at = 0.0
    response_at = 0.0
    finished_at = 0.0
    request_size = 0  # the head as parsed, set by the handler; the body adds body_received
    status = 0  # the upstream's status (local answers: local_status)
    response_size = 0  # bytes written to the client: head, body, chunk framing
    response_fields = b""  # the upstream's response header lines as forwarded

    def __init__(
        self,
        client: ClientSide,
        method: bytes,
        path: bytes,
        query: bytes,
        host: bytes,
        headers: list[tuple[bytes, bytes]],
        keep_alive: bool,
    ) -> None:
        """A bodiless HTTP/1.1 request; `expect_body` and the framing fields say otherwise."""
        self.client = client
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
        self.phase = HANDLING
        self.responded = False
        self.target: UpstreamTarget | None = None
        self.upstream_host: bytes | None = None  # set by routing when the route preserves Host
        self.upstream: UpstreamConnection | None = None
        self.response_chunked = False

    def expect_body(self, body_mode: int, expect_continue: bool) -> None:
        """A body follows the head (Content-Length or chunked); it streams in later."""
        self.body_mode = body_mode
        self.request_complete = False
        self.body_chunks = []
        self.expect_continue = expect_continue

    @property
    def response_started(self) -> bool:
        return self.phase >= STREAMING

    @property
    def finished(self) -> bool:
        return self.phase == FINISHED

    @property
    def answered(self) -> bool:
        """The whole response is out (what still arrives of the request body is dropped)."""
        return self.phase >= COMPLETE

    # -- the plugin context (fastgw.plugins.api.RequestContext) ---------------------------------

    @property
    def client_ip(self) -> str:
        return self.client.client_ip

    @property
    def connection_memo(self) -> dict[object, object]:
        return self.client.connection_memo()

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
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self.body_waiter = waiter
            self.client.flow.resume_reading(PAUSE_BUFFER)
            try:
                await waiter
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

    def begin(self, handler: Handler) -> None:
        """Called when this exchange becomes the connection's active one."""
        try:
            pending = handler(self)
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
            if self.phase != FINISHED:
                self.respond_error(500)
            return
        if self.phase != FINISHED:
            if self.hook is not None:
                self.sent_at = monotonic()
            self._after_handler()

    def _after_handler(self) -> None:
        if self.responded:
            self._write_local_response()
            return
        balancer = self.balancer
        if balancer is not None:
            target = balancer.pick(self)
            if target is None:
                self.respond_error(503, NO_PEER_MESSAGE)
                return
            self.target = target
        else:
            target = self.target
            if target is None:
                self.respond_error(500)
                return
        if self.expect_continue:
            self._send_continue()
        upstream = target.pool.acquire()
        if upstream is not None:
            self.tries = 1
            self._send_to(upstream, target)
        else:
            self.phase = CONNECTING
            self.task = asyncio.ensure_future(self._connect(target, True))

    def _send_continue(self) -> None:
        if self.expect_continue and not self.continue_sent and not self.request_complete:
            self.continue_sent = True
            self.client.write(CONTINUE_100)
            self.client.flush()

    async def _connect(self, target: UpstreamTarget, counted: bool) -> None:
        """Connect and send; a failed connection is tried again as the retry policy allows, on
        another target where the service's upstream has one. `counted`: the attempt counts
        against the service's retries (a stale pooled connection's resend does not)."""
        while True:
            if counted:
                self.tries += 1
            counted = True
            try:
                upstream = await target.connect()
            except ConnectFailed as failure:
                if self.phase == FINISHED:
                    return
                if not may_retry_connect(self.tries, target.retries):
                    self.respond_error(failure.status)
                    return
                next_target = self._next_target(target)
                if next_target is None:
                    self.respond_error(503, NO_PEER_MESSAGE)
                    return
                target = next_target
                continue
            if self.phase == FINISHED:
                target.pool.release(upstream)
                return
            if self.hook is not None:
                self.sent_at = monotonic()
            self._send_to(upstream, target)
            return

    def _next_target(self, failed: UpstreamTarget) -> UpstreamTarget | None:
        """Where a retry goes: another target of the upstream if it has one, else the same."""
        balancer = self.balancer
        if balancer is None:
            return failed
        self.tried = (*self.tried, failed)
        target = balancer.pick(self, self.tried)
        if target is not None:
            self.target = target
        return target

    def _retry(self, target: UpstreamTarget, counted: bool) -> None:
        self.phase = CONNECTING
        self.task = asyncio.ensure_future(self._connect(target, counted))

    # -- the request, towards the upstream -------------------------------------------------------

    def _send_to(self, upstream: UpstreamConnection, target: UpstreamTarget) -> None:
        self.upstream = upstream
        self.phase = WAITING
        client = self.client
        parts = [self.method, b" ", self.upstream_path]
        if self.query:
            parts.append(b"?")
            parts.append(self.query)
        if self.upstream_host is None:
            parts.append(target.version_and_host)
        else:
            parts.append(b" HTTP/1.1\r\nhost: ")
            parts.append(self.upstream_host)
            parts.append(b"\r\n")
        for name, value in self.headers:
            parts.append(name)
            parts.append(b": ")
            parts.append(value)
            parts.append(b"\r\n")
        if self.upgrade:
            parts.append(_OFFER_UPGRADE)
        if self.x_forwarded_for is None:
            parts.append(b"x-forwarded-for: ")
        else:
            parts.append(b"x-forwarded-for: ")
            parts.append(self.x_forwarded_for)
            parts.append(b", ")
        parts.append(client.forwarded_fields(self.host))
        if self.body_mode == BODY_NONE and self.content_length != 0:
            parts.append(b"\r\n")
        else:
            self._body_framing(parts)
        upstream.send(
            self,
            b"".join(parts),
            target.read_timeout,
            target.write_timeout,
            self.head_request,
            self.upgrade,
        )
        flow = client.flow
        if flow.read_paused:
            flow.resume_reading(PAUSE_BUFFER)
        if flow.write_paused:
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
                parts += (b"%x\r\n" % len(chunk), chunk, _CHUNK_END)
            if self.request_complete:
                parts.append(_LAST_CHUNK)
        self.body_chunks = []

    def on_request_body(self, chunk: bytes) -> None:
        self.body_received += len(chunk)
        phase = self.phase
        if phase >= COMPLETE:
            if phase == COMPLETE and self.body_received > DISCARD_LIMIT:
                # The answer is out; reading the rest of a large body is not worth it.
                self.keep_alive = False
                self._finish()
            return
        upstream = self.upstream
        if upstream is not None:
            if self.body_mode == BODY_CHUNKED:
                upstream.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
            else:
                upstream.write(chunk)
            return
        self.body_chunks.append(chunk)
        self.body_buffered += len(chunk)
        if self.body_buffered > self.body_limit:
            waiter = self.body_waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
            self.client.flow.pause_reading(PAUSE_BUFFER)

    def on_request_complete(self) -> None:
        self.request_complete = True
        waiter = self.body_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        upstream = self.upstream
        if upstream is not None and self.body_mode == BODY_CHUNKED:
            upstream.write(_LAST_CHUNK)
        phase = self.phase
        if phase == COMPLETE:
            self._finish()
        elif phase == TUNNEL:
            self.client.start_tunnel(self)  # the upstream switched before the body was in

    # -- flow control ----------------------------------------------------------------------------

    def upstream_write_paused(self) -> None:
        self.client.flow.pause_reading(PAUSE_UPSTREAM)

    def upstream_write_resumed(self) -> None:
        self.client.flow.resume_reading(PAUSE_UPSTREAM)

    def client_write_paused(self) -> None:
        upstream = self.upstream
        if upstream is not None and not self.upstream_held:
            self.upstream_held = True
            upstream.hold()

    def client_write_resumed(self) -> None:
        if self.upstream_held:
            self.upstream_held = False
            upstream = self.upstream
            if upstream is not None:
                upstream.release_hold()

    # -- the response, towards the client (ResponseSink) -----------------------------------------

    def response_head(self, status: int, head: ForwardedHead) -> None:
        """Write the client's response head from the upstream's."""
        target = self.target
        if target is not None and target.passive is not None:
            target.report_status(status)
        parts = [STATUS_LINES.get(status) or status_line(status), head.fields]
        if not self.request_complete:
            # Answered before the whole body arrived: the rest of the body will most likely
            # be cut off (see response_complete), so say now that the connection ends.
            self.keep_alive = False
        content_length = head.content_length
        if self.head_request or status in NO_BODY_STATUSES:
            if content_length is not None and status != 204:
                parts += (b"content-length: ", content_length, b"\r\n")
        elif content_length is not None:
            parts += (b"content-length: ", content_length, b"\r\n")
        else:
            self.response_close_delimited = not head.chunked
            if self.http_10:
                self.keep_alive = False
            else:
                self.response_chunked = True
                parts.append(b"transfer-encoding: chunked\r\n")
        if not self.keep_alive:
            parts.append(b"connection: close\r\n\r\n")
        elif self.http_10:
            parts.append(b"connection: keep-alive\r\n\r\n")
        else:
            parts.append(b"\r\n")
        self.phase = STREAMING
        data = b"".join(parts)
        if self.hook is not None:
            self.response_at = monotonic()
            self.status = status
            self.response_size = len(data)
            self.response_fields = head.fields
        self.client.write(data)

    def response_body(self, data: bytes) -> None:
        client = self.client
        if not self.response_chunked:
            client.write(data)
            if self.hook is not None:
                self.response_size += len(data)
        elif data:  # an empty chunk would end the body
            size_line = b"%x\r\n" % len(data)
            client.write(size_line)
            client.write(data)
            client.write(_CHUNK_END)
            if self.hook is not None:
                self.response_size += len(size_line) + len(data) + 2

    def response_read(self) -> None:
        self.client.flush()

    # -- a tunnel, after the upstream's 101 -------------------------------------------------------

    def response_switching(self, head: ForwardedHead) -> None:
        """The upstream took the Upgrade: the 101 goes out, then bytes flow unparsed. The
        client's bytes join the tunnel once its request (body included) is complete."""
        target = self.target
        if target is not None and target.passive is not None:
            target.report_status(101)
        self.phase = TUNNEL
        self.keep_alive = False
        if self.hook is not None:
            # the log phase sees the handshake (as Kong logs a WebSocket upgrade): 101
            self.response_at = monotonic()
            self.status = 101
            self._complete()
        client = self.client
        client.write(b"".join((_SWITCHED, head.fields, _SWITCHED_FIELDS)))
        client.flush()
        if self.request_complete:
            client.start_tunnel(self)

    def tunnel_data(self, data: bytes) -> None:
        self.client.write(data)
        self.client.flush()

    def tunnel_from_client(self, data: bytes) -> None:
        upstream = self.upstream
        if upstream is not None:
            upstream.write(data)

    def end_tunnel(self) -> None:
        """The client side ended (closed or lost): the upstream gets what is buffered first."""
        self.phase = FINISHED
        upstream = self.upstream
        self.upstream = None
        if upstream is not None:
            upstream.close_tunnel()

    def response_complete(self, upstream: UpstreamConnection, reusable: bool) -> None:
        if self.response_chunked:
            self.client.write(_LAST_CHUNK)
            if self.hook is not None:
                self.response_size += len(_LAST_CHUNK)
        self.upstream = None
        self.upstream_held = False
        if self.request_complete:
            if reusable:
                upstream.pool.release(upstream)
            else:
                upstream.close()
        else:
            # The upstream answered before the whole body arrived; the rest cannot be framed
            # for another request: the connection ends (its head said so).
            upstream.close()
            self.keep_alive = False
        self._finish()

    def upstream_lost(self, upstream: UpstreamConnection) -> None:
        self.upstream = None
        phase = self.phase
        if phase == FINISHED:
            return
        if phase == TUNNEL:
            self.phase = FINISHED
            self.client.end_tunnel()
            return
        if phase == STREAMING:
            if self.response_close_delimited:
                self.response_complete(upstream, False)
            else:
                self.client.abort()  # a truncated response must not look complete
            return
        target = self.target
        assert target is not None  # phase WAITING: sent to it
        reused = upstream.requests > 1
        decision = after_lost(
            self.method,
            self.body_mode != BODY_NONE,
            reused,
            upstream.got_response_bytes,
            self.resent,
            self.tries,
            target.retries,
        )
        if decision == RESEND_STALE:
            self.resent = True
            self._retry(target, False)
            return
        if not reused:
            target.report(TCP_FAILURE)  # closed on a fresh connection: the target's doing
        if decision == GIVE_UP:
            self.respond_error(502)
            return
        next_target = self._next_target(target)
        if next_target is None:
            self.respond_error(503, NO_PEER_MESSAGE)
            return
        self._retry(next_target, True)

    def upstream_failed(self, status: int) -> None:
        upstream = self.upstream
        self.upstream = None
        if upstream is not None:
            upstream.abort()
        phase = self.phase
        if phase >= COMPLETE:
            return
        target = self.target
        if target is not None and target.passive is not None:
            target.report(TIMEOUT if status == 504 else TCP_FAILURE)
        if phase in (STREAMING, TUNNEL):
            self.phase = FINISHED if phase == TUNNEL else phase
            self.client.flush()
            self.client.abort()
            return
        self.respond_error(status)

    # -- local answers ---------------------------------------------------------------------------

    def respond_error(self, status: int, message: str | None = None) -> None:
        body, headers = error_parts(status, message)
        self.respond(status, body, headers)
        self._write_local_response()

    def _write_local_response(self) -> None:
        if not self.request_complete and not self._may_discard():
            self.keep_alive = False
        data = build_response(
            self.local_status,
            self.local_body,
            self.local_headers,
            keep_alive=self.keep_alive,
            head_only=self.head_request,
            http_10=self.http_10,
        )
        if self.hook is not None:
            self.response_size = len(data)
        self.client.write(data)
        self._finish()

    def _may_discard(self) -> bool:
        """Whether the rest of an unread request body is worth reading to keep the connection."""
        if self.expect_continue and not self.continue_sent:
            return False  # the client has not sent its body and may never: do not wait for it
        if self.body_mode == BODY_LENGTH:
            return self.content_length - self.body_received <= DISCARD_LIMIT
        # chunked: the rest has no known size; it is dropped as it arrives, and past
        # DISCARD_LIMIT the connection ends (on_request_body), as any server may end one
        return self.body_received <= DISCARD_LIMIT

    def _finish(self) -> None:
        """The response is out: done now, or once the rest of the request body is dropped."""
        if self.phase < COMPLETE and self.hook is not None:
            self.phase = COMPLETE
            self._complete()
        self.phase = COMPLETE
        client = self.client
        # An exchange's pauses must not outlive its response (nobody would lift them later);
        # what is left of the body is read and dropped.
        client.flow.resume_reading(EXCHANGE_PAUSES)
        if self.request_complete or not self.keep_alive:
            self.phase = FINISHED
            client.exchange_done(self)

    def _complete(self) -> None:
        hook = self.hook
        if hook is not None:
            self.hook = None  # told once
            try:
                hook.exchange_complete(self)
            except Exception:
                log.exception("completion hook failed")

    @property
    def response_status(self) -> int:
        """The status the client got: the local answer's, the upstream's, or 499 (nginx's
        "client closed request") for an exchange aborted before any answer."""
        if self.responded:
            return self.local_status
        return self.status or 499

    def abort(self) -> None:
        """The client went away: release everything without reusing the upstream connection."""
        if self.phase == TUNNEL:
            self.end_tunnel()
            return
        if self.phase < COMPLETE and self.hook is not None:
            self.phase = FINISHED
            self._complete()
        self.phase = FINISHED
        waiter = self.body_waiter
        if waiter is not None and not waiter.done():
            waiter.cancel()
        task = self.task
        if task is not None and not task.done():
            task.cancel()
            pending = self.pending
            if inspect.iscoroutine(pending) and (
                inspect.getcoroutinestate(pending) == inspect.CORO_CREATED
            ):
                pending.close()  # cancelled before it ran: not "never awaited"
        upstream = self.upstream
        self.upstream = None
        if upstream is not None:
            upstream.abort()
