"""The `http-log` config: Kong's keys and defaults (kong/plugins/http-log/schema.lua), read into
`HttpLogConfig`. The endpoint's credentials go into its Authorization header and nowhere else.

Kong's deprecated keys (retry_count, queue_size, flush_timeout) are accepted with Kong's
warnings; `ssl_verify` is Kong 3.15's; `client_certificate` (mutual TLS) is not supported yet.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

from fastgw.config.schema import (
    Boolean,
    Declared,
    Reader,
    Schema,
    Text,
    Unsupported,
    read_schema,
)
from fastgw.plugins.kong_log.settings import Milliseconds, QueueSettings, read_queue, refuse_lua

METHODS: Final = ("POST", "PUT", "PATCH")
CONTENT_TYPES: Final = ("application/json", "application/json; charset=utf-8")
DEFAULT_TIMEOUT_MS: Final = 10_000
DEFAULT_KEEPALIVE_MS: Final = 60_000
DEFAULT_PORTS: Final = {"http": 80, "https": 443}
# Kong's typedefs.header_name
_HEADER_NAME: Final = re.compile(r"^[a-zA-Z0-9_-]+$")
# headers the plugin sets itself (Kong's schema refuses them in `headers`)
_OWN_HEADERS: Final = {
    "host": "Host",
    "content-length": "Content-Length",
    "content-type": "Content-Type",
}


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where the records go: the URL the client is given (no credentials), Kong's Basic
    credentials from its user info, and a label safe for logs and metrics."""

    url: str  # scheme://host[:port]/path[?query], without user info
    label: str  # scheme://host:port: no user info, no path (a token may live there), no query
    authorization: str | None  # "Basic ..." from the user info, or None


@dataclass(frozen=True, slots=True)
class HttpLogConfig:
    endpoint: Endpoint
    method: str
    content_type: str
    timeout: float  # seconds
    keepalive: float  # seconds an idle connection is kept; 0: none
    headers: tuple[tuple[str, str], ...]
    queue: QueueSettings
    ssl_verify: bool


def parse_endpoint(url: str) -> Endpoint | str:
    """The endpoint of an http(s) URL, or why it is not one (Kong's typedefs.url messages)."""
    parts = urlsplit(url)
    if not parts.scheme:
        return "missing scheme in url"
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        return "must be an http or https URL"
    try:
        host = parts.hostname
        port = parts.port or DEFAULT_PORTS[scheme]
    except ValueError:
        return "could not parse url. invalid port"
    if not host:
        return "missing host in url"
    name = f"[{host}]" if ":" in host else host
    netloc = name if parts.port is None else f"{name}:{port}"
    target = parts.path or "/"
    if parts.query:
        target = f"{target}?{parts.query}"
    userinfo = parts.netloc.rpartition("@")[0] if "@" in parts.netloc else ""
    authorization = None
    if userinfo:
        # Kong sends the user info as written in the URL, base64'd
        authorization = "Basic " + base64.b64encode(userinfo.encode()).decode()
    return Endpoint(f"{scheme}://{netloc}{target}", f"{scheme}://{name}:{port}", authorization)


class EndpointUrl(Declared):
    """`http_endpoint`: required, an http(s) URL (None when absent or not one)."""

    __slots__ = ()

    def read(self, reader: Reader, key: str) -> Endpoint | None:
        value: str | None = reader.string(key, required=True)
        if value is None:
            return None
        endpoint = parse_endpoint(value)
        if isinstance(endpoint, str):
            reader.error(key, endpoint)  # the reason only: the URL may hold credentials
            return None
        return endpoint


class Headers(Declared):
    """`headers`: header name -> value (Kong's map of typedefs.header_name to string)."""

    __slots__ = ()

    def read(self, reader: Reader, key: str) -> tuple[tuple[str, str], ...]:
        inner = reader.mapping(key)
        headers = []
        for name, value in inner.raw.items():
            inner.ignore(str(name))
            if not isinstance(name, str) or not _HEADER_NAME.match(name):
                reader.error(
                    key,
                    f"bad header name '{name}', allowed characters are A-Z, a-z, 0-9, '_', and '-'",
                )
            elif name.lower() in _OWN_HEADERS:
                inner.error(name, f"cannot contain '{_OWN_HEADERS[name.lower()]}' header")
            elif not isinstance(value, str):
                inner.error(name, "must be a string")
            elif any(bad in value for bad in ("\r", "\n", "\0")):
                inner.error(name, "must not contain CR, LF or NUL")
            else:
                headers.append((name, value))
        return tuple(headers)


FIELDS: Final[dict[str, Declared]] = {
    "http_endpoint": EndpointUrl(),
    "method": Text("POST", one_of=METHODS),
    "content_type": Text("application/json", one_of=CONTENT_TYPES),
    "timeout": Milliseconds(DEFAULT_TIMEOUT_MS, positive=True),
    "keepalive": Milliseconds(DEFAULT_KEEPALIVE_MS, positive=False),
    "headers": Headers(),
    "ssl_verify": Boolean(False),  # Kong 3.15's: verify the endpoint's certificate
    "client_certificate": Unsupported("not supported yet (mutual TLS towards the endpoint)"),
}


def _values(reader: Reader, values: dict[str, Any]) -> dict[str, Any]:
    return values


_SCHEMA: Final = Schema(FIELDS, build=_values)


def read_config(reader: Reader) -> HttpLogConfig | None:
    """The config, or None when it has problems (recorded on `reader`)."""
    queue = read_queue(reader, "http-log")
    refuse_lua(reader)
    before = len(reader.problems)
    values = read_schema(reader, _SCHEMA)
    endpoint: Endpoint | None = values["http_endpoint"]
    headers: tuple[tuple[str, str], ...] = values["headers"]
    if (
        endpoint is not None
        and endpoint.authorization is not None
        and any(name.lower() == "authorization" for name, _ in headers)
    ):
        reader.error(
            "",
            "specifying both an 'Authorization' header and user info in 'http_endpoint' is "
            "not allowed",
        )
    if endpoint is None or len(reader.problems) > before:
        return None
    return HttpLogConfig(
        endpoint=endpoint,
        method=values["method"],
        content_type=values["content_type"],
        timeout=values["timeout"],
        keepalive=values["keepalive"],
        headers=headers,
        queue=queue,
        ssl_verify=values["ssl_verify"],
    )
