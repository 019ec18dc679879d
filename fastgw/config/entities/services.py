"""Kong's `services:` entity: where requests go (a `url`, or protocol, host, port and path),
its timeouts and retries, its TLS trust, with its routes and plugins nested.

A service whose host is an upstream's name is balanced over that upstream's targets (the layers
above resolve it); `enabled: false` drops the service with its routes and plugins.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from fastgw.config.addresses import HOSTNAME_CHARS, has_path_breaker, is_ipv6
from fastgw.config.entities.drafts import ServiceDraft
from fastgw.config.entities.plugins import PLUGIN, scoped
from fastgw.config.entities.routes import ROUTE
from fastgw.config.model import Service
from fastgw.config.schema import (
    TAGS,
    Array,
    Boolean,
    Declared,
    ExclusiveWith,
    Ignored,
    Integer,
    Reader,
    Records,
    Schema,
    Text,
    Unsupported,
)
from fastgw.config.vocabulary import (
    DEFAULT_RETRIES,
    DEFAULT_SERVICE_TIMEOUT_MS,
    MAX_RETRIES,
    MAX_SERVICE_TIMEOUT_MS,
    PROTOCOL_PORTS,
)

# What a bad `url` leaves, so that reading goes on (the problem is recorded at `url`)
_NO_URL = ("http", "", PROTOCOL_PORTS["http"], "")


class ServiceUrl(Declared):
    """Kong's `url`: (protocol, host, port, path), or None when not given."""

    __slots__ = ()

    def read(self, reader: Reader, key: str) -> tuple[str, str, int, str] | None:
        url: str | None = reader.string(key)
        if url is None:
            return None
        reason = None
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            reader.error(key, f"is not a valid URL ({exc}); got {url!r}")
            return _NO_URL
        protocol = parts.scheme.lower()
        host = parts.hostname or ""
        if protocol not in PROTOCOL_PORTS:
            reason = f"must start with http:// or https://; got {url!r}"
        elif not host:
            reason = f"must include a host; got {url!r}"
        elif parts.username is not None or parts.password is not None:
            reason = "must not include credentials"
        elif parts.query or parts.fragment or url.endswith(("?", "#")):
            reason = f"must not include a query or fragment; got {url!r}"
        elif port == 0:
            reason = f"port must be >= 1; got {url!r}"
        elif not is_ipv6(host) and not set(host) <= HOSTNAME_CHARS:
            reason = f"has an invalid host; got {url!r}"
        elif has_path_breaker(parts.path):
            reason = f'path must not contain whitespace, "?" or "#"; got {url!r}'
        if reason is not None:
            reader.error(key, reason)
            return _NO_URL
        return protocol, host, port or PROTOCOL_PORTS[protocol], parts.path


class UpstreamHost(Declared):
    """Kong's service `host`: a DNS name (lower case) or an IP address (IPv6 unbracketed)."""

    __slots__ = ()

    def read(self, reader: Reader, key: str) -> str:
        host: str | None = reader.string(key, required=True)
        if host is None:
            return ""
        bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        if is_ipv6(bare):
            return bare
        if ":" in host:
            reader.error(key, f"must be a host name or IP address (set port apart); got {host!r}")
            return ""
        if not set(host.lower()) <= HOSTNAME_CHARS:
            reader.error(key, f"must be a host name or IP address; got {host!r}")
            return ""
        return host.lower()


class ServicePath(Declared):
    """Kong's service `path`: "" when unset, else starting with "/"."""

    __slots__ = ()

    def read(self, reader: Reader, key: str) -> str:
        path: str | None = reader.string(key)
        if path is None:
            return ""
        if not path.startswith("/"):
            reader.error(key, 'must start with "/"')
            return ""
        if has_path_breaker(path):
            reader.error(key, 'must not contain whitespace, "?" or "#"')
            return ""
        return path


def _timeout() -> Integer:
    return Integer(DEFAULT_SERVICE_TIMEOUT_MS, minimum=1, maximum=MAX_SERVICE_TIMEOUT_MS)


def _draft(reader: Reader, values: dict[str, Any]) -> ServiceDraft:
    if values["url"] is not None:
        protocol, host, port, path = values["url"]
    else:
        protocol, host, path = values["protocol"], values["host"], values["path"]
        port = values["port"] or PROTOCOL_PORTS[protocol]
    service = Service(
        name=values["name"],
        protocol=protocol,
        host=host,
        port=port,
        path=path,
        connect_timeout=values["connect_timeout"],
        write_timeout=values["write_timeout"],
        read_timeout=values["read_timeout"],
        retries=values["retries"],
        routes=(),
        plugins=(),
        path_in_config=reader.path,
        tls_verify=values["tls_verify"],
    )
    return ServiceDraft(
        service=service,
        enabled=values["enabled"],
        nested_routes=values["routes"],
        plugins=scoped(values["plugins"], reader.problems),
        ca_certificates=values["ca_certificates"],
    )


SERVICE: Schema[ServiceDraft] = Schema(
    {
        "name": Text(),
        "url": ServiceUrl(),
        "protocol": ExclusiveWith("url", Text("http", one_of=tuple(PROTOCOL_PORTS))),
        "host": ExclusiveWith("url", UpstreamHost()),
        "port": ExclusiveWith("url", Integer(minimum=1, maximum=65535)),
        "path": ExclusiveWith("url", ServicePath()),
        "connect_timeout": _timeout(),
        "write_timeout": _timeout(),
        "read_timeout": _timeout(),
        "retries": Integer(DEFAULT_RETRIES, minimum=0, maximum=MAX_RETRIES),
        "enabled": Boolean(True),
        "tags": TAGS,
        "id": Ignored(),
        "created_at": Ignored(),
        "updated_at": Ignored(),
        # Kong's `tls_verify` (null: our default, verify) and `ca_certificates` (ids)
        "tls_verify": Boolean(True),
        "tls_verify_depth": Unsupported(),
        "client_certificate": Unsupported("not supported yet (no client certificates)"),
        "ca_certificates": Array(),
        "routes": Records(ROUTE),
        "plugins": Records(PLUGIN),
    },
    build=_draft,
    annotations=True,
)
