"""Kong's log record (kong.log.serialize) of one finished request, secrets redacted. Pure.

Field names and shapes as Kong's: request {id, uri, url, querystring, method, headers, size},
upstream_uri, upstream_status, response {status, headers, size}, latencies {kong, proxy,
request, receive} in ms, route, service, client_ip, started_at (epoch ms), source, workspace
and workspace_name; `consumer` and `authenticated_entity` {id, consumer_id} when a plugin
authenticated the request. Not recorded yet: `tries` (the balancer's attempts), `tls`.

Compiled (build_info.COMPILED_MODULES): with file-log on it runs once per request.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl, quote

import orjson

from fastgw.plugins.api import Authenticated, LogContext, RouteInfo

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
    table: dict[str, Any] = {n.decode("latin-1"): v.decode("latin-1") for n, v in headers}
    if len(table) != len(headers):  # a repeated name: the slow way, keeping every value
        return header_table(((_text(n), _text(v)) for n, v in headers), redact)
    for name in redact.intersection(table):
        table[name] = REDACTED
    return table


def response_headers(fields: bytes) -> dict[str, str | list[str]]:
    """The upstream's forwarded header lines (b"name: value\\r\\n"...) as Kong tables them.

    One pass, no intermediate pairs: this runs for every proxied request file-log records.
    llhttp refused whitespace before a colon, so a name ends exactly there."""
    table: dict[str, str | list[str]] = {}
    for line in fields.decode("latin-1").split("\r\n"):
        name, colon, value = line.partition(":")
        if not colon:
            continue
        name = name.lower()
        _add(table, name, REDACTED if name in REDACTED_RESPONSE_HEADERS else value.strip())
    return table


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
        if value is not None and value != "":
            result[name] = list(value) if isinstance(value, tuple) else value
    return result


SERVICE_FIELDS = (
    "name", "protocol", "host", "port", "path", "retries",
    "connect_timeout", "write_timeout", "read_timeout",
)  # fmt: skip
ROUTE_FIELDS = ("name", "paths", "hosts", "methods", "strip_path", "preserve_host")


def build(ctx: LogContext, epoch_offset: float, prepared: Prepared) -> dict[str, Any]:
    """The record of `ctx` without its route's part (`line` adds it). `epoch_offset` turns
    its monotonic times into epoch seconds; `prepared` is what was made of its route, once."""
    query, querystring = redact_query(ctx.query) if ctx.query else ("", {})
    path = ctx.path.decode("latin-1")
    uri = f"{path}?{query}" if query else path
    host = ctx.host.decode("latin-1") or "localhost"  # as the client sent it, with its port
    started, finished = ctx.started_at, ctx.finished_at
    sent = ctx.sent_at or started
    answered = ctx.response_at
    proxied = not ctx.responded and answered > 0.0
    status = ctx.response_status
    if ctx.responded:
        response_table = header_table(
            ((_text(name).lower(), _text(value)) for name, value in ctx.local_headers),
            REDACTED_RESPONSE_HEADERS,
        )
    else:
        response_table = response_headers(ctx.response_fields)
    if proxied:
        upstream_uri = ctx.upstream_path.decode("latin-1")
        if query:
            upstream_uri = f"{upstream_uri}?{query}"
        latencies = {
            "kong": int((sent - started) * 1000 + 0.5),
            "proxy": int((answered - sent) * 1000 + 0.5),
            "request": int((finished - started) * 1000 + 0.5),
            "receive": int((finished - answered) * 1000 + 0.5),
        }
    else:
        upstream_uri = ""
        local = int((finished - started) * 1000 + 0.5)
        latencies = {"kong": local, "proxy": -1, "request": local, "receive": 0}
    record: dict[str, Any] = {
        "request": {
            "id": "",
            "uri": uri,
            "url": f"http://{host}{uri}",
            "querystring": querystring,
            "method": ctx.method.decode("latin-1"),
            "headers": request_headers(ctx.headers, prepared.redact),
            "size": ctx.request_size + ctx.body_received,
        },
        "upstream_uri": upstream_uri,
        "upstream_status": str(status) if proxied else "",
        "response": {"status": status, "headers": response_table, "size": ctx.response_size},
        "latencies": latencies,
        "client_ip": ctx.client_ip,
        "started_at": int((started + epoch_offset) * 1000),
        "source": "upstream" if proxied else "kong",
        "workspace_name": WORKSPACE,
    }
    principal = ctx.principal
    if isinstance(principal, Authenticated):
        identity(record, principal)
    return record


def identity(record: dict[str, Any], who: Authenticated) -> None:
    """Kong's `consumer` (the entity) and `authenticated_entity` (the credential's id and its
    consumer's), for an authenticated request."""
    consumer = who.consumer
    if consumer is not None:
        entry: dict[str, Any] = {"id": consumer.id}
        if consumer.username is not None:
            entry["username"] = consumer.username
        if consumer.custom_id is not None:
            entry["custom_id"] = consumer.custom_id
        if consumer.tags:
            entry["tags"] = list(consumer.tags)
        record["consumer"] = entry
    credential = who.credential
    if credential is not None:
        entity: dict[str, Any] = {}
        if credential.id:
            entity["id"] = credential.id
        consumer_id = credential.consumer_id or (consumer.id if consumer is not None else None)
        if consumer_id is not None:
            entity["consumer_id"] = consumer_id
        record["authenticated_entity"] = entity


def line(ctx: LogContext, epoch_offset: float, prepared: Prepared) -> bytes:
    """The record of `ctx` as one JSON line (without its newline): the request's part
    serialized, the route's part (serialized once, in `prepared`) spliced on."""
    return orjson.dumps(build(ctx, epoch_offset, prepared))[:-1] + prepared.tail


class Prepared:
    """What a record needs of its route, made once per route: Kong's route and service
    entities (serialized: the record's last fields) and the request headers to redact."""

    __slots__ = ("redact", "tail")

    def __init__(self, route: RouteInfo) -> None:
        entities = {
            "route": entity(route.route, ROUTE_FIELDS),
            "service": entity(route.service, SERVICE_FIELDS),
        }
        present = {name: value for name, value in entities.items() if value is not None}
        self.tail = b"," + orjson.dumps(present)[1:] if present else b"}"
        self.redact = frozenset(_text(name) for name in route.sensitive_headers)
