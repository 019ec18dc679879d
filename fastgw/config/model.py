"""The configuration model: frozen objects the layers above read at load time, never changed
while the gateway runs.

Made by the entity readers (fastgw/config/entities/) and assembled by fastgw/config/loader.py;
nothing here reads or checks a document. The consumers' index is fastgw/config/consumers.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from fastgw.config.consumers import Consumers
from fastgw.config.credentials import Credentials
from fastgw.config.vocabulary import DEFAULT_HTTPS_REDIRECT_STATUS, DEFAULT_ROUTE_PROTOCOLS

# -- defaults of the gateway's own settings (`_fastgw`; Kong keeps these in kong.conf) -------------

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
DEFAULT_REAL_IP_HEADER = "X-Real-IP"  # kong.conf real_ip_header
# What prefixes the keys fastgw writes to a shared Redis (rate-limiting's counters): gateways
# sharing a Redis and a namespace count together, so each fleet names its own.
DEFAULT_NAMESPACE = "fastgw"
# During a drain an idle connection stays this long for a request already on its way, answered
# with `connection: close` (Envoy's HTTP connection manager drain_timeout, 5 s)
DEFAULT_DRAIN_GRACE = 5.0
# A body a plugin buffers (credentials in a form) must arrive in full within this much reading
# time (Envoy's request_timeout idea, for the bodies the gateway holds; nginx's 60 s)
DEFAULT_REQUEST_BODY_TIMEOUT = 60.0
# A body slower than this on average (past a 5 s grace) is cut with a 408: Kestrel's
# MinRequestBodyDataRate default, 240 bytes/s; 0 turns it off
DEFAULT_REQUEST_BODY_MIN_RATE = 240
# 0: one client address may hold three quarters of a worker's client connections (nginx
# limit_conn with a $binary_remote_addr zone, as a share instead of a number)
DEFAULT_LIMIT_CONN_PER_ADDRESS = 0
DEFAULT_SSL_HANDSHAKE_TIMEOUT = 60.0  # nginx ssl_handshake_timeout 60s
# what escaped slashes and backslashes in a path do: route and forward them as they came, as
# Kong and nginx do (Envoy's KEEP_UNCHANGED)
PATH_ACTIONS = ("keep_unchanged", "reject_request", "unescape_and_redirect", "unescape_and_forward")
DEFAULT_PATH_ACTION = "keep_unchanged"
# Named memory bounds, after Kong's `lua_shared_dict` zones (kong.conf's nginx_http_lua_shared_dict
# adds one): a plugin keeping data by name (proxy-cache's `memory.dictionary_name`) holds at most
# that many bytes per worker. Kong always has kong_db_cache, sized by mem_cache_size (128m).
# (name, bytes) pairs: hashable, as the rest of the frozen model.
MemoryStores = tuple[tuple[str, int], ...]
DEFAULT_MEMORY_STORES: MemoryStores = (("kong_db_cache", 128 * 1024 * 1024),)


# -- plugins, routes, services --------------------------------------------------------------------


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
    # the id of the consumer it is scoped to (Kong's `consumer:`); None: everyone
    consumer: str | None = None
    # a top-level plugin naming both its route and the route's service: Kong ranks that
    # combination above a consumer-only plugin, the route alone below it
    route_and_service: bool = False


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
    # plugins scoped to a consumer on this route (Kong's route + consumer, with or without the
    # service): resolved when the request reaches them, after authentication
    consumer_plugins: tuple[PluginEntry, ...] = ()
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
class CaCertificate:
    """Kong's `ca_certificates` entity: a CA trusted by the services that list it (and IdPs)."""

    id: str | None
    pem: str = field(repr=False)
    digest: str  # SHA-256 of the DER form, hex: Kong's `cert_digest`
    path: str  # where it was configured, e.g. "ca_certificates[0]"


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
    consumer_plugins: tuple[PluginEntry, ...] = ()  # Kong's service + consumer


# -- the edge: listeners, certificates, upstreams -------------------------------------------------


@dataclass(frozen=True, slots=True)
class Listener:
    host: str
    port: int
    ssl: bool = False

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}" + (" ssl" if self.ssl else "")


@dataclass(frozen=True, slots=True)
class CertificatePair:
    """One certificate chain and its key, PEM text (plus an optional second pair of another key
    type, Kong's cert_alt / key_alt: RSA beside ECDSA). Checked when the config loads."""

    cert: str = field(repr=False)
    key: str = field(repr=False)
    cert_alt: str | None = field(default=None, repr=False)
    key_alt: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class Certificate:
    """A Kong certificate entity with the SNIs nested under it (as decK writes them)."""

    pair: CertificatePair
    snis: tuple[str, ...]
    path: str


@dataclass(frozen=True, slots=True)
class Target:
    host: str  # IPv6 without brackets
    port: int
    weight: int
    path: str


@dataclass(frozen=True, slots=True)
class CheckThresholds:
    """One health check's (active or passive) statuses and counts, Kong's `healthy` and
    `unhealthy` records; a count of 0 switches that count off."""

    healthy_statuses: frozenset[int]
    successes: int
    unhealthy_statuses: frozenset[int]
    http_failures: int
    tcp_failures: int
    timeouts: int

    @property
    def counts_anything(self) -> bool:
        return bool(self.successes or self.http_failures or self.tcp_failures or self.timeouts)


@dataclass(frozen=True, slots=True)
class ActiveHealthcheck:
    """Kong's `healthchecks.active` of one upstream (seconds for intervals and the timeout)."""

    check_type: str
    timeout: float
    concurrency: int
    http_path: str
    https_sni: str | None
    https_verify_certificate: bool
    headers: tuple[tuple[str, str], ...]
    healthy_interval: float
    unhealthy_interval: float
    thresholds: CheckThresholds


@dataclass(frozen=True, slots=True)
class Upstream:
    """A Kong upstream entity; a service whose host is its name is balanced over its targets."""

    name: str
    algorithm: str
    hash_on: str
    hash_on_name: str  # the header (lower case) or query argument hash_on reads
    hash_fallback: str
    hash_fallback_name: str
    slots: int
    host_header: str | None
    threshold: float
    passive: CheckThresholds | None  # None: no passive check counts anything
    active: ActiveHealthcheck | None  # None: no probes
    targets: tuple[Target, ...]
    path: str


# -- the gateway's own settings -------------------------------------------------------------------


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
    drain_grace: float = DEFAULT_DRAIN_GRACE
    request_body_timeout: float = DEFAULT_REQUEST_BODY_TIMEOUT
    request_body_min_rate: int = DEFAULT_REQUEST_BODY_MIN_RATE
    limit_conn_per_address: int = DEFAULT_LIMIT_CONN_PER_ADDRESS
    ssl_handshake_timeout: float = DEFAULT_SSL_HANDSHAKE_TIMEOUT


@dataclass(frozen=True, slots=True)
class RealIp:
    """kong.conf's trusted_ips, real_ip_header and real_ip_recursive: the client address Kong's
    plugins see (nginx's realip module) is the peer's, unless the peer is trusted; then it is
    read from the header. Empty `trusted_ips` (Kong's default): always the peer's."""

    trusted_ips: tuple[str, ...] = ()  # IPs and CIDR blocks, as written
    real_ip_header: str = DEFAULT_REAL_IP_HEADER
    real_ip_recursive: bool = False


@dataclass(frozen=True, slots=True)
class Settings:
    listen: tuple[str, int] = DEFAULT_LISTEN  # the first of `listeners`
    admin_listen: tuple[str, int] | None = DEFAULT_ADMIN_LISTEN  # None: no admin listener
    workers: int = DEFAULT_WORKERS
    limits: Limits = field(default_factory=Limits)
    # Kong's proxy_listen: every address, some with TLS (`ssl`)
    listeners: tuple[Listener, ...] = (Listener(*DEFAULT_LISTEN),)
    ssl_certificate: CertificatePair | None = None  # kong.conf's ssl_cert / ssl_cert_key
    real_ip: RealIp = field(default_factory=RealIp)
    namespace: str = DEFAULT_NAMESPACE
    # Envoy's path_with_escaped_slashes_action, and the same actions for backslashes
    # (fastgw/proxy/path_rules.py); Kong and nginx keep both
    path_with_escaped_slashes_action: str = DEFAULT_PATH_ACTION
    path_backslash_action: str = DEFAULT_PATH_ACTION
    # (name, bytes): the named memory bounds (DEFAULT_MEMORY_STORES and the config's own)
    memory_stores: MemoryStores = DEFAULT_MEMORY_STORES


# -- secrets --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EnvVault:
    """An env vault as references name it (`{vault://<name>/...}`)."""

    name: str
    variable_prefix: str  # Kong's `config.prefix`, prepended to the resource
    base64_decode: bool  # Kong's `config.base64_decode`


# -- the whole ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entities:
    """The config's other entities, which a plugin's config may name (Kong's `anonymous`)."""

    consumers: Consumers = field(default_factory=Consumers)
    credentials: Credentials = field(default_factory=Credentials)
    # `_fastgw.memory_stores`: the named memory bounds a plugin may name (proxy-cache's
    # memory.dictionary_name), (name, bytes)
    memory_stores: MemoryStores = DEFAULT_MEMORY_STORES

    def memory_store(self, name: str) -> int | None:
        """The bound of the memory store `name` in bytes, None when none is declared."""
        return dict(self.memory_stores).get(name)


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
    # (key path, message): what loading accepted but the user should hear of (deprecated keys)
    warnings: tuple[tuple[str, str], ...] = ()
    credentials: Credentials = field(default_factory=Credentials)
    # plugins scoped to a consumer only (consumers[].plugins, or `consumer:` alone)
    consumer_plugins: tuple[PluginEntry, ...] = ()

    def routes(self) -> Iterator[tuple[Service, Route]]:
        """Every route with its service, in config order (the router's tie-break)."""
        for service in self.services:
            for route in service.routes:
                yield service, route

    def warning_lines(self) -> list[str]:
        """What `fastgw check` prints after its summary (and `fastgw run` logs at start and on
        reload): one line per warning, like ConfigError.lines for problems."""
        return [f"{path}: warning: {message}" for path, message in self.warnings]

    def plugin_entries(self) -> Iterator[PluginEntry]:
        """Every plugin entry: the global ones, then each service's followed by its routes',
        in config order, each scope's consumer-scoped ones after its own (the one traversal of
        what is configured)."""
        yield from self.plugins
        yield from self.consumer_plugins
        for service in self.services:
            yield from service.plugins
            yield from service.consumer_plugins
            for route in service.routes:
                yield from route.plugins
                yield from route.consumer_plugins
