"""Reading requests off a client connection's bytes: httptools' callbacks, each request field
classified (consumed, re-created, forwarded or dropped), the head's framing and limits checked,
a chunked body's non-data bytes bounded. What comes out is an `Exchange` for the connection.

One reader per connection (fastgw/http/server.py), whose limits it copies; a callback raises
`LimitExceeded` for a request to refuse, and the connection answers it in order.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Final, Protocol, cast

import httptools

from fastgw.http.client_states import LINGERING
from fastgw.http.exchange import BODY_CHUNKED, BODY_LENGTH, Exchange
from fastgw.http.timers import Ticker
from fastgw.http.vocabulary import connection_tokens

if TYPE_CHECKING:
    from fastgw.http.server import Limits, ServerConnection

# A chunked body may carry non-data bytes (size lines, extensions, CRLFs, trailers) of 16 per
# chunk plus twice its data, and at most this much beyond: Go net/http's rule (CVE-2023-39326).
# llhttp skips extensions without a bound and httptools gives no callback for them, so without
# this a client could stream extension bytes forever, evading the body timeout and size limit
# (Node's CVE-2024-22019; Node and h11 cap a chunk line at 16 KiB too). Counted per read from
# the end of the read that completed the head, so that read (at most uvloop's 256 kB) is not.
CHUNK_OVERHEAD_PER_CHUNK: Final = 16
CHUNK_EXCESS_LIMIT: Final = 16 * 1024

# Bytes a Host header may hold: RFC 3986 reg-name, IP-literal and port characters. RFC 9112 §3.2
# wants 400 for an invalid Host; nginx checks it too. Anything else ("/", "@", spaces, obs-text)
# would reach routing, x-forwarded-host and, with preserve_host, the upstream's Host.
HOST_BYTES: Final = (
    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=%:[]"
)

_SLASH: Final = 0x2F  # b"/"[0]
# b"_"[0]: `_UNDERSCORE in name` is a memchr, while `b"_" in name` first tries the needle as an
# integer and builds (then clears) a TypeError: about 2,000 instructions per header
_UNDERSCORE: Final = 0x5F
_QUESTION_MARK: Final = 0x3F  # b"?"[0]
# b"#"[0]: a fragment is the client's business; RFC 9112 §3.2's request-target has none, and an
# upstream that reads one could see another path than the one routed
_HASH: Final = 0x23

# httptools cannot read an Upgrade request's body: its on_headers_complete tells llhttp to skip
# the body of every request llhttp flags as an upgrade. Until the upstream agrees to switch, such
# a request is an ordinary one (RFC 9110 §7.8). An Upgrade the gateway does not offer upstream
# (anything but websocket, or a chunked body) is dropped as hop-by-hop and the request's body is
# read by a fresh parser primed with a head that frames the body the same way; llhttp then reads
# it with its usual strictness and goes on to the next request.
_PRIMING_HEAD_CHUNKED: Final = b"PUT / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n"
_PRIMING_HEAD_LENGTH: Final = b"PUT / HTTP/1.1\r\ncontent-length: %d\r\n\r\n"


# What a request field name is to the gateway: end-to-end, a name with "_" (forwarded only
# with underscores_in_headers), or one it consumes or re-creates instead of forwarding.
_END_TO_END: Final = 0
_UNDERSCORED: Final = 8
_DROPPED: Final = 9
_HOP: Final = 1
_HOST: Final = 2
_CONTENT_LENGTH: Final = 3
_TRANSFER_ENCODING: Final = 4
_EXPECT: Final = 5
_CONNECTION: Final = 6
_XFF: Final = 7
_UPGRADE: Final = 10
_XRI: Final = 11
REQUEST_SPECIAL_HEADERS: Final[dict[bytes, int]] = {
    b"connection": _CONNECTION,
    b"keep-alive": _HOP,
    b"proxy-connection": _HOP,
    b"proxy-authorization": _HOP,
    b"te": _HOP,
    b"trailer": _HOP,
    b"upgrade": _UPGRADE,
    b"transfer-encoding": _TRANSFER_ENCODING,
    b"content-length": _CONTENT_LENGTH,
    b"host": _HOST,
    b"expect": _EXPECT,
    b"x-forwarded-for": _XFF,
    b"x-forwarded-proto": _HOP,
    b"x-forwarded-host": _HOP,
    b"x-forwarded-port": _HOP,
    b"x-real-ip": _XRI,  # re-created upstream; kept aside for kong.conf's real_ip_header
}


# Fields the layers above own (the proxy hands them over at build and on reload: own_fields).
# Withheld: a client's copy is dropped, never seen by the handler nor forwarded (identity fields
# that only the gateway may set). Owned: fields the handler sets; their "_" aliases are dropped
# whatever underscores_in_headers says, as are the withheld ones' and the special fields'.
_withheld: Final[set[bytes]] = set()
_owned: Final[set[bytes]] = set()


def own_fields(withheld: Iterable[bytes], owned: Iterable[bytes]) -> None:
    """Which request fields the layers above own (lower case): the withheld are dropped, and
    the "_" aliases of both. Process-wide, as the field-name cache it resets is."""
    _withheld.clear()
    _withheld.update(withheld)
    _owned.clear()
    _owned.update(owned)
    _owned.update(_withheld)
    _FIELD_NAMES.clear()  # classified again on first sight


def aliases_special_header(name: bytes) -> bool:
    """Whether `name` (lower case, with "_") reads as a header the gateway consumes, re-creates
    or owns once "_" is taken for "-", as CGI, WSGI and many frameworks do
    (HTTP_TRANSFER_ENCODING, HTTP_X_CONSUMER_ID)."""
    folded = name.replace(b"_", b"-")
    return folded in REQUEST_SPECIAL_HEADERS or folded in _owned


class _FieldName:
    """A request field name as clients spell it: its lower-case form and what it is to us."""

    __slots__ = ("kind", "name")

    def __init__(self, name: bytes, kind: int) -> None:
        self.name = name
        self.kind = kind


# Field names as clients spelled them (lower-casing one costs more than a dict lookup).
# Bounded in entries and name length, so that made-up names cannot grow it; first come.
_FIELD_NAMES: Final[dict[bytes, _FieldName]] = {}
FIELD_NAMES_CACHED: Final = 512
FIELD_NAME_CACHED_LENGTH: Final = 64


def _field_name(raw: bytes) -> _FieldName:
    name = raw.lower()
    kind = REQUEST_SPECIAL_HEADERS.get(name, _END_TO_END)
    if kind == _END_TO_END:
        if name in _withheld:
            kind = _DROPPED
        elif _UNDERSCORE in name:
            # dropped whatever the setting when it aliases a field the gateway owns
            kind = _DROPPED if aliases_special_header(name) else _UNDERSCORED
    known = _FieldName(name, kind)
    if len(_FIELD_NAMES) < FIELD_NAMES_CACHED and len(raw) <= FIELD_NAME_CACHED_LENGTH:
        _FIELD_NAMES[raw] = known
    return known


class _ParsedUrl(Protocol):
    schema: bytes | None
    host: bytes | None
    port: int | None
    path: bytes | None
    query: bytes | None


class LimitExceeded(Exception):
    """A request the gateway refuses: answered with `status`, then the connection closes."""

    def __init__(self, status: int) -> None:
        self.status = status


class RequestReader:
    """The parser of one client connection and the request head it is reading."""

    __slots__ = (
        "chunk_data_mark",
        "chunk_excess",
        "chunk_mark",
        "chunked",
        "chunked_body",
        "chunks",
        "conn",
        "connection_value",
        "content_length",
        "expect_continue",
        "framing_seen",
        "head_after",
        "head_from",
        "head_started",
        "headers",
        "host",
        "max_body_size",
        "max_head_size",
        "max_headers",
        "max_uri_size",
        "parser",
        "parsing",
        "priming",
        "read_start",
        "received",
        "special_size",
        "ticker",
        "transfer_encoding",
        "underscores_in_headers",
        "upgrade_body",
        "upgrade_value",
        "url",
        "x_forwarded_for",
        "x_real_ip",
    )

    def __init__(self, conn: ServerConnection, limits: Limits, ticker: Ticker) -> None:
        self.conn = conn
        self.ticker = ticker
        # read per request: copied here to save the attribute hops
        self.max_headers = limits.max_headers
        self.max_uri_size = limits.max_uri_size
        self.max_head_size = limits.max_head_size
        self.max_body_size = limits.max_body_size
        self.underscores_in_headers = limits.underscores_in_headers
        self.parser = httptools.HttpRequestParser(self)
        self.parsing: Exchange | None = None  # the request whose head or body is being read
        # Head size without per-header counting: `received` counts every byte read; a head
        # that began in the read starting at `head_from` and ending at `head_after` spans at
        # most received - head_from bytes, and at least received - head_after while incomplete.
        self.received = 0
        self.read_start = 0
        self.head_from = 0
        self.head_after = 0
        # request head being parsed
        self.special_size = 0  # consumed headers other than Host: not in `headers`
        self.head_started = 0.0
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.host = b""
        self.content_length = -1
        self.chunked = False  # a Transfer-Encoding header came; its value is checked later
        self.transfer_encoding = b""
        self.expect_continue = False
        self.connection_value: bytes | None = None
        self.x_forwarded_for: bytes | None = None
        self.x_real_ip: bytes | None = None  # the first X-Real-IP field, as nginx reads it
        self.upgrade_value: bytes | None = None  # the request's Upgrade field
        self.framing_seen = False  # one of the fields above differs from its default
        # a chunked request body being read: its non-data bytes are bounded (see check_chunks)
        self.chunked_body: Exchange | None = None
        self.chunks = 0
        self.chunk_mark = -1
        self.chunk_data_mark = 0
        self.chunk_excess = 0
        # an Upgrade request whose body the parser skipped, and the primed parser's own head
        # being fed (its callbacks are not a request): see _PRIMING_HEAD_CHUNKED
        self.upgrade_body: Exchange | None = None
        self.priming = False

    def count(self, size: int) -> None:
        """A read of `size` bytes is about to be parsed."""
        start = self.received
        self.read_start = start
        self.received = start + size

    def checked_read(self) -> int:
        """After a read: the status to fail with (431: an endless head, 400: a chunked body's
        overhead past its bound), or 0."""
        if self.head_started and self.received - self.head_after > self.max_head_size:
            return 431  # httptools keeps buffering an incomplete head: stop it here
        if self.chunked_body is not None:
            return self.check_chunks()
        return 0

    def restart(self, body_left: Exchange | None) -> None:
        """A fresh parser after llhttp stopped at an Upgrade request's head; it reads
        `body_left`'s body first (an upgrade not offered upstream: an ordinary request)."""
        self.parser = httptools.HttpRequestParser(self)
        if body_left is None:
            return
        if body_left.body_mode == BODY_CHUNKED:
            head = _PRIMING_HEAD_CHUNKED
        else:
            head = _PRIMING_HEAD_LENGTH % body_left.content_length
        self.priming = True
        try:
            self.parser.feed_data(head)
        finally:
            self.priming = False

    def take_upgrade_body(self) -> Exchange | None:
        """The upgrade request whose body llhttp skipped, if it has one (cleared)."""
        exchange = self.upgrade_body
        self.upgrade_body = None
        return exchange

    # httptools callbacks, in the order they fire

    def on_message_begin(self) -> None:
        if self.conn.state >= LINGERING:  # the connection is ending
            # Pipelined after a request that closed the connection: never run it.
            raise LimitExceeded(400)
        if self.priming:
            return  # the primed parser's own head: no request (head_started stays 0)
        self.head_started = self.ticker.now or 1e-9
        self.head_from = self.read_start
        self.head_after = self.received
        self.url = b""
        self.headers = []
        self.host = b""
        if self.framing_seen:
            # Only requests that carried such headers pay for resetting them.
            self.framing_seen = False
            self.special_size = 0
            self.content_length = -1
            self.chunked = False
            self.transfer_encoding = b""
            self.expect_continue = False
            self.connection_value = None
            self.x_forwarded_for = None
            self.x_real_ip = None
            self.upgrade_value = None

    def on_url(self, url: bytes) -> None:
        if self.url:
            url = self.url + url  # the target arrived in pieces
        if len(url) > self.max_uri_size:
            raise LimitExceeded(414)
        self.url = url

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.head_started:
            # A trailer field of a chunked body. Never merged into the headers (RFC 9110
            # §6.5.2): plugins have already seen them, and the upstream never gets trailers.
            # Their size is bounded with the body's other non-data bytes (check_chunks).
            return
        known = _FIELD_NAMES.get(name)
        if known is None:
            known = _field_name(name)
        kind = known.kind
        if kind == _END_TO_END:
            headers = self.headers
            if len(headers) >= self.max_headers:
                raise LimitExceeded(431)
            headers.append((known.name, value))
        elif kind == _UNDERSCORED:
            if len(self.headers) >= self.max_headers:
                raise LimitExceeded(431)
            if self.underscores_in_headers:
                self.headers.append((known.name, value))
            else:
                self._dropped_header(known.name, value)
        elif kind == _DROPPED:
            self._dropped_header(known.name, value)
        elif kind == _HOST:
            if self.host:
                raise LimitExceeded(400)  # two Host headers (RFC 9112 §3.2)
            self.host = value  # reset for every request: not a reason to set framing_seen
        else:
            self._special_header(kind, known.name, value)

    def _dropped_header(self, name: bytes, value: bytes) -> None:
        """A name with "_": dropped as nginx does by default (underscores_in_headers off), and
        always when it aliases a header the gateway consumes or owns, such as transfer_encoding
        or x_consumer_id; or a withheld field itself (_field_name)."""
        self.framing_seen = True  # so that special_size is reset for the next request
        self.special_size += len(name) + len(value) + 4  # still part of the head's size

    def _special_header(self, kind: int, name: bytes, value: bytes) -> None:
        """A header the gateway consumes or re-creates: kept aside, never in `headers`."""
        if len(self.headers) >= self.max_headers:
            raise LimitExceeded(431)
        self.framing_seen = True
        self.special_size += len(name) + len(value) + 4
        if kind == _CONTENT_LENGTH:
            self.content_length = int(value)
        elif kind == _TRANSFER_ENCODING:
            self.chunked = True  # checked in on_headers_complete, once all of them are in
            self.transfer_encoding = (
                value if not self.transfer_encoding else (self.transfer_encoding + b"," + value)
            )
        elif kind == _EXPECT:
            if value.lower() != b"100-continue":
                raise LimitExceeded(417)
            self.expect_continue = True
        elif kind == _CONNECTION:
            self.connection_value = (
                value if self.connection_value is None else (self.connection_value + b"," + value)
            )
        elif kind == _UPGRADE:
            self.upgrade_value = (
                value if self.upgrade_value is None else self.upgrade_value + b"," + value
            )
        elif kind == _XFF:
            self.x_forwarded_for = (
                value if self.x_forwarded_for is None else (self.x_forwarded_for + b", " + value)
            )
        elif kind == _XRI and self.x_real_ip is None:
            self.x_real_ip = value

    def on_headers_complete(self) -> None:
        if self.priming:
            return
        parser = self.parser
        self.head_started = 0.0
        if self.received - self.head_from > self.max_head_size:
            self._check_head_size()  # only when the cheap bound cannot vouch for the head
        method = parser.get_method()
        if method == b"CONNECT":
            # A tunnel is no reverse proxy's business, and llhttp reads whatever follows as
            # tunnel data; nginx answers 405 too. Closing ends the ambiguity.
            raise LimitExceeded(405)
        url = self.url
        if _HASH in url:
            raise LimitExceeded(400)
        host = self.host
        if url[0] == _SLASH:
            if _QUESTION_MARK in url:  # a memchr; find() would parse its arguments first
                mark = url.find(b"?")
                path, query = url[:mark], url[mark + 1 :]
            else:
                path, query = url, b""
        else:
            path, query, host = self._absolute_target(url, host)
        # Without a Connection or Proxy-Connection header (both set framing_seen), llhttp keeps
        # an HTTP/1.1 request alive and no other (it takes 1.0, 1.1, 0.9 and 2.0): the version
        # string is built only when in doubt.
        keep_alive = parser.should_keep_alive()
        http_10 = False
        if not keep_alive or self.framing_seen:
            version = parser.get_http_version()
            http_10 = version == "1.0"
            if not http_10 and version != "1.1":
                # llhttp also takes 0.9 and 2.0 in a request line; both would need other
                # framing. 505 as nginx answers a major version above 1 (RFC 9110 §15.6.6).
                raise LimitExceeded(505)
        conn = self.conn
        if not host:
            if not http_10:
                raise LimitExceeded(400)  # HTTP/1.1 requires Host (RFC 9112 §3.2)
        elif host != conn.valid_host:
            # Checked once per connection and Host: keep-alive clients repeat the same one.
            if host.translate(None, HOST_BYTES):
                raise LimitExceeded(400)  # an invalid Host (RFC 9112 §3.2)
            conn.accept_host(host)
        server = conn.server
        exchange = Exchange(
            conn, method, path, query, host, self.headers, keep_alive and not conn.drain_since
        )
        if self.framing_seen or http_10:
            self._request_framing(exchange, http_10)
        server.requests_total += 1
        self.parsing = exchange
        conn.request_parsed(exchange)

    def _request_framing(self, exchange: Exchange, http_10: bool) -> None:
        """What the headers kept aside say about the request: body, version, hop-by-hop."""
        exchange.http_10 = http_10
        exchange.x_forwarded_for = self.x_forwarded_for
        if self.x_real_ip is not None:
            exchange.x_real_ip = self.x_real_ip
        if self.connection_value is not None:
            listed = connection_tokens(self.connection_value)
            if listed:
                exchange.headers = [h for h in exchange.headers if h[0] not in listed]
        content_length = self.content_length
        exchange.content_length = content_length  # -1 when absent; an explicit 0 is forwarded
        upgrade = self.upgrade_value
        if (
            upgrade is not None
            and not self.chunked
            and not http_10
            and upgrade.strip(b" \t").lower() == b"websocket"
            and self.parser.should_upgrade()
        ):
            # Kong proxies Upgrade: websocket (only that); a chunked body is not offered
            # (its end is the parser's to find, and llhttp skips an upgrade's body)
            exchange.upgrade = True
        if self.chunked:
            self._check_transfer_encoding(http_10)
            body_mode = BODY_CHUNKED
            self.chunked_body = exchange
            self.chunk_mark = -1
            self.chunk_excess = 0
        elif content_length > 0:
            body_mode = BODY_LENGTH
        else:
            return
        if self.max_body_size and content_length > self.max_body_size:
            raise LimitExceeded(413)
        exchange.expect_body(body_mode, self.expect_continue)
        if self.parser.should_upgrade():
            self.upgrade_body = exchange  # the parser will skip this body: see restart

    def _check_transfer_encoding(self, http_10: bool) -> None:
        """Only a lone `chunked` is a body framing the gateway forwards (as nginx and h11 do).

        llhttp already rejects CL with TE, a repeated `chunked` and a `chunked` that is not
        last, but lets `gzip` or `identity` through to the body, after the handler would run.
        """
        if http_10:
            # RFC 9112 §6.1: TE in HTTP/1.0 means faulty framing; nginx answers 400
            raise LimitExceeded(400)
        coding = self.transfer_encoding.strip(b" \t").lower()
        if coding == b"chunked":
            return
        if coding.rpartition(b",")[2].strip(b" \t") == b"chunked":
            # a transfer coding under the chunked one (gzip, chunked): nginx and h11 answer 501;
            # re-chunking it would hand the upstream gzip bytes it has no way to know of
            raise LimitExceeded(501)
        raise LimitExceeded(400)  # RFC 9112 §6.3: without a final chunked, no framing

    def _check_head_size(self) -> None:
        size = len(self.url) + len(self.host) + self.special_size
        for name, value in self.headers:
            size += len(name) + len(value) + 4  # ": " and CRLF
        if size > self.max_head_size:
            raise LimitExceeded(431)

    @staticmethod
    def _absolute_target(url: bytes, host: bytes) -> tuple[bytes, bytes, bytes]:
        """Absolute-form targets (RFC 9112 §3.2.2) are normalised: their authority wins."""
        if url == b"*":
            raise LimitExceeded(400)
        try:
            # what httptools really gives: any part may be missing (its stub says otherwise)
            parsed = cast(_ParsedUrl, httptools.parse_url(url))
        except httptools.HttpParserInvalidURLError:
            raise LimitExceeded(400) from None
        if parsed.schema not in (b"http", b"https") or not parsed.host:
            raise LimitExceeded(400)
        authority = parsed.host if parsed.port is None else b"%b:%d" % (parsed.host, parsed.port)
        return parsed.path or b"/", parsed.query or b"", authority

    def on_body(self, body: bytes) -> None:
        exchange = self.parsing
        if exchange is not None:
            max_body = self.max_body_size
            if max_body and exchange.body_received + len(body) > max_body and not exchange.answered:
                raise LimitExceeded(413)
            exchange.on_request_body(body)

    def on_chunk_header(self) -> None:
        self.chunks += 1  # for the allowance in check_chunks

    def on_message_complete(self) -> None:
        exchange = self.parsing
        if exchange is not None and not exchange.request_complete:
            if exchange is self.upgrade_body:
                return  # only its head was read; the primed parser reads the body
            exchange.on_request_complete()

    def check_chunks(self) -> int:
        """Bound the non-data bytes of the chunked body being read (CHUNK_EXCESS_LIMIT).

        Measured between the ends of reads, from the end of the read that completed the head:
        as long as the body is incomplete, every byte read since then belongs to it.
        """
        exchange = self.chunked_body
        assert exchange is not None
        if exchange.request_complete or self.conn.ending:
            self.chunked_body = None
            return 0
        data = exchange.body_received
        if self.chunk_mark >= 0:
            overhead = self.received - self.chunk_mark - (data - self.chunk_data_mark)
            allowance = CHUNK_OVERHEAD_PER_CHUNK * self.chunks + 2 * (data - self.chunk_data_mark)
            # like Go's, the excess never goes below zero: data earns no credit for later abuse
            self.chunk_excess = max(0, self.chunk_excess + overhead - allowance)
            if self.chunk_excess > CHUNK_EXCESS_LIMIT:
                self.chunked_body = None
                return 400
        self.chunk_mark = self.received
        self.chunk_data_mark = data
        self.chunks = 0
        return 0
