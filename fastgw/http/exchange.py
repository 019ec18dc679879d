"""One request/response exchange: running the handler, request streaming, response framing.

The exchange streams the client's body to the upstream as it arrives and the upstream's response
back to the client, re-framing both; it buffers only while no upstream is attached yet. It knows
its client only as a `ClientSide` (the connection one layer up implements it), is itself the
`ResponseSink` its upstream connection feeds, and asks its `Forwarding` (declared here)
whatever the proxy decides: where a request goes when the handler did not say, what follows a
failed attempt. Its phases and their moves are one table (_PHASE_MOVES).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from time import monotonic
from typing import Final

from mypy_extensions import trait

from fastgw.http.flow import EXCHANGE_PAUSES, PAUSE_BUFFER, PAUSE_UPSTREAM, FlowControl
from fastgw.http.hop import ConnectFailed, Hop
from fastgw.http.request import BODY_CHUNKED, BODY_LENGTH, BODY_NONE, DISCARD_LIMIT, Request
from fastgw.http.response_edits import ResponseEdits
from fastgw.http.response_head import ForwardedHead
from fastgw.http.responses import (
    CONTINUE_100,
    STATUS_LINES,
    build_prepared,
    build_response,
    error_parts,
    status_line,
)
from fastgw.http.states import illegal, moves
from fastgw.http.upstream import ResponseSink, UpstreamConnection
from fastgw.http.vocabulary import NO_BODY_STATUSES

__all__ = [
    "BODY_CHUNKED",
    "BODY_LENGTH",
    "BODY_NONE",
    "DISCARD_LIMIT",
    "ClientSide",
    "CompletionHook",
    "Exchange",
]

log = logging.getLogger("fastgw.http")

# A request body waiting for its upstream is buffered up to this size, then the client is paused.
BODY_BUFFER_LIMIT: Final = 64 * 1024

# The exchange's phase: where its response is. The request body streams on independently of it
# (`request_complete`); the exchange is finished once both are done, or once it gave up on the
# rest of the request.
HANDLING: Final = 0  # the handler (routing, plugins) runs
CONNECTING: Final = 1  # waiting for an upstream connection
WAITING: Final = 2  # the request went upstream; no response head yet
STREAMING: Final = 3  # the response head went to the client; its body follows
COMPLETE: Final = 4  # the whole response is out; the rest of the request body is read and dropped
FINISHED: Final = 5  # handed back to the connection, switched to a tunnel, or aborted
PHASE_NAMES: Final = ("HANDLING", "CONNECTING", "WAITING", "STREAMING", "COMPLETE", "FINISHED")
PHASE_COUNT: Final = 6  # len(PHASE_NAMES), a literal: the compiled check folds it
# Every move an exchange makes. A local answer may come in any phase before the response
# started (COMPLETE, or FINISHED when the request is in); an abort ends any phase; WAITING goes
# back to CONNECTING for another attempt, and to FINISHED when the upstream switched protocols.
_PHASE_MOVES: Final = moves(
    PHASE_NAMES,
    {
        HANDLING: (CONNECTING, WAITING, COMPLETE, FINISHED),
        CONNECTING: (WAITING, COMPLETE, FINISHED),
        WAITING: (CONNECTING, STREAMING, COMPLETE, FINISHED),
        STREAMING: (COMPLETE, FINISHED),
        COMPLETE: (FINISHED,),
    },
)

_CHUNK_END: Final = b"\r\n"
_LAST_CHUNK: Final = b"0\r\n\r\n"
# The fields a 101 going to the client must carry besides the upstream's end-to-end ones.
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

    def start_tunnel(self, exchange: Exchange, upstream: UpstreamConnection) -> None:
        """The upstream switched protocols (its 101 is queued): both connections become a
        tunnel (fastgw/http/tunnel.py), the exchange is over."""
        raise NotImplementedError


@trait
class Forwarding:
    """What the proxy decides for one request going upstream (fastgw.proxy.forwarding): the wire
    asks, it never chooses. Asked only when there is something to decide: where a balanced
    request goes first, what follows a failed attempt, and, for a hop whose outcomes are watched,
    each status and failure. A request to a plain service on a pooled connection asks nothing.

    A method returning a hop sends the request there next (on a fresh connection); returning
    None means the forwarding has answered the exchange itself (`Exchange.respond_error`).
    """

    __slots__ = ()

    def first_hop(self, exchange: Exchange) -> Hop | None:
        """Where the request goes, asked once the plugins ran when `exchange.target` is unset."""
        raise NotImplementedError

    def connect_failed(self, exchange: Exchange, failure: int) -> Hop | None:
        """No connection to `exchange.target` (CONNECT_TIMEOUT, CONNECT_REFUSED, ...)."""
        raise NotImplementedError

    def lost(self, exchange: Exchange, reused: bool, got_response: bool) -> Hop | None:
        """The connection carrying the request ended before the response head. `reused`: it
        had served requests before; `got_response`: some of the response had come."""
        raise NotImplementedError

    def failed(self, exchange: Exchange, timed_out: bool) -> None:
        """A watched hop timed out or sent what cannot be forwarded; the exchange answers."""
        raise NotImplementedError

    def responded(self, exchange: Exchange, status: int) -> None:
        """A watched hop's response status."""
        raise NotImplementedError


class Exchange(Request, ResponseSink):
    """A request from the client, the plugin context for it, and the response going back."""

    __slots__ = ("client", "phase", "response_chunked", "target", "upstream")

    body_limit = BODY_BUFFER_LIMIT
    body_waiter: asyncio.Future[None] | None = None
    # The proxy's decisions for this request (fastgw.proxy.forwarding): set by the handler; the
    # shared one of the route, replaced by the request's own once an attempt failed.
    forwarding: Forwarding | None = None
    pending: Awaitable[None] | None = None  # what an async handler returned
    response_close_delimited = False
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
        super().__init__(method, path, query, host, headers, keep_alive)
        self.client = client
        self.phase = HANDLING
        self.target: Hop | None = None  # where the request goes (the handler or forwarding says)
        self.upstream: UpstreamConnection | None = None
        self.response_chunked = False

    def _move(self, phase: int) -> None:
        """Every change of phase: checked against _PHASE_MOVES."""
        if not _PHASE_MOVES[self.phase * PHASE_COUNT + phase]:
            raise illegal("exchange", PHASE_NAMES, self.phase, phase)
        self.phase = phase

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

    # -- the plugin context: what needs the connection -------------------------------------------

    @property
    def client_ip(self) -> str:
        return self.client.client_ip

    @property
    def connection_memo(self) -> dict[object, object]:
        return self.client.connection_memo()

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

    def respond(
        self, status: int, body: bytes, headers: Sequence[tuple[bytes, bytes]] = ()
    ) -> None:
        self.target = None
        super().respond(status, body, headers)

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
        target = self.target
        if target is None:
            forwarding = self.forwarding
            if forwarding is None:
                self.respond_error(500)  # the handler named no destination: its bug
                return
            target = forwarding.first_hop(self)
            if target is None:
                return  # answered by the forwarding (no target may take the request)
            self.target = target
        if self.expect_continue:
            self._send_continue()
        upstream = target.pool.acquire()
        if upstream is not None:
            self._send_to(upstream, target)
        else:
            self._attempt(target)

    def _send_continue(self) -> None:
        if self.expect_continue and not self.continue_sent and not self.request_complete:
            self.continue_sent = True
            self.client.write(CONTINUE_100)
            self.client.flush()

    # -- attempts: connecting, and what the forwarding says after a failure ----------------------

    def _attempt(self, target: Hop) -> None:
        """Send the request to `target` on a new connection."""
        self._move(CONNECTING)
        self.target = target
        self.task = asyncio.ensure_future(self._connect(target))

    async def _connect(self, target: Hop) -> None:
        """Connect and send; after a failed connection, the forwarding names the next hop."""
        while True:
            try:
                upstream = await target.connect()
            except ConnectFailed as failure:
                if self.phase == FINISHED:
                    return
                forwarding = self.forwarding
                if forwarding is None:
                    self.respond_error(failure.status)  # one attempt: nobody to ask
                    return
                following = forwarding.connect_failed(self, failure.failure)
                if following is None:
                    return  # answered by the forwarding
                self.target = target = following
                continue
            if self.phase == FINISHED:
                target.pool.release(upstream)
                return
            if self.hook is not None:
                self.sent_at = monotonic()
            self._send_to(upstream, target)
            return

    def upstream_lost(self, upstream: UpstreamConnection) -> None:
        self.upstream = None
        phase = self.phase
        if phase == FINISHED:
            return
        if phase == STREAMING:
            if self.response_close_delimited:
                self.response_complete(upstream, False)
            else:
                self.client.abort()  # a truncated response must not look complete
            return
        # WAITING: no response head yet; whether it goes again is the forwarding's call
        forwarding = self.forwarding
        if forwarding is None:
            self.respond_error(502)
            return
        following = forwarding.lost(self, upstream.requests > 1, upstream.got_response_bytes)
        if following is not None:
            self._attempt(following)

    def upstream_failed(self, status: int) -> None:
        upstream = self.upstream
        self.upstream = None
        if upstream is not None:
            upstream.abort()
        phase = self.phase
        if phase >= COMPLETE:
            return
        target = self.target
        forwarding = self.forwarding
        if target is not None and target.watched and forwarding is not None:
            forwarding.failed(self, status == 504)
        if phase == STREAMING:
            self.client.flush()
            self.client.abort()
            return
        self.respond_error(status)

    # -- the request, towards the upstream -------------------------------------------------------

    def _send_to(self, upstream: UpstreamConnection, target: Hop) -> None:
        self.upstream = upstream
        self._move(WAITING)
        client = self.client
        head = self.upstream_head(target.version_and_host, client.forwarded_fields(self.host))
        upstream.send(
            self,
            head,
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
        if self.phase == COMPLETE:
            self._finish()

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
        if target is not None and target.watched:
            self._responded(status)
        fields = head.fields
        edits = self.response_edits
        if edits is not None:
            fields = self._edited(edits, status, fields)
        parts = [STATUS_LINES.get(status) or status_line(status), fields]
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
        self._move(STREAMING)
        data = b"".join(parts)
        if self.hook is not None:
            self.response_at = monotonic()
            self.status = status
            self.response_size = len(data)
            self.response_fields = fields
        self.client.write(data)

    @staticmethod
    def _edited(edits: ResponseEdits, status: int, fields: bytes) -> bytes:
        """The upstream's field lines as the plugins' edits and filters leave them."""
        for response_filter in edits.filters:
            response_filter.response_head(status, fields, edits)
        return edits.apply(fields)

    def _responded(self, status: int) -> None:
        """A watched hop's status, for its passive health check."""
        forwarding = self.forwarding
        if forwarding is not None:
            forwarding.responded(self, status)

    def response_body(self, data: bytes) -> None:
        edits = self.response_edits
        if edits is not None and edits.filters:
            self._filter_body(edits, data)
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

    def response_switching(self, upstream: UpstreamConnection, head: ForwardedHead) -> None:
        """The upstream took the Upgrade: the 101 goes out and the connections become a tunnel.
        What the client still sends of the request's body goes upstream as tunnel bytes."""
        target = self.target
        if target is not None and target.watched:
            self._responded(101)
        self.upstream = None
        self.keep_alive = False
        self._move(FINISHED)
        edits = self.response_edits
        if edits is not None and edits.filters:
            self._end_filters(edits, False)
        if self.hook is not None:
            # the log phase sees the handshake (as Kong logs a WebSocket upgrade): 101
            self.response_at = monotonic()
            self.status = 101
            self._complete()
        client = self.client
        client.write(b"".join((_SWITCHED, head.fields, _SWITCHED_FIELDS)))
        client.flush()
        client.start_tunnel(self, upstream)

    def response_complete(self, upstream: UpstreamConnection, reusable: bool) -> None:
        edits = self.response_edits
        if edits is not None and edits.filters:
            self._end_filters(edits, True)
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

    # -- local answers and the end ---------------------------------------------------------------

    def respond_error(self, status: int, message: str | None = None) -> None:
        """Answer with the gateway's JSON error for `status` (Kong's wording unless `message`)."""
        body, headers = error_parts(status, message)
        self.respond(status, body, headers)
        self._write_local_response()

    def _write_local_response(self) -> None:
        if not self.request_complete and not self.may_discard():
            self.keep_alive = False
        headers = self.local_headers
        fields = self.local_fields
        edits = self.response_edits
        if edits is not None:
            if edits.filters:
                self._end_filters(edits, False)  # filters watch what the upstream answers
            headers = self.local_headers = edits.apply_to(headers)
            fields = None
        if fields is not None:
            data = build_prepared(
                self.local_status,
                self.local_body,
                fields,
                keep_alive=self.keep_alive,
                head_only=self.head_request,
                http_10=self.http_10,
            )
        else:
            data = build_response(
                self.local_status,
                self.local_body,
                headers,
                keep_alive=self.keep_alive,
                head_only=self.head_request,
                http_10=self.http_10,
            )
        if self.hook is not None:
            self.response_size = len(data)
        self.client.write(data)
        self._finish()

    @staticmethod
    def _filter_body(edits: ResponseEdits, data: bytes) -> None:
        for response_filter in edits.filters:
            try:
                response_filter.response_body(data)
            except Exception:
                log.exception("response filter failed; it sees no more of this response")
                edits.filters = [f for f in edits.filters if f is not response_filter]

    @staticmethod
    def _end_filters(edits: ResponseEdits, complete: bool) -> None:
        """Tell the filters once how their response ended."""
        filters = edits.filters
        edits.filters = []
        for response_filter in filters:
            try:
                if complete:
                    response_filter.response_complete()
                else:
                    response_filter.response_aborted()
            except Exception:
                log.exception("response filter failed")

    def _finish(self) -> None:
        """The response is out: done now, or once the rest of the request body is dropped."""
        done = self.request_complete or not self.keep_alive
        if self.phase != COMPLETE:
            self._move(FINISHED if done else COMPLETE)
            if self.hook is not None:
                self._complete()
        elif done:
            self._move(FINISHED)
        client = self.client
        # An exchange's pauses must not outlive its response (nobody would lift them later);
        # what is left of the body is read and dropped.
        client.flow.resume_reading(EXCHANGE_PAUSES)
        if done:
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
        if self.phase == FINISHED:
            return
        self._move(FINISHED)
        edits = self.response_edits
        if edits is not None and edits.filters:
            self._end_filters(edits, False)
        if self.hook is not None:
            self._complete()
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
