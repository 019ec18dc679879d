"""The gateway's own small async HTTP/1.1 client, for talking to other services (e.g. an IdP).

Owns connection pooling (keep-alive, per origin, LIFO), TLS, response framing and limits; it never
logs, and its errors never carry headers or bodies (they may hold secrets).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import httptools

from fastgw import __version__
from fastgw.http.tls import client_context
from fastgw.http.vocabulary import DEFAULT_PORTS, IDEMPOTENT_METHODS, MAX_RESPONSE_HEAD

__all__ = [
    "ConnectError",
    "HttpClient",
    "HttpClientError",
    "ProtocolError",
    "RequestTimeout",
    "Response",
    "ResponseTooLarge",
]

# A pooled connection idle for longer than this is closed rather than reused: servers drop idle
# keep-alive connections on their own schedule (Node's default is 5 s, nginx 75 s), and a request
# written into a connection the server is closing fails in a way that cannot be retried safely
# for non-idempotent methods such as the token POST.
POOL_IDLE_SECONDS = 4.0


_USER_AGENT = f"fastgw/{__version__}"
_FORBIDDEN_IN_HEADERS = ("\r", "\n", "\0")


class HttpClientError(Exception):
    """Base of every error this client raises for a failed exchange."""


class ConnectError(HttpClientError):
    """The connection could not be made, or broke before a complete response arrived."""


class RequestTimeout(HttpClientError):
    """The whole exchange (pool wait, connect, send, receive) took longer than `timeout`."""


class ResponseTooLarge(HttpClientError):
    """The response body is larger than `max_body`; it was not read any further."""


class ProtocolError(HttpClientError):
    """The server's response is not valid HTTP/1.1."""


class _StaleConnection(ConnectError):
    """A reused connection was closed by the server before any byte of the response."""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    body: bytes


@dataclass(frozen=True, slots=True)
class _Target:
    scheme: str
    host: str
    port: int
    host_header: str
    request_target: str

    @property
    def origin(self) -> tuple[str, str, int]:
        return (self.scheme, self.host, self.port)

    @property
    def label(self) -> str:
        # for error messages: never the query, which may carry credentials
        return f"{self.scheme}://{self.host_header}"


def _parse_url(url: str) -> _Target:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise ValueError(f"unsupported URL scheme {parts.scheme!r} (use http or https)")
    host = parts.hostname
    if not host:
        raise ValueError("URL has no host")
    try:
        port = parts.port or DEFAULT_PORTS[scheme]
    except ValueError:
        raise ValueError("URL has an invalid port") from None
    name = f"[{host}]" if ":" in host else host
    host_header = name if port == DEFAULT_PORTS[scheme] else f"{name}:{port}"
    target = parts.path or "/"
    if parts.query:
        target = f"{target}?{parts.query}"
    return _Target(scheme, host, port, host_header, target)


def _check_header_text(text: str) -> None:
    for forbidden in _FORBIDDEN_IN_HEADERS:
        if forbidden in text:
            raise ValueError("header names and values must not contain CR, LF or NUL")


def _serialize(
    method: str,
    target: _Target,
    headers: Mapping[str, str] | None,
    body: bytes,
    keepalive: bool,
) -> bytes:
    lines = [f"{method} {target.request_target} HTTP/1.1", f"Host: {target.host_header}"]
    given = set()
    if headers:
        for name, value in headers.items():
            _check_header_text(name)
            _check_header_text(value)
            lowered = name.lower()
            if lowered in ("host", "content-length", "transfer-encoding", "connection"):
                continue  # framing and routing headers are ours to set
            given.add(lowered)
            lines.append(f"{name}: {value}")
    if "user-agent" not in given:
        lines.append(f"User-Agent: {_USER_AGENT}")
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    if not keepalive:
        lines.append("Connection: close")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head + body if body else head


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection and the response currently being read from it."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reusable = False
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[Response] | None = None
        self._reset(max_body=0, head_request=False)

    def _reset(self, *, max_body: int, head_request: bool) -> None:
        self._max_body = max_body
        self._head_request = head_request
        self._received_any = False
        self._headers: dict[str, str] = {}
        self._head_bytes = 0
        # raw bytes received before the final head completed: httptools buffers a header line
        # until it ends, so counting complete headers alone would not bound a never-ending line
        self._raw_head_bytes = 0
        self._headers_done = False
        self._close_delimited = False
        self._body: list[bytes] = []
        self._body_size = 0
        self._status = 0

    # -- asyncio.Protocol -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self._waiter is None or self._waiter.done():
            # bytes nobody asked for: the connection is out of step, never reuse it
            self.reusable = False
            self.close()
            return
        self._received_any = True
        in_head = not self._headers_done
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError:
            return  # a callback already failed the waiter and closed the connection
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            self._fail(ProtocolError("malformed HTTP response"))
            return
        if in_head and not self._headers_done:
            # still no final head: bound what the parser may be holding (a header line that
            # never ends, endless 1xx answers), whatever the individual headers look like
            self._raw_head_bytes += len(data)
            if self._raw_head_bytes > MAX_RESPONSE_HEAD:
                self._fail(ProtocolError("response head too large"))

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost finishes the exchange

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.reusable = False
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if self._headers_done and self._close_delimited:
            self._complete()  # a body without framing ends with the connection (RFC 9112 §6.3)
        elif not self._received_any:
            waiter.set_exception(_StaleConnection("connection closed before any response"))
        else:
            waiter.set_exception(ConnectError("connection closed mid-response"))

    # -- httptools callbacks, in the order they fire ----------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value) + 4
        if self._head_bytes > MAX_RESPONSE_HEAD:
            self._fail(ProtocolError("response head too large"))
            raise _Abort
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        previous = self._headers.get(key)
        self._headers[key] = text if previous is None else f"{previous}, {text}"

    def on_headers_complete(self) -> None:
        self._status = self._parser.get_status_code()
        if 100 <= self._status < 200:
            return  # an interim answer; the final one follows on the same connection
        self._headers_done = True
        headers = self._headers
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        length = headers.get("content-length")
        self._close_delimited = not chunked and length is None and self._status not in (204, 304)
        if self._head_request:
            # httptools cannot be told the request was HEAD, so it would wait for a body that
            # never comes: finish here and never reuse the connection
            self._complete()
            self.reusable = False
            self.close()
            raise _Abort
        if length is not None and not chunked:
            try:
                announced = int(length)
            except ValueError:
                announced = -1
            if announced > self._max_body:
                self._fail(ResponseTooLarge(f"response body of {announced} bytes"))
                raise _Abort

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > self._max_body:
            self._fail(ResponseTooLarge(f"response body over {self._max_body} bytes"))
            raise _Abort
        self._body.append(body)

    def on_message_complete(self) -> None:
        if not self._headers_done:
            self._headers = {}  # drop an interim (1xx) response's headers
            self._head_bytes = 0
            return
        self.reusable = self._parser.should_keep_alive()
        self._complete()

    # -- exchange ---------------------------------------------------------------------------------

    async def exchange(self, payload: bytes, *, head_request: bool, max_body: int) -> Response:
        assert self.transport is not None
        self.reusable = False
        self._reset(max_body=max_body, head_request=head_request)
        waiter: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        self.transport.write(payload)
        try:
            return await waiter
        finally:
            self._waiter = None

    def _complete(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(Response(self._status, self._headers, b"".join(self._body)))

    def _fail(self, error: HttpClientError) -> None:
        self.reusable = False
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
        self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class _Abort(Exception):
    """Raised inside a parser callback to stop parsing after the exchange was settled."""


class _Origin:
    """Connections to one (scheme, host, port): the idle stack and the connection budget."""

    __slots__ = ("idle", "slots")

    def __init__(self, max_connections: int) -> None:
        self.idle: list[_Connection] = []
        self.slots = asyncio.Semaphore(max_connections)


class HttpClient:
    """A pooled HTTP/1.1 client; see `request`. One instance per event loop.

    https servers are trusted by the system store plus `ca_pem` (PEM text of CA certificates);
    `verify_tls=False` trusts any (fastgw/http/tls.py client_context). An idle pooled
    connection is reused for `idle_timeout` seconds at most.
    """

    def __init__(
        self,
        *,
        verify_tls: bool = True,
        keepalive: bool = True,
        max_connections_per_host: int = 16,
        ca_pem: str | None = None,
        idle_timeout: float = POOL_IDLE_SECONDS,
    ) -> None:
        if max_connections_per_host < 1:
            raise ValueError("max_connections_per_host must be >= 1")
        self._keepalive = keepalive
        self._idle_timeout = idle_timeout
        self._max_connections = max_connections_per_host
        self._ssl = client_context(verify_tls, ca_pem)
        self._origins: dict[tuple[str, str, int], _Origin] = {}
        self._open: set[_Connection] = set()
        self._closed = False

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
        timeout: float = 10.0,
        max_body: int = 1 << 20,
    ) -> Response:
        """Send one request and read the whole response; the whole exchange is bounded by
        `timeout` seconds, the response body by `max_body` bytes."""
        if self._closed:
            raise ConnectError("client is closed")
        method = method.upper()
        target = _parse_url(url)
        payload = _serialize(method, target, headers, body, self._keepalive)
        try:
            async with asyncio.timeout(timeout):
                return await self._send(method, target, payload, max_body)
        except TimeoutError:
            raise RequestTimeout(
                f"{method} {target.label} took longer than {timeout:g} s"
            ) from None

    async def _send(self, method: str, target: _Target, payload: bytes, max_body: int) -> Response:
        origin = self._origins.get(target.origin)
        if origin is None:
            origin = self._origins[target.origin] = _Origin(self._max_connections)
        async with origin.slots:
            connection, reused = self._checkout(origin)
            if connection is None:
                connection = await self._connect(target)
            try:
                response = await self._exchange(connection, method, payload, max_body)
            except _StaleConnection:
                if not (reused and method in IDEMPOTENT_METHODS):
                    raise ConnectError(f"{target.label} closed the connection") from None
                connection = await self._connect(target)
                try:
                    response = await self._exchange(connection, method, payload, max_body)
                except _StaleConnection:
                    raise ConnectError(f"{target.label} closed the connection") from None
            if self._keepalive and connection.reusable and not connection.closed:
                connection.idle_since = time.monotonic()
                origin.idle.append(connection)
            else:
                self._discard(connection)
            return response

    async def _exchange(
        self, connection: _Connection, method: str, payload: bytes, max_body: int
    ) -> Response:
        try:
            return await connection.exchange(
                payload, head_request=method == "HEAD", max_body=max_body
            )
        except BaseException:
            # whatever happened (timeout, cancel, bad bytes), the connection's state is unknown
            self._discard(connection)
            raise

    def _checkout(self, origin: _Origin) -> tuple[_Connection | None, bool]:
        idle = origin.idle
        now = time.monotonic()
        while idle:
            connection = idle.pop()  # LIFO: the warmest connection, the least likely closed
            if connection.closed or now - connection.idle_since > self._idle_timeout:
                self._discard(connection)
                continue
            return connection, True
        return None, False

    async def _connect(self, target: _Target) -> _Connection:
        loop = asyncio.get_running_loop()
        tls = self._ssl if target.scheme == "https" else None
        try:
            _, connection = await loop.create_connection(
                _Connection,
                target.host,
                target.port,
                ssl=tls,
                server_hostname=target.host if tls is not None else None,
            )
        except OSError as error:
            # OSError covers DNS, refused, unreachable and TLS (ssl.SSLError) failures
            reason = error.strerror or type(error).__name__
            raise ConnectError(f"cannot connect to {target.label}: {reason}") from None
        self._open.add(connection)
        return connection

    def _discard(self, connection: _Connection) -> None:
        connection.close()
        self._open.discard(connection)

    async def close(self) -> None:
        """Close every connection; later requests fail with ConnectError."""
        self._closed = True
        for origin in self._origins.values():
            origin.idle.clear()
        for connection in tuple(self._open):
            connection.close()
        self._open.clear()
