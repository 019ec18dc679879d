"""A request as the client sent it and the plugins change it: the parsed head, its framing, the
header and query edits of the plugin context (fastgw.plugins.api.RequestContext), a local answer.

The base of `Exchange` (fastgw/http/exchange.py), which adds the I/O: what is here never reads
or writes a connection.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from mypy_extensions import trait

from fastgw.http.response_edits import ResponseEdits, ResponseFilter
from fastgw.http.responses import build_prepared, build_response

BODY_NONE: Final = 0
BODY_LENGTH: Final = 1
BODY_CHUNKED: Final = 2

# A request body waiting for its upstream is buffered up to this size, then the client is paused
# (a plugin that reads the body raises it to its own limit).
BODY_BUFFER_LIMIT: Final = 64 * 1024

# A body the client keeps sending after the gateway answered it is read and dropped up to this
# size so the connection stays usable; past it the connection is closed.
DISCARD_LIMIT: Final = 1024 * 1024

# What a WebSocket upgrade offers upstream (Kong's upstream_connection / upstream_upgrade).
_OFFER_UPGRADE: Final = b"connection: keep-alive, Upgrade\r\nupgrade: websocket\r\n"


@trait
class Principal:
    """Who the layers above authenticated for this request (Kong's authenticated consumer and
    credential, fastgw.plugins.api.Authenticated). The wire only carries it, for the log phase
    and the forwarding's consistent hashing."""

    __slots__ = ()


class Request:
    """The request head as parsed (lower-case field names, bytes values) and what plugins did."""

    # What every request reads lives in slots, the cheapest attribute access in pure Python, set
    # once in __init__. What only bodies, local answers, async plugins and failures need is a
    # class default instead, written to the instance's __dict__ (made on first write) when it
    # changes: a plain request never pays for setting it.
    __slots__ = (
        "__dict__",
        "body_mode",
        "content_length",
        "expect_continue",
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
        "upstream_host",
        "upstream_path",
        "x_forwarded_for",
    )

    body_chunks: list[bytes] = []  # never appended to: expect_body gives a body its own list
    body_limit = BODY_BUFFER_LIMIT  # buffered past this, the client is paused
    body_buffered = 0
    body_received = 0
    continue_sent = False  # a 100 Continue went out
    local_body = b""
    local_headers: Sequence[tuple[bytes, bytes]] = ()
    # the local answer's fields already written out ("name: value\r\n" each), when the plugin
    # that answered keeps them so (a cached response): written as they are if nothing edits them
    local_fields: bytes | None = None
    local_status = 0
    upgrade = False  # a WebSocket upgrade request: offered upstream, a 101 makes a tunnel
    # The client's X-Real-IP field (the wire re-creates it upstream): kong.conf's default
    # real_ip_header, read only when the peer is trusted. None: the request had none.
    x_real_ip: bytes | None = None
    # Set by an authentication plugin (Kong's kong.client.authenticate); None: nobody did.
    principal: Principal | None = None
    # What plugins change in the response (fastgw/http/response_edits.py); None: nothing.
    response_edits: ResponseEdits | None = None
    # Values the plugins of one request share (Kong's kong.ctx.shared); made on first use.
    shared_values: dict[str, object] | None = None
    # Reading time of an incomplete body, for its deadline and rate (fastgw/http/server.py),
    # and when the connection's sweep last counted it (0.0: reading was paused).
    body_seconds = 0.0
    body_checked = 0.0
    # Completion facts for the log phase, kept only for an exchange with a completion hook
    # (time.monotonic() seconds; 0.0 is "not reached"): when the handler began, when the
    # request went upstream if that was not at once, when the upstream's response head came,
    # when the exchange ended.
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
        method: bytes,
        path: bytes,
        query: bytes,
        host: bytes,
        headers: list[tuple[bytes, bytes]],
        keep_alive: bool,
    ) -> None:
        """A bodiless HTTP/1.1 request; `expect_body` and the framing fields say otherwise."""
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
        self.upstream_host: bytes | None = None  # set by routing when the route preserves Host

    def expect_body(self, body_mode: int, expect_continue: bool) -> None:
        """A body follows the head (Content-Length or chunked); it streams in later."""
        self.body_mode = body_mode
        self.request_complete = False
        self.body_chunks = []
        self.expect_continue = expect_continue

    # -- the plugin context (fastgw.plugins.api.RequestContext) ---------------------------------

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

    def buffer_chunk(self, chunk: bytes) -> bool:
        """Keep a piece of the body that has no upstream yet; True once over body_limit."""
        self.body_chunks.append(chunk)
        self.body_buffered += len(chunk)
        return self.body_buffered > self.body_limit

    def replace_body(self, body: bytes) -> None:
        if not self.request_complete:
            raise RuntimeError("replace_body needs the whole body: call read_body first")
        self.body_chunks = [body]
        self.body_buffered = len(body)
        self.body_mode = BODY_LENGTH
        self.content_length = len(body)

    def shared(self) -> dict[str, object]:
        """Values the plugins of this request share (Kong's kong.ctx.shared)."""
        values = self.shared_values
        if values is None:
            values = self.shared_values = {}
        return values

    def edits(self) -> ResponseEdits:
        """The response's edits, made on first use."""
        edits = self.response_edits
        if edits is None:
            edits = self.response_edits = ResponseEdits()
        return edits

    def set_response_header(self, name: bytes, value: bytes) -> None:
        self.edits().set(name, value)

    def set_response_headers(self, fields: Sequence[tuple[bytes, bytes]]) -> None:
        self.edits().set_all(fields)

    def set_response_lines(self, lines: bytes, names: tuple[bytes, ...], probe: bytes) -> None:
        self.edits().set_lines(lines, names, probe)

    def add_response_header(self, name: bytes, value: bytes) -> None:
        self.edits().add(name, value)

    def remove_response_header(self, name: bytes) -> None:
        self.edits().remove(name)

    def add_response_filter(self, response_filter: ResponseFilter) -> None:
        self.edits().filters.append(response_filter)

    def respond(
        self, status: int, body: bytes, headers: Sequence[tuple[bytes, bytes]] = ()
    ) -> None:
        self.responded = True
        self.local_status = status
        self.local_body = body
        self.local_headers = list(headers)

    @property
    def response_status(self) -> int:
        """The status the client got: the local answer's, the upstream's, or 499 (nginx's
        "client closed request") for an exchange aborted before any answer."""
        if self.responded:
            return self.local_status
        return self.status or 499

    def local_response(self) -> bytes:
        """The local answer's bytes. The connection ends after it (keep_alive turns False) when
        the rest of an unread request body is not worth reading."""
        if not self.request_complete and not self.may_discard():
            self.keep_alive = False
        fields = self.local_fields
        if fields is not None:
            return build_prepared(
                self.local_status,
                self.local_body,
                fields,
                keep_alive=self.keep_alive,
                head_only=self.head_request,
                http_10=self.http_10,
            )
        return build_response(
            self.local_status,
            self.local_body,
            self.local_headers,
            keep_alive=self.keep_alive,
            head_only=self.head_request,
            http_10=self.http_10,
        )

    def respond_prepared(
        self,
        status: int,
        body: bytes,
        headers: Sequence[tuple[bytes, bytes]],
        fields: bytes,
    ) -> None:
        """`respond`, with `headers` also written out as `fields` (kept by the caller)."""
        self.respond(status, body, headers)
        self.local_fields = fields

    def may_discard(self) -> bool:
        """Whether the rest of an unread request body is worth reading to keep the connection."""
        if self.expect_continue and not self.continue_sent:
            return False  # the client has not sent its body and may never: do not wait for it
        if self.body_mode == BODY_LENGTH:
            return self.content_length - self.body_received <= DISCARD_LIMIT
        # chunked: the rest has no known size; it is dropped as it arrives, and past
        # DISCARD_LIMIT the connection ends (Exchange.on_request_body), as any server may end one
        return self.body_received <= DISCARD_LIMIT

    # -- the request towards the upstream --------------------------------------------------------

    def upstream_head(self, version_and_host: bytes, forwarded: bytes) -> bytes:
        """The head (and the body so far) to send upstream. `version_and_host` ends the request
        line and gives the upstream's Host (unless the route preserves the client's);
        `forwarded` ends X-Forwarded-For and adds the other X-Forwarded-* fields."""
        parts = [self.method, b" ", self.upstream_path]
        if self.query:
            parts.append(b"?")
            parts.append(self.query)
        if self.upstream_host is None:
            parts.append(version_and_host)
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
        parts.append(b"x-forwarded-for: ")
        if self.x_forwarded_for is not None:
            parts.append(self.x_forwarded_for)
            parts.append(b", ")
        parts.append(forwarded)
        if self.body_mode == BODY_NONE and self.content_length != 0:
            parts.append(b"\r\n")
        else:
            self.body_framing(parts)
        return b"".join(parts)

    def body_framing(self, parts: list[bytes]) -> None:
        """The end of the request head for a body, and the body received so far (taken)."""
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
