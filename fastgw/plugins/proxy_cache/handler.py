"""The `proxy-cache` step (Kong's access, header_filter and body_filter phases): a fresh stored
response is answered at once, without the upstream; a miss goes upstream and a response
filter stores what came back, if it may be cached.

A hit is synchronous and hashes nothing: one key built from the request, one lookup, the
stored answer (its extra fields made once per second of age). X-Cache-Status says what
happened (Kong's Miss, Hit, Refresh, Bypass), X-Cache-Key the key's digest, Age how old a hit is.

Never cached, whatever the config (fastgw's rules where Kong's cache would leak an answer):
a request with an Authorization header that no plugin authenticated (the upstream checks it:
its answer is that caller's), and a response setting a cookie (Kong would replay it to every
caller). An authenticated request reads and fills only its consumer's cache (Kong's rule; here
its credential's when no consumer is mapped).
"""

from __future__ import annotations

from time import monotonic
from typing import Final

from fastgw.http.response_edits import ResponseEdits, ResponseFilter
from fastgw.observability.metrics import Family, counter
from fastgw.plugins.api import Plugin, RequestContext, StoreUsage, authenticated

from .directives import (
    Directives,
    media_type_matches,
    parse_directives,
    parse_media_type,
    resource_ttl,
    seconds,
    wall_clock,
)
from .key import cache_key, headers_part, identity, key_hex, query_part, route_prefix
from .schema import CacheConfig
from .store import Entry, Fields, MemoryStore

PRIORITY: Final = 100  # Kong's

HIT: Final = b"Hit"
MISS: Final = b"Miss"
REFRESH: Final = b"Refresh"
BYPASS: Final = b"Bypass"
_STATUS: Final = b"x-cache-status"
_KEY: Final = b"x-cache-key"
_AGE: Final = b"age"
_AUTHORIZATION: Final = b"authorization"
_CACHE_CONTROL: Final = b"cache-control"
_KONG_DEBUG: Final = b"kong-debug"  # Kong: any value shows every diagnostic field
# Which diagnostic fields go out (Kong's response_headers toggles), as bits
SHOW_AGE: Final = 1
SHOW_STATUS: Final = 2
SHOW_KEY: Final = 4
SHOW_ALL: Final = 7
# Fields of a stored response that are not replayed (Kong's reset_res_header); and any whose
# name holds "ratelimit-remaining" (a count of the moment it was stored)
_NOT_REPLAYED: Final = frozenset({b"age", b"x-cache-status", b"x-cache-key"})
_RATELIMIT_REMAINING: Final = b"ratelimit-remaining"
_NO_DIRECTIVES: Directives = {}
# (the outcome the lookups counter names, its index in Counts.lookups)
OUTCOMES: Final = ("hit", "miss", "refresh", "bypass")
_HIT, _MISS, _REFRESH, _BYPASS = range(4)


class Cache:
    """What every route's instance of one configured proxy-cache shares: the config read for
    the hot path, the store, the counters."""

    __slots__ = (
        "cache_control",
        "cache_ttl",
        "codes",
        "config",
        "ignore_case",
        "lookups",
        "methods",
        "not_stored",
        "shown",
        "storage_ttl",
        "store",
        "stored",
        "vary_headers",
        "vary_query",
    )

    def __init__(self, config: CacheConfig, store: MemoryStore) -> None:
        self.config = config
        self.store = store
        self.methods = frozenset(method.encode() for method in config.request_method)
        self.codes = frozenset(config.response_code)
        self.vary_query = config.vary_query_params
        self.vary_headers = tuple(name.lower().encode() for name in config.vary_headers)
        self.cache_control = config.cache_control
        self.cache_ttl = float(config.cache_ttl)
        self.storage_ttl = config.storage_ttl
        self.ignore_case = config.ignore_uri_case
        self.shown = (
            (SHOW_AGE if config.show_age else 0)
            | (SHOW_STATUS if config.show_status else 0)
            | (SHOW_KEY if config.show_key else 0)
        )
        self.lookups = [0, 0, 0, 0]  # by OUTCOMES
        self.stored = 0
        self.not_stored = 0  # cacheable, but too big for the store (streamed through)


class ProxyCache(Plugin):
    name = "proxy-cache"
    priority = PRIORITY

    def __init__(self, cache: Cache, prefix: bytes = b"default") -> None:
        self.cache = cache
        self.prefix = prefix  # the route's part of the key (Kong: the route id)

    def for_route(self, service: object, route: object) -> Plugin:
        return ProxyCache(self.cache, route_prefix(service, route))

    def access(self, ctx: RequestContext) -> None:
        cache = self.cache
        shown = cache.shown
        if shown != SHOW_ALL and ctx.get_header(_KONG_DEBUG) is not None:
            shown = SHOW_ALL
        if ctx.method not in cache.methods:
            _bypass(ctx, cache, shown)
            return
        directives = _NO_DIRECTIVES
        if cache.cache_control:
            directives = _request_directives(ctx)
            if "no-store" in directives or "no-cache" in directives:
                _bypass(ctx, cache, shown)
                return
        who = identity(authenticated(ctx))
        if who is None:
            if ctx.get_header(_AUTHORIZATION) is not None:
                _bypass(ctx, cache, shown)  # the upstream's own authentication: not shared
                return
            prefix = self.prefix
        else:
            prefix = who + b":" + self.prefix
        path = ctx.path.lower() if cache.ignore_case else ctx.path
        query = query_part(ctx.query, cache.vary_query) if ctx.query else b""
        headers = headers_part(ctx.headers, cache.vary_headers) if cache.vary_headers else b""
        key = cache_key(prefix, ctx.method, path, query, headers)
        now = monotonic()
        entry = cache.store.get(key, now)
        if entry is None:
            if "only-if-cached" in directives:
                # RFC 9111 §5.2.1.7: nothing stored, and the client wants nothing else
                if shown & SHOW_KEY:
                    ctx.set_response_header(_KEY, key_hex(key))
                ctx.respond(504, b"")
                return
            _to_upstream(ctx, cache, key, key_hex(key), _MISS, shown)
            return
        age = now - entry.stored_at
        if _stale(cache, entry, age, directives):
            _to_upstream(ctx, cache, key, entry.key_hex, _REFRESH, shown)
            return
        cache.lookups[_HIT] += 1
        whole = int(age)
        if entry.hit_age != whole or entry.hit_shown != shown:
            hit_fields = entry.hit_fields = _hit_fields(entry, whole, shown)
            entry.hit_lines = b"".join(b"%b: %b\r\n" % field for field in hit_fields)
            entry.hit_age = whole
            entry.hit_shown = shown
        ctx.respond_prepared(entry.status, entry.body, entry.hit_fields, entry.hit_lines)

    # -- reports ---------------------------------------------------------------------------------

    def stores(self) -> list[StoreUsage]:
        store = self.cache.store
        if store.reporter is None:
            store.reporter = self
        return [store.usage()] if store.reporter is self else []

    async def stop(self) -> None:
        store = self.cache.store
        if store.reporter is self:
            store.reporter = None  # another instance naming the store reports it from now on

    def status(self) -> dict[str, object]:
        cache = self.cache
        store = cache.store
        report: dict[str, object] = dict(zip(OUTCOMES, cache.lookups, strict=True))
        report.update(
            stored=cache.stored,
            too_large=cache.not_stored,
            dictionary_name=store.name,
            entries=len(store.entries),
            used_bytes=store.used,
            capacity_bytes=store.capacity,
        )
        return report

    def metrics(self) -> list[Family]:
        family = counter(
            "fastgw_proxy_cache_lookups_total",
            "proxy-cache lookups by X-Cache-Status: hit, miss, refresh, bypass.",
            ("instance", "result"),
        )
        for outcome, count in zip(OUTCOMES, self.cache.lookups, strict=True):
            family.add((self.instance_name, outcome), count)
        return [family]


def _request_directives(ctx: RequestContext) -> Directives:
    values = [value for name, value in ctx.headers if name == _CACHE_CONTROL]
    return parse_directives(values) if values else _NO_DIRECTIVES


def _bypass(ctx: RequestContext, cache: Cache, shown: int) -> None:
    cache.lookups[_BYPASS] += 1
    if shown & SHOW_STATUS:
        ctx.set_response_header(_STATUS, BYPASS)


def _to_upstream(
    ctx: RequestContext, cache: Cache, key: bytes, digest: bytes, outcome: int, shown: int
) -> None:
    """A miss or a refresh: proxied, and stored on the way back if it may be."""
    cache.lookups[outcome] += 1
    if shown & SHOW_STATUS:
        ctx.set_response_header(_STATUS, MISS if outcome == _MISS else REFRESH)
    if shown & SHOW_KEY:
        ctx.set_response_header(_KEY, digest)
    ctx.add_response_filter(Storing(cache, key, digest, shown, outcome))


def _stale(cache: Cache, entry: Entry, age: float, directives: Directives) -> bool:
    """Whether a stored entry may not answer this request (Kong's freshness checks; with
    cache_control, an entry past its lifetime is stale unless the client accepts it with
    max-stale, as RFC 9111 §4.2.4 says; Kong would serve it until its storage TTL)."""
    if not cache.cache_control:
        return age > cache.cache_ttl
    max_age = seconds(directives, "max-age")
    if max_age is not None and age > max_age:
        return True
    min_fresh = seconds(directives, "min-fresh")
    if min_fresh is not None and entry.ttl - age < min_fresh:
        return True
    if age <= entry.ttl:
        return False
    max_stale = directives.get("max-stale")
    if max_stale is True:
        return False  # any staleness accepted
    return not isinstance(max_stale, int) or age - entry.ttl > max_stale


def _hit_fields(entry: Entry, age: int, shown: int) -> Fields:
    extra: list[tuple[bytes, bytes]] = []
    if shown & SHOW_AGE:
        extra.append((_AGE, b"%d" % age))
    if shown & SHOW_STATUS:
        extra.append((_STATUS, HIT))
    if shown & SHOW_KEY:
        extra.append((_KEY, entry.key_hex))
    return entry.fields + tuple(extra)


class Storing(ResponseFilter):
    """Keeps one upstream response for the store, if it may be cached and fits."""

    def __init__(
        self, cache: Cache, key: bytes, digest: bytes, shown: int, outcome: int = _MISS
    ) -> None:
        self.cache = cache
        self.outcome = outcome  # what access counted (a miss or a refresh)
        self.key = key
        self.digest = digest
        self.shown = shown
        self.active = False
        self.status = 0
        self.fields: Fields = ()
        self.ttl = 0.0
        self.chunks: list[bytes] = []
        self.size = 0  # bytes reserved in the store

    def response_head(self, status: int, fields: bytes, edits: ResponseEdits) -> None:
        kept = cacheable(self.cache, status, fields)
        if kept is None:
            # Kong's Bypass overrides the Miss (or Refresh) said before: so do the counters
            lookups = self.cache.lookups
            lookups[self.outcome] -= 1
            lookups[_BYPASS] += 1
            if self.shown & SHOW_STATUS:
                edits.set(_STATUS, BYPASS)
            return
        self.fields, self.ttl = kept
        self.status = status
        self.active = True

    def response_body(self, data: bytes) -> None:
        if not self.active:
            return
        store = self.cache.store
        if self.size + len(data) > store.capacity or not store.reserve(len(data)):
            self._give_up()
            self.cache.not_stored += 1  # it streams on to the client, uncached
            return
        self.size += len(data)
        self.chunks.append(data)

    def response_complete(self) -> None:
        if not self.active:
            return
        cache = self.cache
        body = b"".join(self.chunks)
        self._give_up()
        storage_ttl = cache.storage_ttl
        entry = Entry(
            self.status,
            self.fields,
            body,
            monotonic(),
            self.ttl,
            self.ttl if storage_ttl is None else float(storage_ttl),
            self.digest,
        )
        if cache.store.put(self.key, entry):
            cache.stored += 1
        else:
            cache.not_stored += 1

    def response_aborted(self) -> None:
        self._give_up()

    def _give_up(self) -> None:
        self.active = False
        self.cache.store.release(self.size)
        self.size = 0
        self.chunks = []


def cacheable(cache: Cache, status: int, fields: bytes) -> tuple[Fields, float] | None:
    """The fields to store and the freshness lifetime, or None when the response may not be
    stored (Kong's cacheable_response, and the Set-Cookie rule)."""
    if status not in cache.codes:
        return None
    parsed: list[tuple[bytes, bytes]] = []
    content_types: list[bytes] = []
    directives: list[bytes] = []
    expires: bytes | None = None
    for line in fields.split(b"\r\n")[:-1]:
        raw_name, _, raw_value = line.partition(b":")
        name, value = raw_name.lower(), raw_value.strip(b" \t")
        if name == b"set-cookie":
            return None
        if name == b"content-type":
            content_types.append(value)
        elif name == _CACHE_CONTROL:
            directives.append(value)
        elif name == b"expires":
            expires = value  # Kong reads the last one
        if name not in _NOT_REPLAYED and _RATELIMIT_REMAINING not in name:
            parsed.append((raw_name, value))
    if len(content_types) != 1 or not content_types[0]:
        return None
    media_type = parse_media_type(content_types[0].decode("latin-1"))
    if media_type is None or not any(
        media_type_matches(configured, media_type) for configured in cache.config.content_type
    ):
        return None
    ttl = cache.cache_ttl
    if cache.cache_control:
        parsed_directives = parse_directives(directives)
        if any(name in parsed_directives for name in ("private", "no-store", "no-cache")):
            return None
        ttl = resource_ttl(parsed_directives, expires, wall_clock())
        if ttl <= 0:
            return None
    return tuple(parsed), ttl
