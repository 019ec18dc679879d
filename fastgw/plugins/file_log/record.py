"""Kong's log record (kong.log.serialize) of one finished request, secrets redacted. Pure.

Field names and shapes as Kong's: request {id, uri, url, querystring, method, headers, size},
upstream_uri, upstream_status, response {status, headers, size}, latencies {kong, proxy,
request, receive} in ms, route, service, client_ip, started_at (epoch ms), source, workspace
and workspace_name. Not there yet: `tries` (no balancer), `consumer` (no consumers), `tls`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl, quote

from fastgw.pipeline import LogContext, RouteInfo

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


def header_table(
    pairs: Iterable[tuple[str, str]], redact: frozenset[str]
) -> dict[str, str | list[str]]:
    """Kong's shape: one value, or a list when a name repeats; names lower case."""
    table: dict[str, str | list[str]] = {}
    for name, value in pairs:
        if name in redact:
            value = REDACTED
        seen = table.get(name)
        if seen is None:
            table[name] = value
        elif isinstance(seen, list):
            seen.append(value)
        else:
            table[name] = [seen, value]
    return table


def response_pairs(fields: bytes) -> list[tuple[str, str]]:
    """The upstream's header lines (b"name: value\\r\\n"...) as (name, value)."""
    pairs = []
    for line in fields.split(b"\r\n"):
        name, colon, value = line.partition(b":")
        if colon:
            pairs.append((_text(name.strip()).lower(), _text(value.strip())))
    return pairs


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


def _ms(seconds: float) -> int:
    return int(seconds * 1000 + 0.5)


def build(
    ctx: LogContext,
    route: RouteInfo,
    epoch_offset: float,
    entities: tuple[dict[str, Any] | None, dict[str, Any] | None],
) -> dict[str, Any]:
    """The record of `ctx`. `epoch_offset` turns its monotonic times into epoch seconds;
    `entities` is (service, route) as `entity` gives them (prepared once per route)."""
    query, querystring = redact_query(ctx.query)
    path = _text(ctx.path)
    uri = f"{path}?{query}" if query else path
    host = _text(ctx.host) or "localhost"  # as the client sent it, with its port
    redact = frozenset(_text(name) for name in route.sensitive_headers)
    upstream_query = redact_query(ctx.query)[0] if ctx.query else ""
    upstream_uri = _text(ctx.upstream_path)
    if upstream_query:
        upstream_uri = f"{upstream_uri}?{upstream_query}"
    started, finished = ctx.started_at, ctx.finished_at
    sent = ctx.sent_at or started
    answered = ctx.response_at
    proxied = not ctx.responded and answered > 0.0
    if ctx.responded:
        response_headers = header_table(
            ((_text(name).lower(), _text(value)) for name, value in ctx.local_headers),
            REDACTED_RESPONSE_HEADERS,
        )
    else:
        response_headers = header_table(
            response_pairs(ctx.response_fields), REDACTED_RESPONSE_HEADERS
        )
    record: dict[str, Any] = {
        "request": {
            "id": "",
            "uri": uri,
            "url": f"http://{host}{uri}",
            "querystring": querystring,
            "method": _text(ctx.method),
            "headers": header_table(
                ((_text(name), _text(value)) for name, value in ctx.headers), redact
            ),
            "size": ctx.request_size + ctx.body_received,
        },
        "upstream_uri": upstream_uri if proxied else "",
        "upstream_status": str(ctx.response_status) if proxied else "",
        "response": {
            "status": ctx.response_status,
            "headers": response_headers,
            "size": ctx.response_size,
        },
        "latencies": {
            "kong": _ms((sent if proxied else finished) - started),
            "proxy": _ms(answered - sent) if proxied else -1,
            "request": _ms(finished - started),
            "receive": _ms(finished - answered) if proxied else 0,
        },
        "client_ip": ctx.client_ip,
        "started_at": int((started + epoch_offset) * 1000),
        "source": "upstream" if proxied else "kong",
        "workspace_name": WORKSPACE,
    }
    service, route_entity = entities
    if route_entity is not None:
        record["route"] = route_entity
    if service is not None:
        record["service"] = service
    return record
