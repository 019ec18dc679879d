"""request-termination's access step (Kong's kong/plugins/request-termination/handler.lua): a
fixed answer, or with `echo` the request as Kong describes it, optionally only when the
`trigger` header or query argument is there.

Not compiled: the answer is made once at config load; only `echo` builds one per request.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Awaitable
from typing import Any, Final

import orjson

from fastgw.config.patterns import compile_path_regex, is_regex_path
from fastgw.http.responses import JSON_CONTENT_TYPE
from fastgw.plugins.api import Plugin, RequestContext
from fastgw.plugins.credential_args import body_args, body_media_type, form_args

PRIORITY: Final = 2  # Kong's
# Kong's own texts for these statuses (not the gateway's error texts: 503 differs)
DEFAULT_MESSAGES: Final = {
    401: "Unauthorized",
    404: "Not found",
    405: "Method not allowed",
    500: "An unexpected error occurred",
    502: "Bad Gateway",
    503: "Service unavailable",
}
# `echo` reads the request body up to this size (fastgw's bound; a bigger one is echoed
# without it, as Kong echoes none for a body it cannot read)
ECHO_BODY_LIMIT: Final = 1024 * 1024
_CONTENT_TYPE: Final = b"content-type"


class Answer:
    """The fixed answer: status, body, headers."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, body: bytes, headers: tuple[tuple[bytes, bytes], ...]) -> None:
        self.status = status
        self.body = body
        self.headers = headers


def fixed_answer(
    status: int, message: str | None, body: str | None, content_type: str | None
) -> Answer:
    """Kong's: `body` as it is (Content-Type only when given), else `{"message": ...}` with
    the message or Kong's text for the status, else no body."""
    if body:
        headers = ((_CONTENT_TYPE, content_type.encode()),) if content_type else ()
        return Answer(status, body.encode(), headers)
    text = message or DEFAULT_MESSAGES.get(status)
    if text is None:
        return Answer(status, b"", ())
    return Answer(status, orjson.dumps({"message": text}), ((_CONTENT_TYPE, JSON_CONTENT_TYPE),))


class RequestTermination(Plugin):
    name = "request-termination"
    priority = PRIORITY

    def __init__(
        self,
        answer: Answer,
        *,
        message: str | None = None,
        echo: bool = False,
        trigger: str | None = None,
        route: Any = None,
        service: Any = None,
    ) -> None:
        self._answer = answer
        self._message = message or DEFAULT_MESSAGES.get(answer.status)
        self._echo = echo
        self._trigger = trigger
        lower = trigger.lower() if trigger is not None else ""
        self._trigger_headers = tuple(
            dict.fromkeys((lower.encode(), lower.replace("_", "-").encode()))
        )
        self._route = route
        self._service = service
        paths = getattr(route, "paths", ())
        self._patterns = tuple(compile_path_regex(p) for p in paths if is_regex_path(p))

    def for_route(self, service: Any, route: Any) -> Plugin:
        """`echo` names the matched route and service."""
        if not self._echo:
            return self
        return RequestTermination(
            self._answer,
            message=self._message,
            echo=True,
            trigger=self._trigger,
            route=route,
            service=service,
        )

    def access(self, ctx: RequestContext) -> Awaitable[None] | None:
        if self._trigger is not None and not self._triggered(ctx):
            return None
        if self._echo:
            return self._echo_request(ctx)
        answer = self._answer
        ctx.respond(answer.status, answer.body, answer.headers)
        return None

    def _triggered(self, ctx: RequestContext) -> bool:
        """Kong: the trigger header (any case, "_" for "-"), or the query argument of that
        exact name, with a value (a bare `?name` counts)."""
        for name in self._trigger_headers:
            if ctx.get_header(name):
                return True
        if not ctx.query:
            return False
        value = form_args(ctx.query).get(self._trigger or "")
        return value is True or bool(value)

    async def _echo_request(self, ctx: RequestContext) -> None:
        raw = await ctx.read_body(ECHO_BODY_LIMIT) if ctx.has_body() else b""
        described = describe(ctx, raw, self._route, self._service, self._patterns)
        content: dict[str, Any] = {}
        if self._message is not None:
            content["message"] = self._message
        content.update(described)
        body = orjson.dumps(content)
        ctx.respond(self._answer.status, body, ((_CONTENT_TYPE, JSON_CONTENT_TYPE),))


def _headers(ctx: RequestContext) -> dict[str, Any]:
    table: dict[str, Any] = {}
    if ctx.host:
        table["host"] = ctx.host.decode("latin-1")
    for name, value in ctx.headers:
        text = value.decode("latin-1")
        key = name.decode("latin-1")
        seen = table.get(key)
        if seen is None:
            table[key] = text
        elif isinstance(seen, list):
            seen.append(text)
        else:
            table[key] = [seen, text]
    return table


def _host_and_port(host: str) -> tuple[str, str]:
    if host.startswith("["):  # an IPv6 literal
        end = host.find("]")
        rest = host[end + 1 :]
        return host[: end + 1], rest[1:] if rest.startswith(":") else ""
    name, colon, port = host.rpartition(":")
    return (name, port) if colon else (host, "")


def captures(path: bytes, patterns: tuple[re.Pattern[bytes], ...]) -> dict[str, Any]:
    """Kong's uri_captures: the groups of the route's regex path that matched (the whole match
    as "0"), by number and by name."""
    for pattern in patterns:
        found = pattern.match(path)
        if found is None:
            continue
        names = set(found.groupdict())
        unnamed = {"0": found.group(0).decode("utf-8", "surrogateescape")}
        for index, group in enumerate(found.groups(), 1):
            if group is not None:
                unnamed[str(index)] = group.decode("utf-8", "surrogateescape")
        named = {
            name: value.decode("utf-8", "surrogateescape")
            for name, value in found.groupdict().items()
            if value is not None and name in names
        }
        return {"named": named, "unnamed": unnamed}
    return {"named": {}, "unnamed": {}}


def describe(
    ctx: RequestContext,
    raw: bytes | None,
    route: Any,
    service: Any,
    patterns: tuple[re.Pattern[bytes], ...] = (),
) -> dict[str, Any]:
    """Kong's echo: the node, the request (scheme, host, port, headers, query, body, raw body,
    method, path, URI captures), the matched route and service."""
    # the connection (fastgw.http.exchange.ClientSide): TLS when it has a server name
    client = getattr(ctx, "client", None)
    scheme = "https" if getattr(client, "server_name", None) is not None else "http"
    host, port = _host_and_port(ctx.host.decode("latin-1"))
    request: dict[str, Any] = {
        "scheme": scheme,
        "host": host,
        "port": int(port) if port.isdigit() else (443 if scheme == "https" else 80),
        "headers": _headers(ctx),
        "query": form_args(ctx.query) if ctx.query else {},
        "raw_body": raw.decode("utf-8", "surrogateescape") if raw is not None else None,
        "method": ctx.method.decode("latin-1"),
        "path": ctx.path.decode("latin-1"),
        "uri_captures": captures(ctx.path, patterns),
    }
    media_type = body_media_type(ctx.get_header(_CONTENT_TYPE))
    if raw and media_type is not None:
        request["body"] = body_args(media_type, raw, ctx.get_header(_CONTENT_TYPE))
    described: dict[str, Any] = {
        "kong": {"worker_pid": os.getpid(), "hostname": socket.gethostname()},
        "request": request,
    }
    if route is not None:
        described["matched_route"] = _entity(route, ROUTE_FIELDS)
    if service is not None:
        described["matched_service"] = _entity(service, SERVICE_FIELDS)
    return described


ROUTE_FIELDS = (
    "name",
    "paths",
    "hosts",
    "methods",
    "protocols",
    "strip_path",
    "preserve_host",
    "regex_priority",
    "path_handling",
    "https_redirect_status_code",
)
SERVICE_FIELDS = (
    "name",
    "protocol",
    "host",
    "port",
    "path",
    "retries",
    "connect_timeout",
    "write_timeout",
    "read_timeout",
)


def _entity(entity: Any, fields: tuple[str, ...]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name in fields:
        value = getattr(entity, name, None)
        if value is not None and value != "":
            result[name] = list(value) if isinstance(value, tuple) else value
    return result
