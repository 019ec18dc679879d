"""What plugins program against per request: the request and log contexts, the Plugin base, the
route as the log phase names it. Compiled with the hot path (fastgw/build_info.py).

How a plugin is declared and built is fastgw.plugins.building. Nothing here knows the process,
the wire's classes or other plugins.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import Any, Protocol

from mypy_extensions import mypyc_attr

from fastgw.config.consumers import Consumer
from fastgw.http.request import Principal
from fastgw.http.response_edits import ResponseFilter
from fastgw.observability.counters import StatsOptions
from fastgw.observability.metrics import Family
from fastgw.observability.stores import StoreUsage

__all__ = [
    "Authenticated",
    "Credential",
    "LogContext",
    "Plugin",
    "RequestContext",
    "RouteInfo",
    "StoreUsage",
    "authenticated",
    "serialize_values",
    "set_serialize_value",
]

# -- who the caller is ----------------------------------------------------------------------------

# Upstream request headers as (lower-case name, value); a None value removes the header
HeaderPairs = tuple[tuple[bytes, bytes | None], ...]


class Credential:
    """What a request authenticated with: one of Kong's credential entities (a key-auth key, a
    basic-auth user, a jwt secret), or openid-connect's virtual credential (its credential_claim).

    `identifier` is what Kong sends upstream as X-Credential-Identifier ("" sends none)."""

    __slots__ = ("consumer_id", "id", "identifier", "kind")

    def __init__(
        self, kind: str, id: str, identifier: str = "", consumer_id: str | None = None
    ) -> None:
        self.kind = kind  # the entity ("keyauth_credentials", ...) or the plugin's name
        self.id = id
        self.identifier = identifier
        self.consumer_id = consumer_id


class Authenticated(Principal):
    """Kong's authenticated consumer and credential for one request (kong.client.authenticate):
    set by the authentication plugin that accepted the request, read by every later step
    (acl, rate-limiting, consistent hashing, the log record, per-consumer metrics)."""

    __slots__ = (
        "anonymous",
        "consumer",
        "credential",
        "groups",
        "upstream_headers",
        "upstream_values",
    )

    def __init__(
        self,
        consumer: Consumer | None,
        credential: Credential | None,
        groups: tuple[str, ...] | None = None,
        anonymous: bool = False,
        upstream_headers: HeaderPairs = (),
    ) -> None:
        self.consumer = consumer
        self.credential = credential
        # authenticated groups (Kong's authenticated_groups, from openid-connect's
        # authenticated_groups_claim), for acl; None: the plugin found none
        self.groups = groups
        self.anonymous = anonymous  # the plugin's `anonymous` consumer: nobody authenticated
        # what the upstream is told about it (fastgw.plugins.identity), made once per identity;
        # `upstream_values` the headers of it that have a value (appended as they are)
        self.upstream_headers = upstream_headers
        self.upstream_values: tuple[tuple[bytes, bytes], ...] = tuple(
            (name, value) for name, value in upstream_headers if value is not None
        )

    @property
    def hash_key(self) -> bytes:
        """Consistent hashing's `hash_on: consumer` key: the consumer, else the credential."""
        if self.consumer is not None:
            return self.consumer.id.encode()
        if self.credential is not None:
            return self.credential.id.encode()
        return b""


def authenticated(ctx: RequestContext) -> Authenticated | None:
    """Who the request's plugins authenticated so far (Kong's get_consumer / get_credential)."""
    principal = ctx.principal
    return principal if isinstance(principal, Authenticated) else None


# -- what the log record carries beyond Kong's fields ---------------------------------------------

# Where a request's serialize values wait in its shared values: a key no Kong plugin can use.
_SERIALIZE_VALUES = "\0kong.log.serialize_values"
SERIALIZE_MODES = ("set", "add", "replace")


def set_serialize_value(ctx: RequestContext, key: str, value: object, mode: str = "set") -> None:
    """Kong's kong.log.set_serialize_value: one more field in this request's log record, for
    every logger (file-log, http-log, tcp-log). A dotted `key` names a nested field ("\\."
    escapes a dot); mode "set" writes, "add" only when the field is missing, "replace" only
    when present; None removes it. correlation-id sets `correlation_id` this way. Values are
    JSON values (str, int, float, bool, None, lists and dicts of them)."""
    if mode not in SERIALIZE_MODES:
        raise ValueError(f"mode must be one of {', '.join(SERIALIZE_MODES)}")
    shared = ctx.shared()
    values = shared.get(_SERIALIZE_VALUES)
    if not isinstance(values, list):
        values = shared[_SERIALIZE_VALUES] = []
    values.append((key, value, mode))


def serialize_values(ctx: LogContext) -> list[tuple[str, object, str]]:
    """The (key, value, mode) the request's plugins set, in order (none: an empty list)."""
    shared = ctx.shared_values
    if shared is None:
        return []
    values = shared.get(_SERIALIZE_VALUES)
    return values if isinstance(values, list) else []


class RequestContext(Protocol):
    """What a plugin may read and change about one request.

    Header names are lower-case bytes; values are bytes as received. The wire layer's
    `Exchange` implements this protocol directly, so a context costs no extra allocation.
    """

    method: bytes  # b"GET" (a plugin may change the method sent upstream)
    path: bytes  # request path as received, without the query
    query: bytes  # raw query string without "?", b"" when absent
    host: bytes  # Host header value, b"" when absent
    upstream_path: bytes  # the path sent upstream (the route's rewrite done); a plugin may set it
    upstream_host: bytes | None  # the Host sent upstream; None: the service's (or preserved)
    headers: list[tuple[bytes, bytes]]  # the end-to-end fields; a plugin may replace the list
    # the framing and forwarding fields the wire keeps apart from `headers`:
    content_length: int  # the request's Content-Length, -1 when absent (chunked or no body)
    expect_continue: bool  # the client sent Expect: 100-continue (it waits to send the body)
    x_forwarded_for: bytes | None  # the client's X-Forwarded-For fields, joined by ", "
    x_real_ip: bytes | None  # the client's X-Real-IP field
    responded: bool  # a plugin answered the client; the chain stops
    # who the request is (an `Authenticated`, set by the plugin that authenticated it)
    principal: Principal | None
    shared_values: dict[str, object] | None  # `shared()` once made, else None

    @property
    def client_ip(self) -> str: ...

    @property
    def connection_memo(self) -> dict[object, object]:
        """Values a plugin keeps between the requests of one client connection, under a key of
        its own (e.g. the plugin instance): gone with the connection."""

    def get_header(self, name: bytes) -> bytes | None:
        """First value of header `name` (lower-case), or None."""

    def set_header(self, name: bytes, value: bytes) -> None:
        """Replace every header `name` with one header of `value` (upstream request)."""

    def remove_header(self, name: bytes) -> None:
        """Remove every header `name` from the upstream request."""

    def set_query(self, query: bytes) -> None:
        """Replace the query string sent upstream (b"" removes it)."""

    def has_body(self) -> bool:
        """True when the request announces a body (Content-Length > 0 or chunked)."""

    async def read_body(self, limit: int) -> bytes | None:
        """The whole request body if it is at most `limit` bytes, else None.

        The body is still forwarded upstream intact either way.
        """

    def replace_body(self, body: bytes) -> None:
        """Send `body` upstream instead of the received one (after `read_body` returned it)."""

    def respond(
        self, status: int, body: bytes, headers: Sequence[tuple[bytes, bytes]] = ()
    ) -> None:
        """Answer the client directly; the upstream is not contacted."""

    def respond_prepared(
        self,
        status: int,
        body: bytes,
        headers: Sequence[tuple[bytes, bytes]],
        fields: bytes,
    ) -> None:
        """`respond`, with `headers` also written out as `fields` ("name: value\r\n" each), made
        once and kept by the plugin (a cached response): sent as they are unless edited."""

    def shared(self) -> dict[str, object]:
        """Values the plugins of this request share (Kong's kong.ctx.shared)."""

    # The response (Kong's kong.response.* in access, applied when the head goes out, to the
    # upstream's answer and to a local one alike):

    def set_response_header(self, name: bytes, value: bytes) -> None:
        """One response field `name` (lower case) of `value`, replacing the upstream's."""

    def set_response_headers(self, fields: Sequence[tuple[bytes, bytes]]) -> None:
        """`set_response_header` for each (name, value) of `fields` (distinct lower-case
        names): one call for a plugin that sets several on every request."""

    def set_response_lines(self, lines: bytes, names: tuple[bytes, ...], probe: bytes) -> None:
        """`set_response_header` for each of the fields `names` (distinct, lower case), given
        as the CRLF-terminated field lines `lines` the plugin rendered: the cheapest way to set
        several fields on every request. `probe`: lower-case text all of `names` contain (the
        upstream's head is searched for it, not for each name)."""

    def add_response_header(self, name: bytes, value: bytes) -> None:
        """One more response field `name` (lower case); the upstream's stay."""

    def remove_response_header(self, name: bytes) -> None:
        """No response field `name` (lower case)."""

    def add_response_filter(self, response_filter: ResponseFilter) -> None:
        """Watch the upstream's response of this request (fastgw.http.response_edits)."""


class LogContext(RequestContext, Protocol):
    """What the log phase reads of a finished request (the wire's `Exchange` again).

    Times are `time.monotonic()` seconds; `sent_at` is 0.0 when the request went upstream as
    soon as the handler ran (then it equals `started_at`), `response_at` 0.0 when no upstream
    answered.
    """

    started_at: float
    sent_at: float
    response_at: float
    finished_at: float
    request_size: int  # the request head as parsed
    body_received: int
    response_size: int
    response_fields: bytes  # the upstream's header lines as forwarded, b"" for local answers
    local_headers: Sequence[tuple[bytes, bytes]]
    shared_values: dict[str, object] | None  # what `shared()` holds, None when never used

    @property
    def response_status(self) -> int: ...


class RouteInfo:
    """A route as the log phase names it: Kong's label values, and the config entities.

    `service` and `route` are fastgw.config's Service and Route (None: no route matched);
    `sensitive_headers` are request headers the route's plugins fill with secrets (on top of
    the ones every logger redacts).
    """

    __slots__ = (
        "log_record",
        "route",
        "route_name",
        "sensitive_headers",
        "service",
        "service_name",
    )

    def __init__(
        self,
        service_name: str,
        route_name: str,
        service: Any,
        route: Any,
        sensitive_headers: frozenset[bytes] = frozenset(),
    ) -> None:
        self.service_name = service_name
        self.route_name = route_name
        self.service = service
        self.route = route
        self.sensitive_headers = sensitive_headers
        # what Kong's loggers made of this route once (fastgw.plugins.kong_log.record's
        # RouteRecord), shared by every logger on it
        self.log_record: object = None


# Plugins outside the compiled build (request-termination, a user's own) subclass Plugin.
@mypyc_attr(allow_interpreted_subclasses=True)
class Plugin:
    """One configured plugin instance. Subclasses set `name` and `priority`.

    `access` runs for each request on the routes the instance applies to. It returns None when
    it finished synchronously (the hot path), or an awaitable when it must wait (e.g. the IdP).
    """

    name: str = ""
    priority: int = 0  # higher runs first, as in Kong
    # where the instance is configured ("services[0].plugins[1]"), set by the gateway: the
    # `instance` label of its metrics, the same in every worker and across restarts
    instance_name = ""
    has_log = False  # True when `log` does something: only then do its routes run a log phase
    # request headers this plugin fills with secrets (e.g. the upstream token): loggers redact
    sensitive_headers: frozenset[bytes] = frozenset()
    # request headers this plugin sets for the upstream (lower case): their "_" aliases a client
    # sends are dropped whatever underscores_in_headers says (fastgw.proxy.dispatch.owned_fields)
    owned_headers: frozenset[bytes] = frozenset()

    def access(self, ctx: RequestContext) -> Awaitable[None] | None:
        return None

    def for_route(self, service: Any, route: Any) -> Plugin:
        """The plugin a route's chain runs (fastgw.config's Service and Route): this instance,
        or one bound to the route for what a request alone does not say (Kong's matched route,
        e.g. proxy-cache's key prefix, rate-limiting's `limit_by: service`), sharing this
        instance's state. Called once per route when a config loads; the instance itself is
        what starts, stops and reports."""
        return self

    def log(self, ctx: LogContext, route: RouteInfo) -> None:
        """Kong's log phase: the response is complete (set `has_log` to be called)."""

    def route_stats(self) -> StatsOptions | None:
        """What the gateway should count for the routes of this instance (per-worker request
        counters, fastgw.observability.counters), or None. Counting costs the log phase's clock
        reads."""
        return None

    async def start(self) -> None:
        """Called once when the gateway starts (inside the running loop)."""

    async def stop(self) -> None:
        """Called once when the gateway stops."""

    def metrics(self) -> list[Family]:
        """Metric families for the admin listener's /metrics (fastgw.observability.metrics; none
        by default). With several workers the admin listener sums them over the workers."""
        return []

    def status(self) -> dict[str, object]:
        """What /status reports about this instance (JSON values; numbers are summed over the
        workers, booleans and-ed, other values taken from the first)."""
        return {}

    def stores(self) -> list[StoreUsage]:
        """The instance's bounded in-memory stores and their use (none by default): the store
        registry's one way in (fastgw/observability/stores.py). Every store keyed by what
        clients send must have a bound and be listed here; the gateway asks at scrape time
        (so this must be cheap: counters, not walks), /metrics exports each store as Kong
        exports a shared dict (kong_memory_lua_shared_dict_bytes{shared_dict=<name>} and
        _total_bytes). Name a store after what it holds and where the instance is, the same in
        every worker ("proxy-cache memory (plugins[2])", using `instance_name`); a store that
        several instances share (one file-log queue per path) is reported under one name, and
        the registry keeps the first report. Bounded by entries: report entries and
        capacity_entries, and bytes as entries times a typical entry size; bounded by bytes:
        report the bytes, capacity_entries 0:

            def stores(self) -> list[StoreUsage]:
                where = self.instance_name
                return [StoreUsage(f"rate-limiting counters ({where})",
                                   len(self._counts) * COUNTER_BYTES, MAX_COUNTERS * COUNTER_BYTES,
                                   len(self._counts), MAX_COUNTERS)]
        """
        return []

    def reopen(self) -> None:
        """SIGUSR1 (logrotate's convention): reopen any file this instance writes."""
