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

from fastgw.http.edits import edited_fields, end_filters, filter_body
from fastgw.http.flow import EXCHANGE_PAUSES, PAUSE_BUFFER, PAUSE_UPSTREAM, FlowControl
from fastgw.http.hop import ConnectFailed, Hop
from fastgw.http.request import (
    BODY_BUFFER_LIMIT,
    BODY_CHUNKED,
    BODY_LENGTH,
    BODY_NONE,
    DISCARD_LIMIT,
    Request,
)
from fastgw.http.response_head import ForwardedHead, client_head
from fastgw.http.responses import CONTINUE_100, error_parts
from fastgw.http.states import illegal, moves
from fastgw.http.upstream import ResponseSink, UpstreamConnection

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

    body_waiter: asyncio.Future[None] | None = None
    # The proxy's decisions for this request (fastgw.proxy.forwarding): set by the handler; the
    # shared one of the route, replaced by the request's own once an attempt failed.
    forwarding: Forwarding | None = None
    pending: Awaitable[None] | None = None  # what an async handler returned
    response_close_delimited = False
    task: asyncio.Future[None] | None = None
    # Told when the exchange is over; the completion facts (Request) are kept only with one.
    hook: CompletionHook | None = None

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
        if self.buffer_chunk(chunk):
            _wake(self.body_waiter)
            self.client.flow.pause_reading(PAUSE_BUFFER)

    def on_request_complete(self) -> None:
        self.request_complete = True
        _wake(self.body_waiter)
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

    # The upstream's reading is held while the client is slow (its flow control makes holding
    # or releasing twice a no-op).
    def client_write_paused(self) -> None:
        upstream = self.upstream
        if upstream is not None:
            upstream.hold()

    def client_write_resumed(self) -> None:
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
            fields = edited_fields(edits, status, fields)
        data, self.response_chunked, close_delimited = client_head(self, status, fields, head)
        if close_delimited:
            self.response_close_delimited = True  # a class default: most never write it
        self._move(STREAMING)
        if self.hook is not None:
            self.response_at = monotonic()
            self.status = status
            self.response_size = len(data)
            self.response_fields = fields
        self.client.write(data)

    def _responded(self, status: int) -> None:
        """A watched hop's status, for its passive health check."""
        forwarding = self.forwarding
        if forwarding is not None:
            forwarding.responded(self, status)

    def response_body(self, data: bytes) -> None:
        edits = self.response_edits
        if edits is not None and edits.filters:
            filter_body(edits, data)
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
            end_filters(edits, False)
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
            end_filters(edits, True)
        if self.response_chunked:
            self.client.write(_LAST_CHUNK)
            if self.hook is not None:
                self.response_size += len(_LAST_CHUNK)
        self.upstream = None
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
        edits = self.response_edits
        if edits is not None:
            if edits.filters:
                end_filters(edits, False)  # filters watch what the upstream answers
            self.local_headers = edits.apply_to(self.local_headers)
            self.local_fields = None  # prepared for the headers as they were
        data = self.local_response()
        if self.hook is not None:
            self.response_size = len(data)
        self.client.write(data)
        self._finish()

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
        flow = client.flow
        if flow.read_paused & EXCHANGE_PAUSES:
            flow.resume_reading(EXCHANGE_PAUSES)
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

    def abort(self) -> None:
        """The client went away: release everything without reusing the upstream connection."""
        if self.phase == FINISHED:
            return
        self._move(FINISHED)
        edits = self.response_edits
        if edits is not None and edits.filters:
            end_filters(edits, False)
        if self.hook is not None:
            self._complete()
        waiter = self.body_waiter
        if waiter is not None and not waiter.done():
            waiter.cancel()
        task = self.task
        if task is not None and not task.done():
            _cancel(task, self.pending)
        upstream = self.upstream
        self.upstream = None
        if upstream is not None:
            upstream.abort()


def _wake(waiter: asyncio.Future[None] | None) -> None:
    """The body a plugin waits for is in (or over its limit)."""
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


def _cancel(task: asyncio.Future[None], pending: Awaitable[None] | None) -> None:
    """Cancel an exchange's task; a handler's coroutine that never ran is closed (else Python
    warns that it was "never awaited")."""
    task.cancel()
    if inspect.iscoroutine(pending) and inspect.getcoroutinestate(pending) == inspect.CORO_CREATED:
        pending.close()
