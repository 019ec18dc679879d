"""Kong's log record (kong.log.serialize) of one finished request as data, secrets redacted.

The reference: `build` makes the record as Python values, and `line.py`'s fast path must write
exactly what `orjson.dumps(build(...))` writes (tests/unit/test_kong_log_line.py holds it to
that). Field names and shapes as Kong's: request {id, uri, url, querystring, method, headers,
size}, upstream_uri, upstream_status, response {status, headers, size}, latencies {kong, proxy,
request, receive} in ms, client_ip, started_at (epoch ms), source, workspace_name, consumer and
authenticated_entity (when a plugin authenticated the request), what plugins set with
`set_serialize_value` (correlation-id's `correlation_id`), route and service. Not recorded yet:
`tries` (the balancer's attempts), `request.tls`.

Compiled (build_info.COMPILED_MODULES): the slow path of every record that needs escaping.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl, quote

import orjson

from fastgw.plugins.api import Authenticated, LogContext, RouteInfo, serialize_values

REDACTED = "REDACTED"  # Kong's word for a redacted header
WORKSPACE = "default"
# Query parameters whose values never reach a log line: OAuth client secrets and tokens (the
# openid-connect plugin reads credentials from the query), and the usual secret carriers.
SECRET_PARAMETERS = frozenset(
    {
        "client_secret",
        "client_assertion",
        "access_token",
        "id_token",
        "refresh_token",
        "token",
        "password",
        "api_key",
        "apikey",
        "secret",
    }
)
# Response headers never logged as they are.
REDACTED_RESPONSE_HEADERS = frozenset({"set-cookie"})
# The record's own top-level keys: a serialize value under one of them replaces Kong's field.
RECORD_KEYS = frozenset(
    {
        "request", "upstream_uri", "upstream_status", "response", "latencies", "tries",
        "authenticated_entity", "route", "service", "consumer", "client_ip", "started_at",
        "source", "workspace", "workspace_name",
    }
)  # fmt: skip
SERVICE_FIELDS = (
    "name", "protocol", "host", "port", "path", "retries",
    "connect_timeout", "write_timeout", "read_timeout",
)  # fmt: skip
ROUTE_FIELDS = ("name", "paths", "hosts", "methods", "strip_path", "preserve_host")
CONSUMER_FIELDS = ("id", "username", "custom_id", "tags")


def _text(value: bytes) -> str:
    return value.decode("latin-1")


def _add(table: dict[str, str | list[str]], name: str, value: str) -> None:
    """Kong's shape: one value, or a list once a name repeats."""
    seen = table.get(name)
    if seen is None:
        table[name] = value
    elif isinstance(seen, list):
        seen.append(value)
    else:
        table[name] = [seen, value]


def header_table(
    pairs: Iterable[tuple[str, str]], redact: frozenset[str]
) -> dict[str, str | list[str]]:
    """Kong's shape: one value, or a list when a name repeats; names lower case."""
    table: dict[str, str | list[str]] = {}
    for name, value in pairs:
        _add(table, name, REDACTED if name in redact else value)
    return table


def request_headers(
    headers: list[tuple[bytes, bytes]], redact: frozenset[str]
) -> dict[str, str | list[str]]:
    """The request's headers (names already lower case) as Kong tables them, redacted."""
    return header_table(((_text(n), _text(v)) for n, v in headers), redact)


def strip_value(value: bytes) -> bytes:
    """A field value without the whitespace around it (RFC 9110 §5.5: OWS is not the value)."""
    start = 0
    end = len(value)
    while start < end and value[start] in (0x20, 0x09):
        start += 1
    while end > start and value[end - 1] in (0x20, 0x09):
        end -= 1
    return value[start:end]


def response_headers(fields: bytes) -> dict[str, str | list[str]]:
    """The upstream's forwarded header lines (b"name: value\\r\\n"...) as Kong tables them.

    llhttp refused whitespace before a colon, so a name ends exactly there."""
    table: dict[str, str | list[str]] = {}
    for line in fields.split(b"\r\n"):
        colon = line.find(b":")
        if colon < 0:
            continue
        name = _text(line[:colon].lower())
        value = _text(strip_value(line[colon + 1 :]))
        _add(table, name, REDACTED if name in REDACTED_RESPONSE_HEADERS else value)
    return table


def local_response_headers(headers: Iterable[tuple[bytes, bytes]]) -> dict[str, str | list[str]]:
    """A local answer's headers (any case) as Kong tables them."""
    return header_table(
        ((_text(name).lower(), _text(value)) for name, value in headers),
        REDACTED_RESPONSE_HEADERS,
    )


def redact_query(query: bytes) -> tuple[str, dict[str, Any]]:
    """(the query as logged, Kong's querystring table); secret parameters' values replaced."""
    if not query:
        return "", {}
    table: dict[str, Any] = {}
    parts = []
    for name, value in parse_qsl(_text(query), keep_blank_values=True):
        if name.lower() in SECRET_PARAMETERS:
            value = REDACTED
        parts.append(f"{quote(name, safe='')}={quote(value, safe='')}")
        seen = table.get(name)
        if seen is None:
            table[name] = value if value else True  # Kong: a bare "?flag" is true
        elif isinstance(seen, list):
            seen.append(value)
        else:
            table[name] = [seen, value]
    return "&".join(parts), table


def entity(config: Any, fields: tuple[str, ...]) -> dict[str, Any] | None:
    """A config entity as Kong serializes it: its fields, absent ones left out."""
    if config is None:
        return None
    result = {}
    for name in fields:
        value = getattr(config, name, None)
        if value is not None and value != "" and value != ():
            result[name] = list(value) if isinstance(value, tuple) else value
    return result


def ms(seconds: float) -> int:
    """A duration in whole milliseconds, rounded as Kong's latencies are."""
    return int(seconds * 1000 + 0.5)


def latencies(ctx: LogContext, proxied: bool) -> tuple[int, int, int, int]:
    """Kong's (kong, proxy, request, receive) in ms; proxy is -1 when no upstream answered."""
    started, finished = ctx.started_at, ctx.finished_at
    if proxied:
        sent = ctx.sent_at or started
        answered = ctx.response_at
        return (
            ms(sent - started),
            ms(answered - sent),
            ms(finished - started),
            ms(finished - answered),
        )
    local = ms(finished - started)
    return local, -1, local, 0


def proxied(ctx: LogContext) -> bool:
    """Whether the upstream answered (Kong's source "upstream")."""
    return not ctx.responded and ctx.response_at > 0.0


def identity(ctx: LogContext) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """Kong's (consumer, authenticated_entity) of the request, or None for each."""
    principal = ctx.principal
    if not isinstance(principal, Authenticated):
        return None, None
    consumer = entity(principal.consumer, CONSUMER_FIELDS)
    credential = principal.credential
    if credential is None:
        return consumer, None
    consumer_id = credential.consumer_id
    if consumer_id is None and principal.consumer is not None:
        consumer_id = principal.consumer.id
    found: dict[str, Any] = {"id": credential.id}
    if consumer_id is not None:
        found["consumer_id"] = consumer_id
    return consumer, found


def build(ctx: LogContext, epoch_offset: float, route: RouteRecord) -> dict[str, Any]:
    """The record of `ctx`. `epoch_offset` turns its monotonic times into epoch seconds."""
    query, querystring = redact_query(ctx.query) if ctx.query else ("", {})
    path = _text(ctx.path)
    uri = f"{path}?{query}" if query else path
    host = _text(ctx.host) or "localhost"  # as the client sent it, with its port
    upstream = proxied(ctx)
    status = ctx.response_status
    if ctx.responded:
        response_table = local_response_headers(ctx.local_headers)
    else:
        response_table = response_headers(ctx.response_fields)
    upstream_uri = ""
    if upstream:
        upstream_uri = _text(ctx.upstream_path)
        if query:
            upstream_uri = f"{upstream_uri}?{query}"
    kong, proxy, request, receive = latencies(ctx, upstream)
    record: dict[str, Any] = {
        "request": {
            "id": "",
            "uri": uri,
            "url": f"http://{host}{uri}",
            "querystring": querystring,
            "method": _text(ctx.method),
            "headers": request_headers(ctx.headers, route.redact),
            "size": ctx.request_size + ctx.body_received,
        },
        "upstream_uri": upstream_uri,
        "upstream_status": str(status) if upstream else "",
        "response": {"status": status, "headers": response_table, "size": ctx.response_size},
        "latencies": {"kong": kong, "proxy": proxy, "request": request, "receive": receive},
        "client_ip": ctx.client_ip,
        "started_at": int((ctx.started_at + epoch_offset) * 1000),
        "source": "upstream" if upstream else "kong",
        "workspace_name": WORKSPACE,
    }
    consumer, authenticated_entity = identity(ctx)
    if consumer is not None:
        record["consumer"] = consumer
    if authenticated_entity is not None:
        record["authenticated_entity"] = authenticated_entity
    record.update(route.entities)
    values = serialize_values(ctx)
    if values:
        apply_serialize_values(record, values)
    return record


def apply_serialize_values(record: dict[str, Any], values: list[tuple[str, object, str]]) -> None:
    """Kong's kong.log.set_serialize_value, applied in order: a dotted key names a nested field
    ("\\." a dot in a name); mode "set" always writes, "add" only a missing field, "replace"
    only an existing one; a value of None removes the field."""
    for key, value, mode in values:
        names = [name.replace("\0", ".") for name in key.replace("\\.", "\0").split(".")]
        node: Any = record
        for name in names[:-1]:
            child = node.get(name)
            if child is None:
                if mode == "replace":
                    node = None
                    break
                child = node[name] = {}
            if not isinstance(child, dict):
                node = None  # Kong raises; a log record is not worth an error
                break
            node = child
        if node is None:
            continue
        last = names[-1]
        present = last in node
        if mode == "set" or (mode == "add" and not present) or (mode == "replace" and present):
            if value is None:
                node.pop(last, None)
            else:
                node[last] = value


def slow_line(ctx: LogContext, epoch_offset: float, route: RouteRecord) -> bytes:
    """The record as one JSON line (no newline), the reference way."""
    return orjson.dumps(build(ctx, epoch_offset, route))


class RouteRecord:
    """What a record needs of its route, made once per route (and shared by every logger on
    it): Kong's route and service entities, serialized (the record's last fields), the
    request headers to redact, and the last line made (so two loggers on one route serialize
    a request once)."""

    __slots__ = (
        "entities",
        "entities_part",
        "epoch_checked",
        "epoch_offset",
        "last_ctx",
        "last_line",
        "redact",
        "redact_bytes",
    )

    def __init__(self, route: RouteInfo) -> None:
        entities: dict[str, Any] = {}
        for name, config, fields in (
            ("route", route.route, ROUTE_FIELDS),
            ("service", route.service, SERVICE_FIELDS),
        ):
            serialized = entity(config, fields)
            if serialized is not None:
                entities[name] = serialized
        self.entities = entities
        # the line's members for them: b',"route":{...},"service":{...}', or nothing
        self.entities_part = b"," + orjson.dumps(entities)[1:-1] if entities else b""
        self.redact_bytes = route.sensitive_headers
        self.redact = frozenset(_text(name) for name in route.sensitive_headers)
        # wall-clock time = monotonic time + offset, re-read once a second (NTP may slew it)
        self.epoch_offset = 0.0
        self.epoch_checked = float("-inf")
        self.last_ctx: object = None  # a strong reference: `is` cannot mistake a new request
        self.last_line = b""
