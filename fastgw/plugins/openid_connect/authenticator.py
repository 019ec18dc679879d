"""Client credentials in, a verified (cached) access token out: the embedding API, plugin core.

Composes the L1 (cache.py, whose `hit` is the hit path), the flight (fetching.py), admission to
the IdP (admission.py) and discovery; the `openid-connect` plugin is a thin adapter over it.
"""

from __future__ import annotations

import asyncio
import datetime
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Hashable, Mapping
from typing import Any

import orjson

from fastgw.config.consumers import Consumers
from fastgw.observability.metrics import Family
from fastgw.observability.ratelog import KeyedRateLimitedLog
from fastgw.plugins.api import StoreUsage
from fastgw.plugins.building import HttpClient

from .admission import (
    KNOWN,
    NO_SOURCE,
    REFRESH,
    UNKNOWN,
    Admission,
    KnownGood,
    known_good_families,
    source_of,
)
from .cache import REFRESH_RETRY_SECONDS, Entry, Token, TokenCache, credentials_cache_key
from .credentials import ClientCredentials, CredentialError, parse_basic
from .discovery import Discovery
from .errors import AuthError, InsufficientScope, InvalidCredentials
from .fetching import TokenFetcher
from .flights import SingleFlight
from .identity import IdentityHeaders
from .l2 import (
    DEFAULT_MAX_CONNECTIONS,
    LOCK_MARGIN_SECONDS,
    SharedStore,
    SharedTokenCache,
    connect,
    metric_families,
)
from .schema import OidcConfig, from_mapping
from .sealing import Sealer
from .stats import OidcStats, families

logger = logging.getLogger("fastgw.oidc")

# The same IdP failure (or a flood of misses meeting a failing IdP) is logged at most once per
# this interval per plugin instance; the repeats are counted into its next report.
IDP_WARNING_INTERVAL_SECONDS = 1.0

# plugin instances in this process, for the `instance` label of their metrics
_instances = itertools.count()


def _token_prefix(upstream_access_token_header: str) -> tuple[bytes, bytes]:
    """("authorization", b"Bearer ") for "authorization:bearer"; no scheme → the raw token."""
    name, _, scheme = upstream_access_token_header.partition(":")
    if scheme.lower() == "bearer":
        scheme = "Bearer"
    prefix = f"{scheme} ".encode() if scheme else b""
    return name.lower().encode(), prefix


def _header_bytes(authorization: str | bytes) -> bytes:
    return authorization.encode("latin-1") if isinstance(authorization, str) else authorization


class ClientCredentialsAuthenticator:
    """Turns a caller's client id and secret into a verified access token, cached.

    `authenticate_cached` is synchronous (L1 only); `authenticate` fetches on a miss. Errors are
    `InvalidCredentials` (401), `InsufficientScope` (403), `IdpUnavailable` (502; its subclass
    `IdpTokenRejected` when the token the IdP issued fails verification), `IdpTimeout` (504),
    `IdpBusy` (503) and `TooManyWaiting` (429), from `fastgw.plugins.openid_connect`.

    For the plugin: `cache.hit(cache.header_key(header))` is the hit; `cached_for_header` and
    `lookup` the synchronous rest; `obtain` the miss.
    """

    def __init__(
        self,
        config: OidcConfig,
        http_client: HttpClient,
        *,
        spawn: Callable[[Awaitable[Any]], Any] | None = None,
        shared_store: SharedStore | None = None,
        owns_http_client: bool = False,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        consumers: Consumers | None = None,
        admission: Admission | None = None,
    ) -> None:
        self.config = config
        self.clock = clock  # epoch seconds: token `exp` is in those
        self.stats = OidcStats()
        self.cache = TokenCache(enabled=config.cache_tokens, clock=clock, stats=self.stats)
        self.upstream_header_name, self.token_prefix = _token_prefix(
            config.upstream_access_token_header
        )
        self.identity = IdentityHeaders(config, consumers or Consumers())
        self._key_scope = config.scope if config.token_cache_key_include_scope else None
        self._http = http_client
        self._owns_http = owns_http_client
        self._spawn = spawn if spawn is not None else self._spawn_task
        self._tasks: set[asyncio.Task[Any]] = set()
        self._flights: SingleFlight[str, Entry] = SingleFlight()
        # calls of obtain() that had to wait for a token (IdP or L2); background refreshes and
        # cache hits do not count: with refresh-ahead working, it grows only with new clients
        self.waited_for_token = 0
        # one bound on the IdP calls of the plugin instance (introspection shares it)
        self.admission = admission if admission is not None else Admission()
        self.known = KnownGood()
        self.instance = next(_instances)
        self.shared = self._shared_cache(config, shared_store)
        self.discovery = discovery_for(config, http_client, monotonic, self.stats)
        self._fetcher = TokenFetcher(
            config,
            http_client,
            cache=self.cache,
            discovery=self.discovery,
            identity=self.identity,
            token_prefix=self.token_prefix,
            shared=self.shared,
            admission=self.admission,
            known=self.known,
            stats=self.stats,
            warnings=KeyedRateLimitedLog(
                logger, logging.WARNING, IDP_WARNING_INTERVAL_SECONDS, monotonic
            ),
            clock=clock,
            request_shape=orjson.dumps(
                [config.token_endpoint, config.scope, config.token_post_args, config.token_headers]
            ).decode(),
        )
        self._discovery_task: asyncio.Task[None] | None = None
        self._closed = False

    @classmethod
    def from_config(
        cls,
        config: Mapping[str, Any] | OidcConfig,
        http_client: HttpClient | None = None,
        **options: Any,
    ) -> ClientCredentialsAuthenticator:
        """From a config mapping in Kong's shape (or a parsed `OidcConfig`); raises ConfigError.

        Without `http_client`, one is made (TLS verification per `ssl_verify`) and closed by
        `close()`. `options`: `shared_store` (a `SharedStore` in place of the configured
        Redis), `spawn`, `clock`, `monotonic`, `consumers` (for consumer mapping), `admission`
        (an `Admission` of another size than admission.IDP_MAX_CONCURRENCY slots).
        """
        parsed = config if isinstance(config, OidcConfig) else from_mapping(config)
        if http_client is not None:
            return cls(parsed, http_client, **options)
        from fastgw.http.client import HttpClient as GatewayHttpClient

        own: HttpClient = GatewayHttpClient(
            verify_tls=parsed.ssl_verify, keepalive=parsed.keepalive
        )
        return cls(parsed, own, owns_http_client=True, **options)

    @staticmethod
    def _shared_cache(config: OidcConfig, store: SharedStore | None) -> SharedTokenCache | None:
        redis = config.cluster_cache_redis
        if not config.cache_tokens or config.cluster_cache_secret is None:
            return None
        if store is None:
            if redis is None:
                return None
            store = connect(redis)
        timeout = 1.0 if redis is None else (redis.connect_timeout + redis.read_timeout) / 1000
        return SharedTokenCache(
            store,
            Sealer(config.cluster_cache_secret),
            timeout=timeout,
            # a holder's fetch is bounded by the IdP timeout (token request and JWKS)
            lock_lease=config.timeout_seconds + LOCK_MARGIN_SECONDS,
            max_connections=DEFAULT_MAX_CONNECTIONS if redis is None else redis.keepalive_pool_size,
        )

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Begin discovery in the background: returns at once, even when the IdP is down."""
        config = self.config
        needed = (
            config.token_endpoint is None
            or config.verify_signature
            or (config.introspection_enabled and config.introspection_endpoint is None)
        )
        if needed and self._discovery_task is None:
            self._discovery_task = asyncio.get_running_loop().create_task(self.discovery.run())

    async def close(self) -> None:
        self._closed = True
        if self._discovery_task is not None:
            self._discovery_task.cancel()
        await self.discovery.close()
        self._flights.cancel_all()
        for task in tuple(self._tasks):
            task.cancel()
        if self.shared is not None:
            await self.shared.close()
        if self._owns_http:
            await self._http.close()

    def metrics(self, instance: str | None = None) -> list[Family]:
        """Metric families under the `instance` label (default: this process's number for the
        authenticator): the L1, IdP, admission and JWKS counters, and the shared cache's."""
        label = str(self.instance) if instance is None else instance
        result = families(self.stats, label, self.cache.evictions, self._flights.joins)
        result += self.admission.metric_families(label)
        result += known_good_families(self.known, label, "clients")
        if self.shared is not None:
            result += metric_families(self.shared.stats, label)
        return result

    def status(self) -> dict[str, object]:
        """For /status: cached clients and negative entries (used and capacity), whether the
        IdP answered its last call, when the signing keys were last fetched, the IdP slots."""
        last = self.stats.last_jwks_refresh
        reachable = self.stats.idp_reachable
        return {
            "cached_clients": self.cache.clients(),
            "cache_capacity": self.cache.max_entries,
            "negative_entries": len(self.cache.rejections),
            "negative_capacity": self.cache.max_entries,
            "known_clients": len(self.known),
            "known_clients_capacity": self.known.capacity,
            "idp_reachable": None if reachable < 0 else reachable == 1,
            "last_jwks_refresh": (
                datetime.datetime.fromtimestamp(last, datetime.UTC).isoformat(timespec="seconds")
                if last
                else None
            ),
            # fetches under way (each within its deadline): waiting for a slot, or at the IdP
            "token_fetches": len(self._flights),
            "idp_admission": self.admission.status(),
        }

    def stores(self, where: str) -> list[StoreUsage]:
        """The bounded stores keyed by what callers send: the token cache, the rejections,
        the known-good credentials, the IdP admission queues (`where`: the instance's place)."""
        stores = self.cache.usage(
            f"openid-connect token cache ({where})", f"openid-connect rejections ({where})"
        )
        stores.append(self.known.usage(f"openid-connect known-good clients ({where})"))
        stores.append(self.admission.usage(f"openid-connect IdP admission queues ({where})"))
        return stores

    def _spawn_task(self, awaitable: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(awaitable)
        self._tasks.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(self._tasks.discard)

    # -- keys -------------------------------------------------------------------------------------

    def header_key(self, authorization: bytes) -> bytes:
        return self.cache.header_key(authorization)

    def credentials_key(self, credentials: ClientCredentials) -> str:
        return credentials_cache_key(
            self.config.issuer, credentials, self.config.cache_tokens_salt, self._key_scope
        )

    # -- embedding API ----------------------------------------------------------------------------

    def authenticate_cached(self, authorization: str | bytes) -> Token | None:
        """The cached token for a Basic header value, or None (L1 only, never waits). A token
        close to expiry is returned and refreshed in the background."""
        raw = _header_bytes(authorization)
        key = self.cache.header_key(raw)
        entry = self.cache.hit(key)
        if entry is None:
            try:
                credentials = parse_basic(raw)
            except CredentialError:
                return None
            entry = self._due_for_refresh(key, credentials)
        return None if entry is None else entry.token

    async def authenticate(self, authorization: str | bytes, *, client_address: str = "") -> Token:
        """The verified token for a Basic header value (`Basic base64(id:secret)`);
        `client_address` is the caller's, for fair admission to the IdP."""
        raw = _header_bytes(authorization)
        key = self.cache.header_key(raw)
        entry = self.cache.hit(key)
        if entry is not None:
            return entry.token
        try:
            credentials = parse_basic(raw)
        except CredentialError as problem:
            raise InvalidCredentials(str(problem)) from None
        entry, error = self.cached_for_header(key, credentials)
        if error is not None:
            raise _fresh(error)
        if entry is None:
            entry = await self.obtain(credentials, alias=key, client_address=client_address)
        return entry.token

    async def authenticate_client(
        self, client_id: str, client_secret: str, *, client_address: str = ""
    ) -> Token:
        """As `authenticate`, for an id and secret found elsewhere (a body, a query)."""
        if not client_id or not client_secret:
            raise InvalidCredentials("empty client_id or client_secret")
        credentials = ClientCredentials(client_id, client_secret)
        entry, error = self.lookup(credentials)
        if error is not None:
            raise _fresh(error)
        if entry is not None:
            return entry.token
        return (await self.obtain(credentials, client_address=client_address)).token

    # -- synchronous, past the hit ----------------------------------------------------------------

    def cached_for_header(
        self, key: bytes, credentials: ClientCredentials
    ) -> tuple[Entry | None, AuthError | None]:
        """For a Basic header whose key `cache.hit` did not answer: its entry while it may still
        serve (one refresh started in the background), or its remembered rejection (not to be
        raised as is); (None, None) means `obtain` must fetch."""
        entry = self._due_for_refresh(key, credentials)
        if entry is not None:
            return entry, None
        error = self.cache.rejection(key, self.clock())
        if error is not None:
            self.stats.negative_hits += 1
        return None, error

    def _due_for_refresh(self, key: Hashable, credentials: ClientCredentials) -> Entry | None:
        now = self.clock()
        entry = self.cache.get(key)
        if entry is None or now >= entry.expires_at:
            return None
        self.stats.hits += 1
        self.refresh_in_background(entry, (key,), credentials, now)
        return entry

    def lookup(
        self, credentials: ClientCredentials, alias: Hashable | None = None
    ) -> tuple[Entry | None, AuthError | None]:
        """Synchronous: a servable entry or a remembered rejection for `credentials` (refreshing
        in the background when due); (None, None) means a fetch is needed."""
        now = self.clock()
        key = self.credentials_key(credentials)
        entry = self.cache.get(key)
        if entry is not None and now < entry.expires_at:
            self.stats.hits += 1
            aliases = (key,) if alias is None else (key, alias)
            if alias is not None:
                self.cache.store((alias,), entry, now)
            if now >= entry.refresh_at:
                self.refresh_in_background(entry, aliases, credentials, now)
            return entry, None
        rejection = self.cache.rejection(key, now)
        if rejection is not None:
            self.stats.negative_hits += 1
        return None, rejection

    def refresh_in_background(
        self,
        entry: Entry,
        aliases: tuple[Hashable, ...],
        credentials: ClientCredentials,
        now: float,
    ) -> None:
        """Start one background refresh of `entry`; the caller keeps serving it meanwhile."""
        if entry.refreshing or self._closed:
            return
        entry.refreshing = True
        self.stats.refresh_ahead += 1
        # hits stay pure meanwhile (no re-check per request); the refresh's outcome resets it
        entry.refresh_at = min(now + REFRESH_RETRY_SECONDS, entry.expires_at)
        self._spawn(self._refresh(entry, aliases, credentials))

    # -- the miss ---------------------------------------------------------------------------------

    async def _refresh(
        self, entry: Entry, aliases: tuple[Hashable, ...], credentials: ClientCredentials
    ) -> None:
        key = self.credentials_key(credentials)
        keys = (key, *aliases)
        fill = self._fetcher.fill
        try:
            await self._flights.run(
                key, lambda: fill(key, credentials, keys, entry, REFRESH, NO_SOURCE)
            )
        except AuthError:
            pass  # the flight kept the entry serving (stale-if-error) or remembered a rejection
        except Exception:
            logger.exception("background token refresh failed unexpectedly")
            entry.refresh_failed(self.clock())
        finally:
            entry.refreshing = False

    async def obtain(
        self,
        credentials: ClientCredentials,
        *,
        alias: Hashable | None = None,
        stale: Entry | None = None,
        client_address: str = "",
    ) -> Entry:
        """A token for `credentials` from the L1, L2 or IdP (single-flight per cache key).

        `alias` is another L1 key for the same credentials (a Basic header's hash); `stale` an
        expired entry that may still serve (stale-if-error) when the IdP fails (by default the
        one the L1 holds); `client_address` the caller's, for fair admission to the IdP.
        """
        entry, error = self.lookup(credentials, alias)
        if entry is not None:
            return entry
        if error is not None:
            if alias is not None:
                self._fetcher.remember_rejection((alias,), error)
            raise _fresh(error)
        key = self.credentials_key(credentials)
        keys = (key,) if alias is None else (key, alias)
        if stale is None:
            stale = self.cache.get(key) or (self.cache.get(alias) if alias is not None else None)
        # who goes first to the IdP: credentials that were good before, then never-seen ones
        # (an entry in the L1 is no sign: the IdP may have rejected its credentials since)
        kind = KNOWN if key in self.known else UNKNOWN
        source = source_of(client_address)
        self.waited_for_token += 1
        self.stats.misses += 1
        fill = self._fetcher.fill
        try:
            entry = await self._flights.run(
                key, lambda: fill(key, credentials, keys, stale, kind, source)
            )
        except (InvalidCredentials, InsufficientScope) as rejected:
            if alias is not None:  # this caller's own alias (the flight's may be another's)
                self._fetcher.remember_rejection((alias,), rejected)
            raise
        if alias is not None:
            self.cache.store((alias,), entry, self.clock())
        return entry


def discovery_for(
    config: OidcConfig,
    http_client: HttpClient,
    monotonic: Callable[[], float] = time.monotonic,
    stats: OidcStats | None = None,
) -> Discovery:
    """The issuer's discovery as the config describes it."""
    return Discovery(
        issuer=config.issuer,
        discovery_url=config.discovery_url,
        http=http_client,
        timeout=config.timeout_seconds,
        rediscovery_lifetime=config.rediscovery_lifetime,
        need_keys=config.verify_signature,
        clock=monotonic,
        issuers_allowed=frozenset(config.issuers_allowed),
        jwks_endpoint=config.jwks_endpoint,
        extra_jwks_uris=config.extra_jwks_uris,
        headers=config.discovery_headers,
        stats=stats,
    )


def _fresh(error: AuthError) -> AuthError:
    """A new exception like `error`: remembered errors are never re-raised as is, since every
    raise would lengthen the same object's traceback."""
    return type(error)(error.reason)
