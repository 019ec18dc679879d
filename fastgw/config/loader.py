"""Gateway configuration: Kong-style declarative YAML/JSON in, frozen and validated objects out.

Owns the file format, `${ENV}` substitution and every default; nothing here runs per request.

The format is Kong's declarative one (`_format_version: "3.0"`: services with nested routes and
plugins, top-level routes and plugins that point at them by name) plus our own `_fastgw` section
for the listeners, worker count and wire limits. Every problem is collected with the path of its
key (`services[0].routes[1].paths[0]: must start with "/"`) and raised together as one ConfigError.

Environment substitution runs over every string value before validation: `${VAR}` and decK's
`${{ env "VAR" }}`; `$${` stands for a literal `${`. A substituted value stays a string, as in
Kong and decK: `port: "${PORT}"` is an error, because port needs an integer. Vault references
(`{vault://env/NAME}`, fastgw/config/vaults.py) are resolved next, then everything is validated.
The other entities live in their own modules: consumers.py, trust.py (`ca_certificates`),
deck.py (`_info`, `_konnect`, `_workspace`).
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from fastgw.config.consumers import Consumers, read_consumers
from fastgw.config.deck import Defaults, read_metadata
from fastgw.config.edge import (
    Certificate,
    Listener,
    Upstream,
    read_certificates,
    read_default_certificate,
    read_listeners,
    read_upstreams,
)
from fastgw.config.edge import parse_listeners as edge_parse_listeners
from fastgw.config.patterns import (
    PATH_HANDLINGS,
    RegexError,
    compile_header_regex,
    compile_path_regex,
    is_regex_path,
)
from fastgw.config.schema import Reader, join, raise_if
from fastgw.config.trust import CaCertificate, read_ca_certificates
from fastgw.config.vaults import read_vaults, resolve_references
from fastgw.errors import ConfigError
from fastgw.http.tls import CertificatePair
from fastgw.http.vocabulary import DEFAULT_PORTS
from fastgw.plugins import names as plugin_names
from fastgw.plugins import spec as plugin_spec

# -- defaults -------------------------------------------------------------------------------------

# "3.0" is Kong 3's format; decK still emits "1.1" and "2.1", which read the same for our subset
FORMAT_VERSIONS = ("3.0", "2.1", "1.1")

DEFAULT_LISTEN = ("127.0.0.1", 8000)  # loopback: exposing the gateway must be a deliberate choice
DEFAULT_ADMIN_LISTEN = ("127.0.0.1", 8001)  # Kong's admin port, loopback as in Kong's default
DEFAULT_WORKERS = 1  # one process unless asked: predictable for embedding and tests

DEFAULT_MAX_HEAD_SIZE = 32 * 1024  # nginx large_client_header_buffers 4 x 8k
DEFAULT_MAX_HEADERS = 100  # h11 / uvicorn-ish cap on header count
DEFAULT_MAX_URI_SIZE = 8 * 1024  # one nginx 8k header buffer must hold the request line
DEFAULT_HEAD_TIMEOUT = 60.0  # nginx client_header_timeout 60s
DEFAULT_KEEPALIVE_TIMEOUT = 75.0  # nginx keepalive_timeout default 75s
DEFAULT_MAX_BODY_SIZE = 0  # unlimited: Kong sets nginx client_max_body_size 0
# nginx (and so Kong) drops request fields whose name has "_": backends that fold "_" into "-"
# (CGI, WSGI: HTTP_TRANSFER_ENCODING) would read Transfer_Encoding as Transfer-Encoding.
DEFAULT_UNDERSCORES_IN_HEADERS = False  # nginx underscores_in_headers off
DEFAULT_UPSTREAM_POOL_SIZE = 512  # Kong upstream_keepalive_pool_size
DEFAULT_UPSTREAM_IDLE_TIMEOUT = 60.0  # Kong upstream_keepalive_idle_timeout 60s
DEFAULT_UPSTREAM_MAX_REQUESTS = 10_000  # Kong upstream_keepalive_max_requests
DEFAULT_DRAIN_TIMEOUT = 10.0  # long enough for in-flight requests, short enough for a deploy

DEFAULT_SERVICE_TIMEOUT_MS = 60_000  # Kong's connect/write/read_timeout default
MAX_SERVICE_TIMEOUT_MS = 2**31 - 2  # Kong's upper bound for service timeouts
DEFAULT_RETRIES = 5  # Kong's service retries default
MAX_RETRIES = 32_767  # Kong's upper bound for retries

PROTOCOL_PORTS = DEFAULT_PORTS
# Kong's bound on regex_priority (a 32-bit signed integer in its schema)
MAX_REGEX_PRIORITY = 2**31 - 1
# the Host header is matched by `hosts`; Kong refuses it in a route's `headers` too
_ROUTE_HEADERS_FORBIDDEN = frozenset({"host"})
_HEADER_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789!#$%&'*+-.^_`|~")
# Kong's http subsystem protocols; ws and wss are its WebSocket routes' (wss, like https, asks
# for TLS). Any route proxies a WebSocket upgrade, as in Kong 3.
ROUTE_PROTOCOLS = ("http", "https", "ws", "wss")
DEFAULT_ROUTE_PROTOCOLS = ("http", "https")  # Kong's default
# Kong's answer on a plain-HTTP request to a route that requires TLS: 426 with a JSON message,
# or one of these redirects to the https URL.
HTTPS_REDIRECT_STATUSES = (426, 301, 302, 307, 308)
DEFAULT_HTTPS_REDIRECT_STATUS = 426

# characters of a DNS name (underscore too: seen in the wild, e.g. docker-compose service names)
_HOSTNAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789.-_")


# -- the configuration objects --------------------------------------------------------------------


@dataclass(frozen=True)
class Entities:
    """The config's other entities, which a plugin's config may name (Kong's `anonymous`)."""

    consumers: Consumers = field(default_factory=Consumers)


@dataclass(frozen=True, slots=True)
class PluginEntry:
    """One configured plugin occurrence; `config` is what its spec's `parse_config` returned."""

    name: str
    config: Any
    enabled: bool
    path: str  # where it was configured, e.g. "services[0].plugins[1]"
    # the `config` mapping as written (after ${ENV} substitution): a reload compares these to
    # keep the instances whose config did not change (parsed configs may hold random defaults)
    raw_config: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Route:
    name: str | None
    paths: tuple[str, ...]  # prefixes, each starting with "/"
    hosts: tuple[str, ...]  # lower case; "*.example.com" or "example.*" wildcards
    methods: tuple[str, ...]  # upper case
    strip_path: bool
    preserve_host: bool
    plugins: tuple[PluginEntry, ...]  # route-level only; the service's and global ones are apart
    path: str  # where it was configured, e.g. "services[0].routes[1]" or "routes[0]"
    # (lower-case name, values): every name must be present with one of its values; a value
    # starting with "~*" is a case-insensitive regex, the others compare case-insensitively
    headers: tuple[tuple[str, tuple[str, ...]], ...] = ()
    regex_priority: int = 0  # orders regex paths, higher first (Kong's)
    path_handling: str = "v0"  # how the upstream path is joined: "v0" or "v1" (Kong's)
    protocols: tuple[str, ...] = DEFAULT_ROUTE_PROTOCOLS
    https_redirect_status_code: int = DEFAULT_HTTPS_REDIRECT_STATUS
    snis: tuple[str, ...] = ()  # TLS server names, lower case; "*.example.com" wildcards

    @property
    def requires_tls(self) -> bool:
        """Kong: a route whose protocols allow https (or wss) but not http (nor ws)."""
        protocols = self.protocols
        return bool({"https", "wss"} & set(protocols)) and not {"http", "ws"} & set(protocols)


@dataclass(frozen=True, slots=True)
class Service:
    name: str | None
    protocol: str  # "http" | "https"
    host: str  # a DNS name or IP address; IPv6 without brackets
    port: int
    path: str  # "" when unset, else starts with "/"
    connect_timeout: int  # milliseconds, like Kong
    write_timeout: int  # milliseconds
    read_timeout: int  # milliseconds
    retries: int
    routes: tuple[Route, ...]
    plugins: tuple[PluginEntry, ...]  # service-level only
    path_in_config: str  # e.g. "services[0]"
    # https only: Kong's `tls_verify` (our default is to verify) and `ca_certificates`, the CAs
    # that replace the system store for this service
    tls_verify: bool = True
    ca_certificates: tuple[CaCertificate, ...] = ()


@dataclass(frozen=True, slots=True)
class Limits:
    """Wire limits. Sizes in bytes, timeouts in seconds.

    max_body_size 0 means unlimited; upstream_pool_size 0 disables upstream keep-alive;
    upstream_max_requests 0 means no cap on requests per upstream connection (Kong's meanings).
    """

    max_head_size: int = DEFAULT_MAX_HEAD_SIZE
    max_headers: int = DEFAULT_MAX_HEADERS
    max_uri_size: int = DEFAULT_MAX_URI_SIZE
    head_timeout: float = DEFAULT_HEAD_TIMEOUT
    keepalive_timeout: float = DEFAULT_KEEPALIVE_TIMEOUT
    max_body_size: int = DEFAULT_MAX_BODY_SIZE
    underscores_in_headers: bool = DEFAULT_UNDERSCORES_IN_HEADERS
    upstream_pool_size: int = DEFAULT_UPSTREAM_POOL_SIZE
    upstream_idle_timeout: float = DEFAULT_UPSTREAM_IDLE_TIMEOUT
    upstream_max_requests: int = DEFAULT_UPSTREAM_MAX_REQUESTS
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT


@dataclass(frozen=True, slots=True)
class Settings:
    listen: tuple[str, int] = DEFAULT_LISTEN  # the first of `listeners`
    admin_listen: tuple[str, int] | None = DEFAULT_ADMIN_LISTEN  # None: no admin listener
    workers: int = DEFAULT_WORKERS
    limits: Limits = field(default_factory=Limits)
    # Kong's proxy_listen: every address, some with TLS (`ssl`)
    listeners: tuple[Listener, ...] = (Listener(*DEFAULT_LISTEN),)
    ssl_certificate: CertificatePair | None = None  # kong.conf's ssl_cert / ssl_cert_key


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    services: tuple[Service, ...]  # enabled services only
    plugins: tuple[PluginEntry, ...]  # global plugins
    settings: Settings
    source: str  # file name, or "<string>"
    consumers: Consumers = field(default_factory=Consumers)
    ca_certificates: tuple[CaCertificate, ...] = ()  # all of them: trusted for IdP calls
    upstreams: tuple[Upstream, ...] = ()  # Kong upstreams (with their targets)
    certificates: tuple[Certificate, ...] = ()  # Kong certificates (with their SNIs)

    def routes(self) -> Iterator[tuple[Service, Route]]:
        """Every route with its service, in config order (the router's tie-break)."""
        for service in self.services:
            for route in service.routes:
                yield service, route


# -- entry points ---------------------------------------------------------------------------------


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> GatewayConfig:
    """Read and validate the config file at `path` (YAML or JSON); raises ConfigError."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError([("(file)", f"cannot read {path}: {exc.strerror or exc}")]) from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError([("(file)", f"cannot read {path}: not UTF-8 ({exc.reason})")]) from exc
    return parse_config(text, env, source=str(path))


def parse_config(
    raw_text: str, env: Mapping[str, str] | None = None, source: str = "<string>"
) -> GatewayConfig:
    """Validate a config document; `env` defaults to os.environ. Raises ConfigError."""
    document = _load_document(raw_text)
    env_problems: list[tuple[str, str]] = []
    environment = os.environ if env is None else env
    document = _substitute(document, "", environment, env_problems)
    if isinstance(document, dict):
        vaults = read_vaults(document.get("vaults"), "vaults", env_problems)
        document = {
            key: value
            if key == "vaults"
            else resolve_references(value, key, vaults, environment, env_problems)
            for key, value in document.items()
        }
    problems: list[tuple[str, str]] = []
    config = _read_config(document, source, problems)
    # a value whose substitution failed would also fail validation; report the cause only
    failed = {path for path, _ in env_problems}
    raise_if(env_problems + [problem for problem in problems if problem[0] not in failed])
    return config


def parse_listen(value: str, key: str) -> tuple[str, int]:
    """(host, port) from "127.0.0.1:8000", "[::1]:8000" or ":8000" (all interfaces).

    Port 0 is allowed: the OS picks a free port (handy in tests).
    """
    result = _split_listen(value)
    if isinstance(result, str):
        raise ConfigError([(key, result)])
    return result


def parse_listeners(value: str, key: str) -> tuple[Listener, ...]:
    """Kong's proxy_listen syntax: "127.0.0.1:8000, 127.0.0.1:8443 ssl"."""
    problems: list[tuple[str, str]] = []
    items = [(key, part.strip()) for part in value.split(",")]
    listeners = edge_parse_listeners(items, _split_listen, problems)
    raise_if(problems)
    if not listeners:
        raise ConfigError([(key, "must name at least one address")])
    return listeners


# -- the document ---------------------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys instead of letting the last one silently win."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        try:
            duplicate = key in seen
            seen.add(key)
        except TypeError:  # an unhashable key: construct_mapping reports it
            continue
        if duplicate:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _load_document(raw_text: str) -> Any:
    if not raw_text.strip():
        raise ConfigError([("(root)", "is empty")])
    # JSON goes through json: PyYAML refuses tab-indented JSON, which is common
    if raw_text.lstrip().startswith("{"):
        try:
            return json.loads(raw_text, object_pairs_hook=_reject_duplicate_keys)
        except json.JSONDecodeError as exc:
            where = f"line {exc.lineno}, column {exc.colno}"
            raise ConfigError([("(root)", f"invalid JSON at {where}: {exc.msg}")]) from exc
        except ValueError as exc:
            raise ConfigError([("(root)", f"invalid JSON: {exc}")]) from exc
    try:
        document = yaml.load(raw_text, Loader=_StrictLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "syntax error"
        if mark is None:
            raise ConfigError([("(root)", f"invalid YAML: {problem}")]) from exc
        where = f"line {mark.line + 1}, column {mark.column + 1}"
        raise ConfigError([("(root)", f"invalid YAML at {where}: {problem}")]) from exc
    except yaml.YAMLError as exc:
        raise ConfigError([("(root)", f"invalid YAML: {exc}")]) from exc
    if document is None:
        raise ConfigError([("(root)", "is empty")])
    return document


# -- environment substitution ---------------------------------------------------------------------


def _substitute(
    value: Any, path: str, env: Mapping[str, str], problems: list[tuple[str, str]]
) -> Any:
    """A copy of `value` with every string expanded; problems carry the value's key path."""
    if isinstance(value, str):
        return _expand(value, path or "(root)", env, problems) if "$" in value else value
    if isinstance(value, list):
        return [_substitute(item, join(path, i), env, problems) for i, item in enumerate(value)]
    if isinstance(value, dict):
        return {
            key: _substitute(item, join(path, str(key)), env, problems)
            for key, item in value.items()
        }
    return value


def _expand(text: str, path: str, env: Mapping[str, str], problems: list[tuple[str, str]]) -> str:
    parts: list[str] = []
    position = 0
    missing = False
    while (start := text.find("$", position)) != -1:
        parts.append(text[position:start])
        if text.startswith("$${", start):
            parts.append("${")
            position = start + 3
            continue
        if not text.startswith("${", start):
            parts.append("$")
            position = start + 1
            continue
        if text.startswith("${{", start):
            end = text.find("}}", start + 3)
            if end == -1:
                problems.append((path, 'unterminated "${{" (write "$${" for a literal "${")'))
                return text
            name = _deck_env_name(text[start + 3 : end])
            if name is None:
                problems.append((path, 'expected ${{ env "NAME" }}'))
                return text
            position = end + 2
        else:
            end = text.find("}", start + 2)
            if end == -1:
                problems.append((path, 'unterminated "${" (write "$${" for a literal "${")'))
                return text
            name = text[start + 2 : end].strip()
            if not _is_env_name(name):
                problems.append((path, f'invalid environment variable name "{name}"'))
                return text
            position = end + 1
        replacement = env.get(name)
        if replacement is None:
            problems.append((path, f'environment variable "{name}" is not set'))
            missing = True
        else:
            parts.append(replacement)
    if missing:
        # the raw text keeps the value non-empty, so no "is required" follows from the gap
        return text
    parts.append(text[position:])
    return "".join(parts)


def _deck_env_name(template: str) -> str | None:
    """The NAME of decK's `env "NAME"` template call, or None when it is something else."""
    call = template.strip()
    if not call.startswith("env"):
        return None
    argument = call[3:].strip()
    if len(argument) < 2 or argument[0] != '"' or argument[-1] != '"':
        return None
    name = argument[1:-1]
    return name if _is_env_name(name) else None


def _is_env_name(name: str) -> bool:
    return (
        name.isascii()
        and name.replace("_", "a").isalnum()
        and (name[0].isalpha() or name[0] == "_")
    )


# -- top level ------------------------------------------------------------------------------------


@dataclass(slots=True)
class _ServiceDraft:
    """A service while top-level routes and plugins are still being attached."""

    service: Service  # routes and plugins still empty
    enabled: bool
    routes: list[_RouteDraft]
    plugins: list[PluginEntry]


@dataclass(slots=True)
class _RouteDraft:
    route: Route  # plugins still empty
    service: _ServiceDraft
    plugins: list[PluginEntry]


def _read_config(document: Any, source: str, problems: list[tuple[str, str]]) -> GatewayConfig:
    reader = Reader(document, "", problems)
    _read_format_version(reader)
    reader.boolean("_transform", True)
    defaults = read_metadata(reader)
    reader.ignore("vaults")  # read (and checked) before substitution, see parse_config
    settings = _read_settings(reader.mapping("_fastgw"))
    reader.ignore("ca_certificates", "consumers")
    ca_certificates = read_ca_certificates(
        reader.raw.get("ca_certificates"), "ca_certificates", problems
    )
    consumers = read_consumers(reader.raw.get("consumers"), "consumers", problems)

    services: list[_ServiceDraft] = []
    services_by_name: dict[str, _ServiceDraft] = {}
    routes_by_name: dict[str, _RouteDraft] = {}
    context = _Context(defaults, {ca.id: ca for ca in ca_certificates if ca.id is not None})
    for index, raw in enumerate(reader.sequence("services")):
        draft = _read_service(raw, join("services", index), routes_by_name, problems, context)
        services.append(draft)
        name = draft.service.name
        if name is not None:
            first = services_by_name.setdefault(name, draft)
            if first is not draft:
                where = first.service.path_in_config
                problems.append(
                    (join(draft.service.path_in_config, "name"), f"is already used by {where}")
                )

    for index, raw in enumerate(reader.sequence("routes")):
        _read_top_level_route(
            raw, join("routes", index), services_by_name, routes_by_name, problems, context
        )

    global_plugins: list[PluginEntry] = []
    for index, raw in enumerate(reader.sequence("plugins")):
        _read_top_level_plugin(
            raw, join("plugins", index), services_by_name, routes_by_name, global_plugins, problems
        )
    upstreams = read_upstreams(reader, _split_target)
    certificates = read_certificates(reader, _read_route_hosts)
    reader.finish()

    frozen = tuple(_freeze(draft) for draft in services if draft.enabled)
    entities = Entities(consumers=consumers)
    linked_global = tuple(_link(entry, entities, problems) for entry in global_plugins)
    linked_services = tuple(_link_service(service, entities, problems) for service in frozen)
    return GatewayConfig(
        services=linked_services,
        plugins=linked_global,
        settings=settings,
        source=source,
        consumers=consumers,
        ca_certificates=ca_certificates,
        upstreams=upstreams,
        certificates=certificates,
    )


@dataclass(frozen=True, slots=True)
class _Context:
    """What reading a service or route needs from the rest of the document."""

    defaults: Defaults
    ca_certificates: dict[str, CaCertificate]


def _link(entry: PluginEntry, entities: Entities, problems: list[tuple[str, str]]) -> PluginEntry:
    """Let the plugin check and bind what its config names in other entities (consumers)."""
    plugin = plugin_spec(entry.name)
    if plugin is None or entry.config is None:
        return entry
    return replace(entry, config=plugin.link(entry.config, entities, entry.path, problems))


def _link_service(service: Service, entities: Entities, problems: list[tuple[str, str]]) -> Service:
    routes = tuple(
        replace(route, plugins=tuple(_link(entry, entities, problems) for entry in route.plugins))
        for route in service.routes
    )
    plugins = tuple(_link(entry, entities, problems) for entry in service.plugins)
    return replace(service, routes=routes, plugins=plugins)


def _split_target(value: str) -> tuple[str, int] | str:
    """A Kong target, "host:port" or "host" (port 8000, Kong's default), IPv6 in brackets."""
    if (value.startswith("[") and value.endswith("]")) or (":" not in value):
        value = f"{value}:8000"
    result = _split_listen(value)
    if isinstance(result, str):
        return result.replace('"host:port", "[ipv6]:port" or ":port"', '"host:port"')
    if result[1] == 0:
        return f"port must be >= 1; got {value!r}"
    return result


def _read_format_version(reader: Reader) -> None:
    raw = reader.raw.get("_format_version")
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        reader.ignore("_format_version")
        reader.error("_format_version", f'must be a string: quote it, as in "{raw}"')
        return
    reader.string("_format_version", required=True, one_of=FORMAT_VERSIONS)


def _freeze(draft: _ServiceDraft) -> Service:
    routes = tuple(replace(route.route, plugins=tuple(route.plugins)) for route in draft.routes)
    return replace(draft.service, routes=routes, plugins=tuple(draft.plugins))


# -- _fastgw --------------------------------------------------------------------------------------


def _read_settings(reader: Reader) -> Settings:
    listeners = read_listeners(reader, "listen", _split_listen, DEFAULT_LISTEN)
    listen = (listeners[0].host, listeners[0].port)
    ssl_certificate = read_default_certificate(reader, any(item.ssl for item in listeners))
    admin_listen: tuple[str, int] | None = None
    if "admin_listen" not in reader.raw:
        admin_listen = DEFAULT_ADMIN_LISTEN
    elif reader.raw["admin_listen"] not in (None, False) and not _is_off(
        reader.raw["admin_listen"]
    ):
        admin_listen = _read_listen(reader, "admin_listen", DEFAULT_ADMIN_LISTEN)
    reader.ignore("admin_listen")

    workers = _read_workers(reader)
    limits = Limits(
        max_head_size=reader.integer("max_head_size", DEFAULT_MAX_HEAD_SIZE, minimum=1),
        max_headers=reader.integer("max_headers", DEFAULT_MAX_HEADERS, minimum=1),
        max_uri_size=reader.integer("max_uri_size", DEFAULT_MAX_URI_SIZE, minimum=1),
        head_timeout=_read_seconds(reader, "head_timeout", DEFAULT_HEAD_TIMEOUT),
        keepalive_timeout=_read_seconds(reader, "keepalive_timeout", DEFAULT_KEEPALIVE_TIMEOUT),
        max_body_size=reader.integer("max_body_size", DEFAULT_MAX_BODY_SIZE, minimum=0),
        underscores_in_headers=reader.boolean(
            "underscores_in_headers", DEFAULT_UNDERSCORES_IN_HEADERS
        ),
        upstream_pool_size=reader.integer(
            "upstream_pool_size", DEFAULT_UPSTREAM_POOL_SIZE, minimum=0
        ),
        upstream_idle_timeout=_read_seconds(
            reader, "upstream_idle_timeout", DEFAULT_UPSTREAM_IDLE_TIMEOUT
        ),
        upstream_max_requests=reader.integer(
            "upstream_max_requests", DEFAULT_UPSTREAM_MAX_REQUESTS, minimum=0
        ),
        drain_timeout=_read_seconds(reader, "drain_timeout", DEFAULT_DRAIN_TIMEOUT, zero_ok=True),
    )
    reader.finish()
    return Settings(
        listen=listen,
        admin_listen=admin_listen,
        workers=workers,
        limits=limits,
        listeners=listeners,
        ssl_certificate=ssl_certificate,
    )


def _is_off(value: object) -> bool:
    """`off` as `--admin-listen off` takes it (YAML reads a bare off as false, which is off too)."""
    return isinstance(value, str) and value.strip().lower() == "off"


def _read_listen(reader: Reader, key: str, default: tuple[str, int]) -> tuple[str, int]:
    reader.ignore(key)
    if not reader.has(key):
        return default
    result = _split_listen(reader.raw[key])
    if isinstance(result, str):
        reader.error(key, result)
        return default
    return result


def _read_workers(reader: Reader) -> int:
    raw = reader.raw.get("workers")
    if raw == "auto":
        reader.ignore("workers")
        return os.cpu_count() or 1
    if isinstance(raw, str):
        reader.ignore("workers")
        reader.error("workers", f'must be an integer >= 1 or "auto"; got {raw!r}')
        return DEFAULT_WORKERS
    return reader.integer("workers", DEFAULT_WORKERS, minimum=1)  # type: ignore[no-any-return]


def _read_seconds(reader: Reader, key: str, default: float, *, zero_ok: bool = False) -> float:
    value = reader.number(key, default, minimum=0)
    if value == 0 and not zero_ok:
        reader.error(key, "must be > 0")
        return default
    return float(value)


def _split_listen(value: object) -> tuple[str, int] | str:
    """(host, port), or the reason `value` is not a listen address."""
    if not isinstance(value, str):
        return 'must be a string such as "127.0.0.1:8000"'
    host, colon, port_text = value.rpartition(":")
    if not colon:
        return f'must be "host:port", "[ipv6]:port" or ":port"; got {value!r}'
    if host.startswith("["):
        if not host.endswith("]") or not _is_ipv6(host[1:-1]):
            return f"has an invalid IPv6 address; got {value!r}"
        host = host[1:-1]
    elif ":" in host:
        return f'IPv6 addresses need brackets, as in "[::1]:8000"; got {value!r}'
    elif not host:
        host = "0.0.0.0"
    elif not set(host.lower()) <= _HOSTNAME_CHARS:
        return f"has an invalid host; got {value!r}"
    if not (port_text.isascii() and port_text.isdigit()):
        return f"has an invalid port; got {value!r}"
    port = int(port_text)
    if port > 65535:
        return f"port must be <= 65535; got {value!r}"
    return host, port


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


# -- services -------------------------------------------------------------------------------------


def _read_service(
    raw: object,
    path: str,
    routes_by_name: dict[str, _RouteDraft],
    problems: list[tuple[str, str]],
    context: _Context,
) -> _ServiceDraft:
    reader = Reader(context.defaults.for_service(raw), path, problems)
    name = reader.string("name")
    url = reader.string("url")
    if url is not None:
        for key in ("protocol", "host", "port", "path"):
            if reader.has(key):
                reader.error(key, "cannot be set together with url")
        reader.ignore("protocol", "host", "port", "path")
        protocol, host, port, service_path = _read_url(reader, url)
    else:
        protocol = reader.string("protocol", "http", one_of=PROTOCOL_PORTS)
        host = _read_upstream_host(reader)
        port = reader.integer("port", PROTOCOL_PORTS[protocol], minimum=1, maximum=65535)
        service_path = _read_service_path(reader)
    timeouts = [
        reader.integer(key, DEFAULT_SERVICE_TIMEOUT_MS, minimum=1, maximum=MAX_SERVICE_TIMEOUT_MS)
        for key in ("connect_timeout", "write_timeout", "read_timeout")
    ]
    retries = reader.integer("retries", DEFAULT_RETRIES, minimum=0, maximum=MAX_RETRIES)
    enabled = reader.boolean("enabled", True)
    reader.strings("tags")
    reader.ignore("id", "created_at", "updated_at")
    tls_verify, trusted = _read_service_tls(reader, context)
    draft = _ServiceDraft(
        service=Service(
            name=name,
            protocol=protocol,
            host=host,
            port=port,
            path=service_path,
            connect_timeout=timeouts[0],
            write_timeout=timeouts[1],
            read_timeout=timeouts[2],
            retries=retries,
            routes=(),
            plugins=(),
            path_in_config=path,
            tls_verify=tls_verify,
            ca_certificates=trusted,
        ),
        enabled=enabled,
        routes=[],
        plugins=[],
    )
    routes_path = reader.key_path("routes")
    for index, raw_route in enumerate(reader.sequence("routes")):
        route_reader = Reader(
            context.defaults.for_route(raw_route), join(routes_path, index), problems
        )
        route, plugins = _read_route(route_reader)
        route_reader.finish()
        _add_route(route, plugins, draft, routes_by_name, problems)
    _read_plugin_list(reader, draft.plugins)
    reader.finish()
    return draft


def _read_service_tls(reader: Reader, context: _Context) -> tuple[bool, tuple[CaCertificate, ...]]:
    """Kong's `tls_verify` (null: our default, verify) and `ca_certificates` (ids)."""
    tls_verify = reader.boolean("tls_verify", True)
    if reader.has("tls_verify_depth"):
        reader.error("tls_verify_depth", "not supported yet")
    if reader.has("client_certificate"):
        reader.error("client_certificate", "not supported yet (no client certificates)")
    reader.ignore("tls_verify_depth", "client_certificate")
    trusted: list[CaCertificate] = []
    base = reader.key_path("ca_certificates")
    for index, item in enumerate(reader.sequence("ca_certificates")):
        found = context.ca_certificates.get(item) if isinstance(item, str) else None
        if found is None:
            reader.problems.append(
                (join(base, index), f"unknown CA certificate {item!r} (give it as an id of one)")
            )
        else:
            trusted.append(found)
    return tls_verify, tuple(trusted)


def _read_url(reader: Reader, url: str) -> tuple[str, str, int, str]:
    """(protocol, host, port, path) from a service `url`; problems are recorded at `url`."""
    fallback = ("http", "", PROTOCOL_PORTS["http"], "")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        reader.error("url", f"is not a valid URL ({exc}); got {url!r}")
        return fallback
    protocol = parts.scheme.lower()
    if protocol not in PROTOCOL_PORTS:
        reader.error("url", f"must start with http:// or https://; got {url!r}")
        return fallback
    if not parts.hostname:
        reader.error("url", f"must include a host; got {url!r}")
        return fallback
    if parts.username is not None or parts.password is not None:
        reader.error("url", "must not include credentials")
        return fallback
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        reader.error("url", f"must not include a query or fragment; got {url!r}")
        return fallback
    if port == 0:
        reader.error("url", f"port must be >= 1; got {url!r}")
        return fallback
    host = parts.hostname
    if not _is_ipv6(host) and not set(host) <= _HOSTNAME_CHARS:
        reader.error("url", f"has an invalid host; got {url!r}")
        return fallback
    if _has_path_breaker(parts.path):
        reader.error("url", f'path must not contain whitespace, "?" or "#"; got {url!r}')
        return fallback
    return protocol, host, port or PROTOCOL_PORTS[protocol], parts.path


def _read_upstream_host(reader: Reader) -> str:
    host: str | None = reader.string("host", required=True)
    if host is None:
        return ""
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if _is_ipv6(bare):
        return bare
    if ":" in host:
        reader.error("host", f"must be a host name or IP address (set port apart); got {host!r}")
        return ""
    if not set(host.lower()) <= _HOSTNAME_CHARS:
        reader.error("host", f"must be a host name or IP address; got {host!r}")
        return ""
    return host.lower()


def _read_service_path(reader: Reader) -> str:
    service_path: str | None = reader.string("path")
    if service_path is None:
        return ""
    if not service_path.startswith("/"):
        reader.error("path", 'must start with "/"')
        return ""
    if _has_path_breaker(service_path):
        reader.error("path", 'must not contain whitespace, "?" or "#"')
        return ""
    return service_path


def _has_path_breaker(text: str) -> bool:
    """True when `text` holds a character that ends or corrupts a request-target path."""
    return any(char.isspace() or char in "?#" or not char.isprintable() for char in text)


# -- routes ---------------------------------------------------------------------------------------


def _read_route(reader: Reader) -> tuple[Route, list[PluginEntry]]:
    """A route (plugins still apart) and its plugins; `finish` is the caller's."""
    if not any(reader.raw.get(key) for key in ("paths", "hosts", "methods", "headers", "snis")):
        reader.error("", "must have at least one of paths, hosts, methods, headers or snis")
    protocols = reader.strings("protocols", DEFAULT_ROUTE_PROTOCOLS, one_of=ROUTE_PROTOCOLS)
    if reader.has("protocols") and not protocols:
        reader.error("protocols", "must not be empty")
    snis = _read_route_hosts(reader, "snis")
    if snis and not {"https", "wss"} & set(protocols):
        reader.error("snis", "can only be set when 'protocols' has 'https' or 'wss'")
    redirect = reader.integer("https_redirect_status_code", DEFAULT_HTTPS_REDIRECT_STATUS)
    if redirect not in HTTPS_REDIRECT_STATUSES:
        choices = ", ".join(map(str, HTTPS_REDIRECT_STATUSES))
        reader.error("https_redirect_status_code", f"must be one of {choices}; got {redirect}")
        redirect = DEFAULT_HTTPS_REDIRECT_STATUS
    route = Route(
        name=reader.string("name"),
        paths=_read_route_paths(reader),
        hosts=_read_route_hosts(reader),
        methods=_read_route_methods(reader),
        strip_path=reader.boolean("strip_path", True),
        preserve_host=reader.boolean("preserve_host", False),
        plugins=(),
        path=reader.path,
        headers=_read_route_headers(reader),
        regex_priority=reader.integer(
            "regex_priority", 0, minimum=-MAX_REGEX_PRIORITY - 1, maximum=MAX_REGEX_PRIORITY
        ),
        path_handling=reader.string("path_handling", "v0", one_of=PATH_HANDLINGS),
        protocols=tuple(dict.fromkeys(protocols)) or DEFAULT_ROUTE_PROTOCOLS,
        https_redirect_status_code=redirect,
        snis=snis,
    )
    reader.strings("tags")
    # decK writes these with their defaults on every route: accept those, reject the rest
    reader.boolean("request_buffering", True)
    reader.boolean("response_buffering", True)
    reader.ignore("id", "created_at", "updated_at")
    for key in ("sources", "destinations"):
        if reader.raw.get(key):
            reader.error(key, "not supported yet")
        reader.ignore(key)
    for key in ("expression", "priority"):  # Kong's expressions router
        if reader.has(key):
            reader.error(key, "not supported yet (the expressions router)")
        reader.ignore(key)
    plugins: list[PluginEntry] = []
    _read_plugin_list(reader, plugins)
    return route, plugins


def _read_route_paths(reader: Reader) -> tuple[str, ...]:
    base = reader.key_path("paths")
    result: list[str] = []
    for index, item in enumerate(reader.sequence("paths")):
        reason = None
        if not isinstance(item, str) or not item:
            reason = "must be a non-empty string"
        elif is_regex_path(item):
            try:
                compile_path_regex(item)
            except RegexError as error:
                reason = f"is not a valid regex: {error.msg}"
        elif not item.startswith("/"):
            reason = 'must start with "/" (or "~" for a regex)'
        elif _has_path_breaker(item):
            reason = 'must not contain whitespace, "?" or "#"'
        if reason is None:
            result.append(item)
        else:
            reader.problems.append((join(base, index), reason))
    return tuple(result)


def _read_route_headers(reader: Reader) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """Kong's `headers: {name: [values]}`; a lone string value is taken as one."""
    headers = reader.mapping("headers")
    result: list[tuple[str, tuple[str, ...]]] = []
    for raw_name in list(headers.raw):
        name = str(raw_name)
        lower = name.lower()
        values = headers.strings(name, scalar_ok=True)
        if not lower or not set(lower) <= _HEADER_NAME_CHARS:
            headers.error(name, "is not a header name")
        elif lower in _ROUTE_HEADERS_FORBIDDEN:
            headers.error(name, "cannot be matched in headers; use hosts")
        elif not values:
            headers.error(name, "must list at least one value")
        else:
            for value in values:
                if value.startswith("~*"):
                    try:
                        compile_header_regex(value)
                    except RegexError as error:
                        headers.error(name, f"has an invalid regex {value!r}: {error.msg}")
            result.append((lower, values))
    headers.finish()
    return tuple(result)


def _read_route_hosts(reader: Reader, key: str = "hosts") -> tuple[str, ...]:
    """A route's hosts (or snis: the same patterns)."""
    base = reader.key_path(key)
    result: list[str] = []
    for index, item in enumerate(reader.sequence(key)):
        reason = None
        if not isinstance(item, str) or not item:
            reason = "must be a non-empty string"
        else:
            item = item.lower()
            if ":" in item:
                reason = f"ports in {key} are not supported"
            elif not _is_host_pattern(item):
                reason = 'must be a host name, with at most a leading "*." or trailing ".*"'
        if reason is None:
            result.append(item)
        else:
            reader.problems.append((join(base, index), reason))
    return tuple(result)


def _is_host_pattern(host: str) -> bool:
    if host.startswith("*."):
        name = host[2:]
    elif host.endswith(".*"):
        name = host[:-2]
    else:
        name = host
    return bool(name) and set(name) <= _HOSTNAME_CHARS and not name.startswith(".")


def _read_route_methods(reader: Reader) -> tuple[str, ...]:
    base = reader.key_path("methods")
    result: list[str] = []
    for index, item in enumerate(reader.sequence("methods")):
        if isinstance(item, str) and item.isascii() and item.isalpha() and item.isupper():
            result.append(item)
        else:
            reader.problems.append((join(base, index), 'must be an uppercase method like "GET"'))
    return tuple(result)


def _add_route(
    route: Route,
    plugins: list[PluginEntry],
    service: _ServiceDraft,
    routes_by_name: dict[str, _RouteDraft],
    problems: list[tuple[str, str]],
) -> None:
    draft = _RouteDraft(route=route, service=service, plugins=plugins)
    service.routes.append(draft)
    if route.name is not None:
        first = routes_by_name.setdefault(route.name, draft)
        if first is not draft:
            problems.append((join(route.path, "name"), f"is already used by {first.route.path}"))


def _read_top_level_route(
    raw: object,
    path: str,
    services_by_name: dict[str, _ServiceDraft],
    routes_by_name: dict[str, _RouteDraft],
    problems: list[tuple[str, str]],
    context: _Context,
) -> None:
    reader = Reader(context.defaults.for_route(raw), path, problems)
    route, plugins = _read_route(reader)
    service_name = _read_reference(reader, "service")
    reader.finish()
    if service_name is None:
        if reader.raw.get("service") is None:
            reader.error("service", "is required")
        return
    service = services_by_name.get(service_name)
    if service is None:
        reader.error("service", f'unknown service "{service_name}"')
        return
    _add_route(route, plugins, service, routes_by_name, problems)


def _read_reference(reader: Reader, key: str) -> str | None:
    """The name in a reference to another entity: `service: X` or `service: {name: X}`."""
    reader.ignore(key)
    raw = reader.raw.get(key)
    if raw is None:
        return None
    if isinstance(raw, str) and raw:
        return raw
    if isinstance(raw, Mapping):
        reference = Reader(raw, reader.key_path(key), reader.problems)
        name = reference.string("name", required=True)
        reference.finish()
        return name  # type: ignore[no-any-return]
    reader.error(key, "must be a name, or a mapping with a name")
    return None


# -- plugins --------------------------------------------------------------------------------------


def _read_plugin(reader: Reader) -> PluginEntry | None:
    """A plugin entry (None when its name is unusable); `finish` is the caller's."""
    name = reader.string("name", required=True)
    plugin = None
    if name is not None:
        plugin = plugin_spec(name)
        if plugin is None:
            available = ", ".join(plugin_names())
            reader.error("name", f'unknown plugin "{name}" (available: {available})')
    config: Any = None
    if plugin is not None:
        config = plugin.parse_config(reader.mapping("config"))
    else:
        reader.ignore("config")
    enabled = reader.boolean("enabled", True)
    reader.strings("tags")
    reader.string("instance_name")
    reader.strings("protocols")
    reader.ignore("id", "created_at", "updated_at")
    # Kong Enterprise's dynamic plugin ordering; an empty record is what decK writes for none
    if reader.raw.get("ordering"):
        reader.error("ordering", "not supported yet")
    reader.ignore("ordering")
    if plugin is None:
        return None
    return PluginEntry(
        name=name,
        config=config,
        enabled=enabled,
        path=reader.path,
        raw_config=reader.raw.get("config"),
    )


def _attach_plugin(
    entry: PluginEntry, scope: list[PluginEntry], problems: list[tuple[str, str]]
) -> None:
    """Add `entry` to one scope (global, a service or a route); a name appears once per scope."""
    for existing in scope:
        if existing.name == entry.name:
            problems.append(
                (
                    join(entry.path, "name"),
                    f'"{entry.name}" is already configured at {existing.path}',
                )
            )
            return
    scope.append(entry)


def _read_plugin_list(reader: Reader, scope: list[PluginEntry]) -> None:
    """Read the `plugins` array nested in the entity `reader` reads into `scope`."""
    base = reader.key_path("plugins")
    for index, raw in enumerate(reader.sequence("plugins")):
        plugin_reader = Reader(raw, join(base, index), reader.problems)
        entry = _read_plugin(plugin_reader)
        plugin_reader.finish()
        if entry is not None:
            _attach_plugin(entry, scope, reader.problems)


def _read_top_level_plugin(
    raw: object,
    path: str,
    services_by_name: dict[str, _ServiceDraft],
    routes_by_name: dict[str, _RouteDraft],
    global_plugins: list[PluginEntry],
    problems: list[tuple[str, str]],
) -> None:
    """A top-level plugin: global, or attached to the service or route it names."""
    reader = Reader(raw, path, problems)
    entry = _read_plugin(reader)
    service_name = _read_reference(reader, "service")
    route_name = _read_reference(reader, "route")
    for key in ("consumer", "consumer_group"):
        if reader.has(key):
            reader.error(key, "not supported yet (plugins scoped to consumers)")
        reader.ignore(key)
    reader.finish()

    scope = global_plugins
    service = None
    if service_name is not None:
        service = services_by_name.get(service_name)
        if service is None:
            reader.error("service", f'unknown service "{service_name}"')
            return
        scope = service.plugins
    if route_name is not None:
        route = routes_by_name.get(route_name)
        if route is None:
            reader.error("route", f'unknown route "{route_name}"')
            return
        if service is not None and route.service is not service:
            reader.error("route", f'route "{route_name}" is not on service "{service_name}"')
            return
        scope = route.plugins
    if entry is not None:
        _attach_plugin(entry, scope, problems)
