"""fastgw's own `_fastgw` section: the listeners (Kong's proxy_listen, with kong.conf's
ssl_cert / ssl_cert_key), the admin listener, the worker count, the wire limits, the named
memory bounds (after Kong's lua_shared_dict zones), the client address (kong.conf's trusted_ips,
real_ip_header, real_ip_recursive) and the fleet's namespace.

Kong keeps these in kong.conf; here they sit beside the entities they serve, and a command line
flag overrides the listeners (fastgw/cli.py).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
from typing import Any

from fastgw.config.addresses import listeners_of, split_listen
from fastgw.config.entities.certificates import pair_checks
from fastgw.config.model import (
    DEFAULT_ADMIN_LISTEN,
    DEFAULT_DRAIN_GRACE,
    DEFAULT_DRAIN_TIMEOUT,
    DEFAULT_HEAD_TIMEOUT,
    DEFAULT_KEEPALIVE_TIMEOUT,
    DEFAULT_LIMIT_CONN_PER_ADDRESS,
    DEFAULT_LISTEN,
    DEFAULT_MAX_BODY_SIZE,
    DEFAULT_MAX_HEAD_SIZE,
    DEFAULT_MAX_HEADERS,
    DEFAULT_MAX_URI_SIZE,
    DEFAULT_MEMORY_STORES,
    DEFAULT_NAMESPACE,
    DEFAULT_PATH_ACTION,
    DEFAULT_REAL_IP_HEADER,
    DEFAULT_REQUEST_BODY_MIN_RATE,
    DEFAULT_REQUEST_BODY_TIMEOUT,
    DEFAULT_SSL_HANDSHAKE_TIMEOUT,
    DEFAULT_UNDERSCORES_IN_HEADERS,
    DEFAULT_UPSTREAM_IDLE_TIMEOUT,
    DEFAULT_UPSTREAM_MAX_REQUESTS,
    DEFAULT_UPSTREAM_POOL_SIZE,
    DEFAULT_WORKERS,
    PATH_ACTIONS,
    CertificatePair,
    Limits,
    Listener,
    MemoryStores,
    RealIp,
    Settings,
)
from fastgw.config.pem import PemError, read_pem_file
from fastgw.config.schema import (
    Boolean,
    Declared,
    Integer,
    Reader,
    Schema,
    Strings,
    Text,
    join,
)

MAX_CERTIFICATES = 2  # kong.conf's ssl_cert takes one of each key type: RSA and ECDSA
# kong.conf's trusted_ips may name unix-socket peers; fastgw listens on TCP only, so it is inert
UNIX_PEERS = "unix:"
# a header name (RFC 9110 token characters)
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
# Redis key material: Kong's entity-name characters (no ":", no space, no braces)
_NAMESPACE = re.compile(r"^[A-Za-z0-9._~-]+$")
# nginx's size suffixes (ngx_parse_size, what lua_shared_dict's size takes): k, m, g, any case
SIZE_UNITS = {"": 1, "k": 1024, "m": 1024 * 1024, "g": 1024 * 1024 * 1024}


class Listeners(Declared):
    """Kong's proxy_listen: "host:port [ssl]" entries, a list or one comma-separated string."""

    __slots__ = ()

    def read(self, reader: Reader, key: str) -> tuple[Listener, ...]:
        reader.ignore(key)
        raw = reader.raw.get(key)
        default = (Listener(*DEFAULT_LISTEN),)
        if raw is None:
            return default
        base = reader.key_path(key)
        if isinstance(raw, str):
            items: list[tuple[str, object]] = [(base, part.strip()) for part in raw.split(",")]
        elif isinstance(raw, list):
            items = [(join(base, index), item) for index, item in enumerate(raw)]
        else:
            reader.error(key, 'must be "host:port [ssl]" or a list of them')
            return default
        listeners = listeners_of(items, reader.problems)
        if not listeners and not any(path.startswith(base) for path, _ in reader.problems):
            reader.error(key, "must name at least one address")
        return listeners or default


def _is_off(value: object) -> bool:
    """`off` as `--admin-listen off` takes it (YAML reads a bare off as false, which is off too)."""
    if isinstance(value, str):
        return value.strip().lower() == "off"
    return value in (None, False)


class AdminListen(Declared):
    """The admin listener's "host:port"; `off` (or null, or false) for none."""

    __slots__ = ()

    def read(self, reader: Reader, key: str) -> tuple[str, int] | None:
        reader.ignore(key)
        if key not in reader.raw:
            return DEFAULT_ADMIN_LISTEN
        raw = reader.raw[key]
        if _is_off(raw):
            return None
        result = split_listen(raw)
        if isinstance(result, str):
            reader.error(key, result)
            return DEFAULT_ADMIN_LISTEN
        return result


class Workers(Declared):
    """How many worker processes: an integer >= 1, or "auto" (one per CPU)."""

    __slots__ = ()

    def read(self, reader: Reader, key: str) -> int:
        raw = reader.raw.get(key)
        if raw == "auto":
            reader.ignore(key)
            return os.cpu_count() or 1
        if isinstance(raw, str):
            reader.ignore(key)
            reader.error(key, f'must be an integer >= 1 or "auto"; got {raw!r}')
            return DEFAULT_WORKERS
        workers: int = reader.integer(key, DEFAULT_WORKERS, minimum=1)
        return workers


class Seconds(Declared):
    """A duration in seconds, > 0 (or >= 0, `zero_ok`), read as a float."""

    __slots__ = ("default", "zero_ok")

    def __init__(self, default: float, *, zero_ok: bool = False) -> None:
        self.default = default
        self.zero_ok = zero_ok

    def read(self, reader: Reader, key: str) -> float:
        value = reader.number(key, self.default, minimum=0)
        if value == 0 and not self.zero_ok:
            reader.error(key, "must be > 0")
            return self.default
        return float(value)


class TrustedIps(Declared):
    """kong.conf's trusted_ips: IPs and CIDR blocks (v4, v6) or `unix:`, a list or one
    comma-separated string; `0.0.0.0/0,::/0` trusts every peer."""

    __slots__ = ()

    def read(self, reader: Reader, key: str) -> tuple[str, ...]:
        reader.ignore(key)
        raw = reader.raw.get(key)
        if raw is None:
            return ()
        if isinstance(raw, str):
            items = [part.strip() for part in raw.split(",") if part.strip()]
        elif isinstance(raw, list):
            items = raw
        else:
            reader.error(key, "must be a list of IPs or CIDR blocks, or one comma-separated string")
            return ()
        trusted: list[str] = []
        for item in items:
            if item == UNIX_PEERS:
                continue
            try:
                ipaddress.ip_network(str(item), strict=False)
            except ValueError:
                # Kong's own wording for a bad entry
                reader.error(
                    key,
                    f"{key} must be a comma separated list in the form of IPv4 or IPv6 address "
                    f"or CIDR block or 'unix:', got '{item}'",
                )
                continue
            trusted.append(str(item))
        return tuple(trusted)


def _real_ip_header(reader: Reader, key: str, value: str) -> str:
    if value == "proxy_protocol":
        reader.error(
            key, "proxy_protocol is not supported (fastgw's listeners read no PROXY header)"
        )
        return DEFAULT_REAL_IP_HEADER
    if not _HEADER_NAME.match(value):
        reader.error(key, f"must be a header name; got {value!r}")
        return DEFAULT_REAL_IP_HEADER
    return value


def _namespace(reader: Reader, key: str, value: str) -> str:
    if not _NAMESPACE.match(value):
        reader.error(key, "must be letters, digits, '.', '_', '~' or '-'")
        return DEFAULT_NAMESPACE
    return value


def parse_size(value: object) -> int | None:
    """nginx's size (`128m`, `512k`, `1g`, `65536`; an integer is bytes) in bytes, None when it
    is none (or not > 0)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value > 0 else None
    if not isinstance(value, str):
        return None
    text = value.strip().lower()
    unit = text[-1:] if text[-1:] in SIZE_UNITS else ""
    number = text[: len(text) - len(unit)]
    if not number.isdigit() or int(number) == 0:
        return None
    return int(number) * SIZE_UNITS[unit]


class NamedSizes(Declared):
    """Named memory bounds, name -> size (Kong's `lua_shared_dict <name> <size>`): added to
    DEFAULT_MEMORY_STORES, whose sizes they may change."""

    __slots__ = ()

    def read(self, reader: Reader, key: str) -> MemoryStores:
        reader.ignore(key)
        raw = reader.raw.get(key)
        if raw is None:
            return DEFAULT_MEMORY_STORES
        if not isinstance(raw, dict):
            reader.error(key, "must be a mapping of names to sizes (e.g. {kong_db_cache: 128m})")
            return DEFAULT_MEMORY_STORES
        stores = dict(DEFAULT_MEMORY_STORES)
        for name, size in raw.items():
            where = join(reader.key_path(key), str(name))
            parsed = parse_size(size)
            if not isinstance(name, str) or not name:
                reader.problems.append((where, "a name must be a non-empty string"))
            elif parsed is None:
                reader.problems.append(
                    (where, "must be a size: bytes, or a number with k, m or g (e.g. 128m)")
                )
            else:
                stores[name] = parsed
        return tuple(stores.items())


def _default_certificate(
    reader: Reader, values: dict[str, Any], needed: bool
) -> CertificatePair | None:
    """kong.conf's ssl_cert / ssl_cert_key (PEM files; a list each for RSA + ECDSA)."""
    certs, keys = values["ssl_cert"], values["ssl_cert_key"]
    if not certs and not keys:
        if needed:
            reader.error("ssl_cert", "is required by a listener with the ssl flag")
        return None
    if len(certs) != len(keys) or len(certs) > MAX_CERTIFICATES:
        reader.error("ssl_cert_key", "needs one key per ssl_cert (at most two: RSA and ECDSA)")
        return None
    texts: list[str] = []
    for key, paths in (("ssl_cert", certs), ("ssl_cert_key", keys)):
        for index, file in enumerate(paths):
            where = key if len(paths) == 1 else f"{key}[{index}]"
            try:
                texts.append(read_pem_file(file))
            except PemError as error:
                reader.error(where, str(error))
                return None
    count = len(certs)
    pair = CertificatePair(
        texts[0],
        texts[count],
        texts[1] if count == 2 else None,
        texts[count + 1] if count == 2 else None,
    )
    return pair if pair_checks(reader, "ssl_cert", pair) else None


def _settings(reader: Reader, values: dict[str, Any]) -> Settings:
    listeners: tuple[Listener, ...] = values["listen"]
    ssl_certificate = _default_certificate(
        reader, values, any(listener.ssl for listener in listeners)
    )
    limits = Limits(**{item.name: values[item.name] for item in dataclasses.fields(Limits)})
    real_ip = RealIp(
        trusted_ips=values["trusted_ips"],
        real_ip_header=_real_ip_header(reader, "real_ip_header", values["real_ip_header"]),
        real_ip_recursive=values["real_ip_recursive"],
    )
    return Settings(
        listen=(listeners[0].host, listeners[0].port),
        admin_listen=values["admin_listen"],
        workers=values["workers"],
        limits=limits,
        listeners=listeners,
        ssl_certificate=ssl_certificate,
        real_ip=real_ip,
        namespace=_namespace(reader, "namespace", values["namespace"]),
        memory_stores=values["memory_stores"],
        path_with_escaped_slashes_action=values["path_with_escaped_slashes_action"],
        path_backslash_action=values["path_backslash_action"],
    )


SETTINGS = Schema(
    {
        "listen": Listeners(),
        "ssl_cert": Strings(),
        "ssl_cert_key": Strings(),
        "admin_listen": AdminListen(),
        "workers": Workers(),
        "max_head_size": Integer(DEFAULT_MAX_HEAD_SIZE, minimum=1),
        "max_headers": Integer(DEFAULT_MAX_HEADERS, minimum=1),
        "max_uri_size": Integer(DEFAULT_MAX_URI_SIZE, minimum=1),
        "head_timeout": Seconds(DEFAULT_HEAD_TIMEOUT),
        "keepalive_timeout": Seconds(DEFAULT_KEEPALIVE_TIMEOUT),
        "max_body_size": Integer(DEFAULT_MAX_BODY_SIZE, minimum=0),
        "underscores_in_headers": Boolean(DEFAULT_UNDERSCORES_IN_HEADERS),
        "upstream_pool_size": Integer(DEFAULT_UPSTREAM_POOL_SIZE, minimum=0),
        "upstream_idle_timeout": Seconds(DEFAULT_UPSTREAM_IDLE_TIMEOUT),
        "upstream_max_requests": Integer(DEFAULT_UPSTREAM_MAX_REQUESTS, minimum=0),
        "drain_timeout": Seconds(DEFAULT_DRAIN_TIMEOUT, zero_ok=True),
        "trusted_ips": TrustedIps(),
        "real_ip_header": Text(DEFAULT_REAL_IP_HEADER),
        "real_ip_recursive": Boolean(False),
        "namespace": Text(DEFAULT_NAMESPACE),
        "drain_grace": Seconds(DEFAULT_DRAIN_GRACE, zero_ok=True),
        "request_body_timeout": Seconds(DEFAULT_REQUEST_BODY_TIMEOUT),
        "request_body_min_rate": Integer(DEFAULT_REQUEST_BODY_MIN_RATE, minimum=0),
        "limit_conn_per_address": Integer(DEFAULT_LIMIT_CONN_PER_ADDRESS, minimum=0),
        "ssl_handshake_timeout": Seconds(DEFAULT_SSL_HANDSHAKE_TIMEOUT),
        "path_with_escaped_slashes_action": Text(DEFAULT_PATH_ACTION, one_of=PATH_ACTIONS),
        "path_backslash_action": Text(DEFAULT_PATH_ACTION, one_of=PATH_ACTIONS),
        "memory_stores": NamedSizes(),
    },
    build=_settings,
    annotations=True,  # fastgw's own section: annotated as Kong's entities are
)
