"""Kong's log record as one JSON line, the fast way: the route's part serialized once, the
request's own bytes spliced into a fixed skeleton after one check that they need no escaping.

A record is the same for every request on a route but for a dozen values, most of them bytes
the request already holds (path, header names and values, the upstream's header lines). They
go into the line as they are when none holds a byte JSON would escape (a control, '"', '\\',
or a byte >= 0x80, which the record writes as its Latin-1 character): one translate over them
all decides. Otherwise, and for the rare shapes (a header name given twice, serialize values beyond
plain top-level fields, a context that is not the wire's own exchange), the line is
record.py's, made the reference way; the two write the same bytes
(tests/unit/test_kong_log_line.py holds them to it).

Why it looks the way it does (compiled, build_info.COMPILED_MODULES; instructions counted with
bench/instructions.py --oidc --ops): a `b"...%s...%d" % (...)` of bytes and ints compiles to one
allocation and copies; a method of bytes that mypyc has no primitive for (find, split, lower)
costs ~770 instructions, so the upstream's lines are searched as a Latin-1 str (same offsets)
and sliced as bytes; the exchange's fields are read from the `Exchange` itself, not through the
LogContext protocol (~180 instructions a read).

Compiled (build_info.COMPILED_MODULES): it runs once per logged request.
"""

from __future__ import annotations

import time
from typing import Final

import orjson

from fastgw.http.exchange import Exchange
from fastgw.plugins.api import Authenticated, LogContext, RouteInfo, serialize_values
from fastgw.plugins.kong_log.record import (
    RECORD_KEYS,
    RouteRecord,
    identity,
    ms,
    redact_query,
    slow_line,
)

# Up to this many header names, a repeated one is found by comparing them pairwise.
FEW_NAMES: Final = 12
# How often (in seconds of the requests' own clock) the wall clock's offset is read again.
EPOCH_RECHECK: Final = 1.0
# Every byte that cannot stand as it is inside a JSON string (controls, '"', '\\', and bytes
# >= 0x80, which the record writes as their Latin-1 characters in UTF-8) becomes another byte,
# every other byte itself: a piece is safe when it translates to itself.
_UNSAFE: Final = bytes(
    (1 if byte == 0 else 0) if byte < 0x20 or byte in (0x22, 0x5C) or byte >= 0x80 else byte
    for byte in range(256)
)
# ASCII upper case to lower case, every other byte itself (header names).
_LOWER: Final = bytes(byte | 0x20 if 0x41 <= byte <= 0x5A else byte for byte in range(256))
# The upstream's header block lowered and checked in one translate: a byte that cannot stand
# in a JSON string becomes NUL (CR and LF pass: they end its lines), upper case becomes lower.
_LOWER_OR_NUL: Final = bytes(
    byte if byte in (0x0A, 0x0D) else 0 if _UNSAFE[byte] != byte else _LOWER[byte]
    for byte in range(256)
)
_CR: Final = 0x0D
_SPACE: Final = 0x20
_TAB: Final = 0x09
_SET_COOKIE: Final = b"set-cookie"


def route_record(route: RouteInfo) -> RouteRecord:
    """The route's record parts, made on its first logged request."""
    record = route.log_record
    if isinstance(record, RouteRecord):
        return record
    made = RouteRecord(route)
    route.log_record = made
    return made


def record_line(ctx: LogContext, route: RouteInfo) -> bytes:
    """Kong's record of the finished request `ctx` on `route` as one JSON line (no newline)."""
    record = route_record(route)
    if record.last_ctx is ctx:
        return record.last_line  # another logger on the route asked first
    finished = ctx.finished_at
    if finished - record.epoch_checked > EPOCH_RECHECK:
        record.epoch_offset = time.time() - time.monotonic()
        record.epoch_checked = finished
    line = fast_line(ctx, record) if isinstance(ctx, Exchange) else None
    if line is None:
        line = slow_line(ctx, record.epoch_offset, record)
    record.last_ctx = ctx
    record.last_line = line
    return line


def safe(piece: bytes) -> bool:
    """Whether `piece` can stand inside a JSON string as it is."""
    return piece.translate(_UNSAFE) == piece


def repeats(names: list[bytes]) -> bool:
    """Whether a name is given twice: compared pairwise while they are few (cheaper than
    hashing each), through a set beyond."""
    count = len(names)
    if count > FEW_NAMES:
        return len(set(names)) != count
    for index in range(1, count):
        name = names[index]
        for earlier in range(index):
            if names[earlier] == name:
                return True
    return False


def request_fields(
    headers: list[tuple[bytes, bytes]], redact: frozenset[bytes], check: list[bytes]
) -> bytes | None:
    """The request's headers as a JSON object's members (what to check added to `check`), or
    None when a name repeats."""
    names: list[bytes] = []
    members: list[bytes] = []
    for name, value in headers:
        names.append(name)
        check.append(name)
        if name in redact:
            members.append(b'"%s":"REDACTED"' % name)
        else:
            check.append(value)
            members.append(b'"%s":"%s"' % (name, value))
    return None if repeats(names) else b",".join(members)


def upstream_fields(fields: bytes) -> bytes | None:
    """The upstream's forwarded header lines as a JSON object's members (names lower case,
    values without their whitespace, Set-Cookie redacted), or None (a repeated name, a byte to
    escape, a CR or LF that does not end a line)."""
    if not fields:
        return b""
    # the block is lowered and checked at once: a byte to escape became NUL; CR and LF passed,
    # and every CR must then be one that ends a line (each LF below is checked to follow one)
    lowered = fields.translate(_LOWER_OR_NUL)
    text = lowered.decode("latin-1")  # one character per byte: the offsets are the bytes'
    if "\x00" in text:
        return None
    names: list[bytes] = []
    members: list[bytes] = []
    start = 0
    size = len(text)
    lines = 0
    while start < size:
        newline = text.find("\n", start)  # one character: the cheaper search
        if newline < 0:
            newline = end = size
        else:
            end = newline - 1
            if end < start or fields[end] != _CR:
                return None  # a bare LF: the reference way tables what is there
            lines += 1
        colon = text.find(":", start, end)
        begin = start
        start = newline + 1
        if colon < 0:
            continue
        name = lowered[begin:colon]
        names.append(name)
        if name == _SET_COOKIE:
            members.append(b'"set-cookie":"REDACTED"')
            continue
        first = colon + 1
        while first < end and (fields[first] == _SPACE or fields[first] == _TAB):
            first += 1
        while end > first and (fields[end - 1] == _SPACE or fields[end - 1] == _TAB):
            end -= 1
        members.append(b'"%s":"%s"' % (name, fields[first:end]))
    if text.count("\r") != lines or repeats(names):
        return None  # a CR inside a line, a name given twice
    return b",".join(members)


def local_fields(headers: list[tuple[bytes, bytes]], check: list[bytes]) -> bytes | None:
    """A local answer's headers as a JSON object's members (what to check added to `check`),
    or None when a name repeats."""
    names: list[bytes] = []
    members: list[bytes] = []
    for raw_name, value in headers:
        name = raw_name.translate(_LOWER)
        names.append(name)
        check.append(name)
        if name == _SET_COOKIE:
            members.append(b'"set-cookie":"REDACTED"')
        else:
            check.append(value)
            members.append(b'"%s":"%s"' % (name, value))
    return None if repeats(names) else b",".join(members)


def identity_fields(ctx: Exchange) -> bytes:
    """Kong's consumer and authenticated_entity as the line's members (b"" for none)."""
    if not isinstance(ctx.principal, Authenticated):
        return b""
    consumer, authenticated_entity = identity(ctx)
    members = b""
    if consumer is not None:
        members += b',"consumer":' + orjson.dumps(consumer)
    if authenticated_entity is not None:
        members += b',"authenticated_entity":' + orjson.dumps(authenticated_entity)
    return members


def value_fields(ctx: Exchange) -> bytes | None:
    """The serialize values the plugins set as the line's members (b"" for none); None when
    one needs the reference way (a dotted or repeated key, one of Kong's own fields,
    "replace", a removal)."""
    if ctx.shared_values is None:
        return b""
    values = serialize_values(ctx)
    if not values:
        return b""
    plain: dict[str, object] = {}
    for key, value, mode in values:
        if (
            key in plain
            or key in RECORD_KEYS
            or "." in key
            or value is None
            or (mode != "set" and mode != "add")
        ):
            return None
        plain[key] = value
    return b"," + orjson.dumps(plain)[1:-1]


def fast_line(ctx: Exchange, record: RouteRecord) -> bytes | None:
    """The line with the request's bytes spliced in, or None when they need escaping."""
    values = value_fields(ctx)
    if values is None:
        return None
    path = ctx.path
    host = ctx.host or b"localhost"  # as the client sent it, with its port
    method = ctx.method
    client_ip = ctx.client_ip.encode()
    # every piece of the request's own spliced in, checked at once at the end
    check = [path, host, method, client_ip]
    request_headers = request_fields(ctx.headers, record.redact_bytes, check)
    if request_headers is None:
        return None
    query_tail = b""
    querystring = b"{}"
    if ctx.query:
        logged, table = redact_query(ctx.query)
        query_tail = b"?" + logged.encode()  # percent-encoded: nothing to escape
        querystring = orjson.dumps(table)
    request = (
        b'{"request":{"id":"","uri":"%s%s","url":"http://%s%s%s","querystring":%s,'
        b'"method":"%s","headers":{%s},"size":%d},"upstream_uri":'
        % (
            path,
            query_tail,
            host,
            path,
            query_tail,
            querystring,
            method,
            request_headers,
            ctx.request_size + ctx.body_received,
        )
    )
    if not ctx.responded and ctx.response_at > 0.0:  # proxied: the upstream answered
        response = proxied_part(ctx, query_tail, check)
        source = b"upstream"
    else:
        response = local_part(ctx, check)
        source = b"kong"
    if response is None or not safe(b"".join(check)):
        return None
    return (
        b'%s%s"client_ip":"%s","started_at":%d,"source":"%s","workspace_name":"default"%s%s%s}'
        % (
            request,
            response,
            client_ip,
            int((ctx.started_at + record.epoch_offset) * 1000),
            source,
            identity_fields(ctx),
            record.entities_part,
            values,
        )
    )


def proxied_part(ctx: Exchange, query_tail: bytes, check: list[bytes]) -> bytes | None:
    """From upstream_uri to latencies, for a request the upstream answered."""
    response_headers = upstream_fields(ctx.response_fields)
    if response_headers is None:
        return None
    upstream_path = ctx.upstream_path
    check.append(upstream_path)
    started = ctx.started_at
    sent = ctx.sent_at or started
    answered = ctx.response_at
    finished = ctx.finished_at
    status = ctx.response_status
    return (
        b'"%s%s","upstream_status":"%d","response":{"status":%d,"headers":{%s},"size":%d},'
        b'"latencies":{"kong":%d,"proxy":%d,"request":%d,"receive":%d},'
        % (
            upstream_path,
            query_tail,
            status,
            status,
            response_headers,
            ctx.response_size,
            ms(sent - started),
            ms(answered - sent),
            ms(finished - started),
            ms(finished - answered),
        )
    )


def local_part(ctx: Exchange, check: list[bytes]) -> bytes | None:
    """From upstream_uri to latencies, for a request the gateway answered itself."""
    response_headers = local_fields(list(ctx.local_headers), check)
    if response_headers is None:
        return None
    local = ms(ctx.finished_at - ctx.started_at)
    return (
        b'"","upstream_status":"","response":{"status":%d,"headers":{%s},"size":%d},'
        b'"latencies":{"kong":%d,"proxy":-1,"request":%d,"receive":0},'
        % (ctx.response_status, response_headers, ctx.response_size, local, local)
    )
