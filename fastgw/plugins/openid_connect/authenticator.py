"""Client credentials in, a verified (cached) access token out: the embedding API, plugin core.

Composes credentials, cache, discovery, client auth, token endpoint and verification; the
`openid-connect` plugin is a thin adapter over one `ClientCredentialsAuthenticator`.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import itertools
import logging
import math
import secrets
import time
from collections.abc import Awaitable, Callable, Hashable, Mapping
from typing import Any

import orjson

from fastgw.config.consumers import Consumers
from fastgw.observability.metrics import Family
from fastgw.observability.ratelog import KeyedRateLimitedLog
from fastgw.plugins.building import HttpClient

from .cache import (
    REFRESH_RETRY_SECONDS,
    Entry,
    Lifetime,
    SingleFlight,
    Token,
    TokenCache,
    TtlPolicy,
    credentials_cache_key,
    plan_lifetime,
)
from .client_auth import ClientAuth, build_token_request, check_gateway_secret, client_auth_for
from .credentials import ClientCredentials, CredentialError, parse_basic
from .discovery import Discovery, KeySet
from .errors import (
    AuthError,
    IdpTimeout,
    IdpTokenRejected,
    IdpUnavailable,
    InsufficientScope,
    InvalidCredentials,
)
from .identity import IdentityHeaders
from .jws import HMAC_ALGS
from .l2 import (
    DEFAULT_MAX_CONNECTIONS,
    LOCK_MARGIN_SECONDS,
    SharedRejection,
    SharedStore,
    SharedToken,
    SharedTokenCache,
    connect,
    metric_families,
)
from .schema import OidcConfig, from_mapping
from .sealing import Sealer
from .stats import OidcStats, families
from .token_endpoint import TokenResponse, request_token
from .verify import VerifyPolicy, parse, verify_token

logger = logging.getLogger("fastgw.oidc")

# Token requests in flight to the IdP at once (beyond it, misses queue, each within `timeout`):
# the same as the HTTP client's per-host connection budget, as more would only queue there.
IDP_MAX_CONCURRENCY = 16

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


class ClientCredentialsAuthenticator:
    """Turns a caller's client id and secret into a verified access token, cached.

    `authenticate_cached` is synchronous (L1 only); `authenticate` fetches on a miss. Errors are
    `InvalidCredentials` (401), `InsufficientScope` (403), `IdpUnavailable` (502; its subclass
    `IdpTokenRejected` when the token the IdP issued fails verification) and `IdpTimeout` (504),
    from `fastgw.plugins.openid_connect`.
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
    ) -> None:
        self.config = config
        self.clock = clock  # epoch seconds: token `exp` is in those
        self.policy = VerifyPolicy.from_config(config)
        self.ttl = TtlPolicy.from_config(config)
        self.cache = TokenCache(enabled=config.cache_tokens)
        self.upstream_header_name, self.token_prefix = _token_prefix(
            config.upstream_access_token_header
        )
        self.identity = IdentityHeaders(config, consumers or Consumers())
        # L1 keys for Basic headers hash the raw header value under a per-process random prefix:
        # one SHA-256 over bytes we already hold, no base64 decode, no secret kept as a key.
        # Copying a hasher primed with the prefix saves ~0.1 us over hashing prefix + value.
        self.header_hasher = hashlib.sha256(secrets.token_bytes(16))
        self._key_scope = config.scope if config.token_cache_key_include_scope else None
        self._http = http_client
        self._owns_http = owns_http_client
        self._spawn = spawn if spawn is not None else self._spawn_task
        self._tasks: set[asyncio.Task[Any]] = set()
        self._flights: SingleFlight[str, Entry] = SingleFlight()
        # calls of obtain() that had to wait for a token (IdP or L2); background refreshes and
        # cache hits do not count: with refresh-ahead working, it grows only with new clients
        self.waited_for_token = 0
        self.stats = OidcStats()
        self._idp_slots = asyncio.Semaphore(IDP_MAX_CONCURRENCY)
        self._idp_warnings = KeyedRateLimitedLog(
            logger, logging.WARNING, IDP_WARNING_INTERVAL_SECONDS, monotonic
        )
        self.instance = next(_instances)
        self.shared = self._shared_cache(config, shared_store)
        # what shapes the token request besides the credentials: two plugin instances share
        # an entry only when they would have asked the IdP for the same token
        self._request_shape = orjson.dumps(
            [config.token_endpoint, config.scope, config.token_post_args, config.token_headers]
        ).decode()
        self.discovery = discovery_for(config, http_client, monotonic, self.stats)
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
        Redis), `spawn`, `clock`, `monotonic`, `consumers` (for consumer mapping).
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
        authenticator): the L1, IdP and JWKS counters, and the shared cache's when there is one."""
        label = str(self.instance) if instance is None else instance
        result = families(self.stats, label, self.cache.evictions, self._flights.joins)
        if self.shared is not None:
            result += metric_families(self.shared.stats, label)
        return result

    def status(self) -> dict[str, object]:
        """For /status: cached clients, negative entries, whether the IdP answered its last
        call, when the signing keys were last fetched."""
        last = self.stats.last_jwks_refresh
        reachable = self.stats.idp_reachable
        return {
            "cached_clients": len({id(entry) for entry in self.cache.entries.values()}),
            "negative_entries": len(self.cache.rejections),
            "idp_reachable": None if reachable < 0 else reachable == 1,
            "last_jwks_refresh": (
                datetime.datetime.fromtimestamp(last, datetime.UTC).isoformat(timespec="seconds")
                if last
                else None
            ),
        }

    def _spawn_task(self, awaitable: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(awaitable)
        self._tasks.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(self._tasks.discard)

    # -- keys -------------------------------------------------------------------------------------

    def header_key(self, authorization: bytes) -> bytes:
        hasher = self.header_hasher.copy()
        hasher.update(authorization)
        return hasher.digest()

    def credentials_key(self, credentials: ClientCredentials) -> str:
        return credentials_cache_key(
            self.config.issuer, credentials, self.config.cache_tokens_salt, self._key_scope
        )

    # -- embedding API ----------------------------------------------------------------------------

    def authenticate_cached(self, authorization: str | bytes) -> Token | None:
        """The cached token for a Basic header value, or None (L1 only, never waits). A token
        close to expiry is returned and refreshed in the background."""
        raw = authorization.encode("latin-1") if isinstance(authorization, str) else authorization
        key = self.header_key(raw)
        entry = self.cache.entries.get(key)
        if entry is None:
            return None
        now = self.clock()
        if now < entry.refresh_at:
            self.stats.hits += 1
            return entry.token
        if now < entry.expires_at:
            try:
                self.refresh_in_background(entry, (key,), parse_basic(raw), now)
            except CredentialError:
                return None
            self.stats.hits += 1
            return entry.token
        return None

    async def authenticate(self, authorization: str | bytes) -> Token:
        """The verified token for a Basic header value (`Basic base64(id:secret)`)."""
        token = self.authenticate_cached(authorization)
        if token is not None:
            return token
        raw = authorization.encode("latin-1") if isinstance(authorization, str) else authorization
        key = self.header_key(raw)
        error = self.cache.rejection(key, self.clock())
        if error is not None:
            self.stats.negative_hits += 1
            raise _fresh(error)
        try:
            credentials = parse_basic(raw)
        except CredentialError as problem:
            raise InvalidCredentials(str(problem)) from None
        entry = await self.obtain(credentials, alias=key, stale=self.cache.entries.get(key))
        return entry.token

    async def authenticate_client(self, client_id: str, client_secret: str) -> Token:
        """As `authenticate`, for an id and secret found elsewhere (a body, a query)."""
        if not client_id or not client_secret:
            raise InvalidCredentials("empty client_id or client_secret")
        credentials = ClientCredentials(client_id, client_secret)
        entry, error = self.lookup(credentials, self.clock())
        if error is not None:
            raise _fresh(error)
        if entry is not None:
            return entry.token
        return (await self.obtain(credentials)).token

    # -- shared with the plugin -------------------------------------------------------------------

    def lookup(
        self, credentials: ClientCredentials, now: float, alias: Hashable | None = None
    ) -> tuple[Entry | None, AuthError | None]:
        """Synchronous: a servable entry or a remembered rejection for `credentials` (refreshing
        in the background when due); (None, None) means a fetch is needed."""
        key = self.credentials_key(credentials)
        entry = self.cache.entries.get(key)
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

    async def _refresh(
        self, entry: Entry, aliases: tuple[Hashable, ...], credentials: ClientCredentials
    ) -> None:
        key = self.credentials_key(credentials)
        keys = (key, *aliases)
        try:
            await self._flights.run(key, lambda: self._fill(key, credentials, keys, entry))
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
    ) -> Entry:
        """A token for `credentials` from the L1, L2 or IdP (single-flight per cache key).

        `alias` is another L1 key for the same credentials (a Basic header's hash); `stale` an
        expired entry that may still serve (stale-if-error) when the IdP fails.
        """
        now = self.clock()
        entry, error = self.lookup(credentials, now, alias)
        if entry is not None:
            return entry
        if error is not None:
            if alias is not None:
                self._remember_rejection((alias,), error)
            raise _fresh(error)
        key = self.credentials_key(credentials)
        keys = (key,) if alias is None else (key, alias)
        if stale is None:
            stale = self.cache.entries.get(key)
        self.waited_for_token += 1
        self.stats.misses += 1
        try:
            entry = await self._flights.run(key, lambda: self._fill(key, credentials, keys, stale))
        except (InvalidCredentials, InsufficientScope) as rejected:
            if alias is not None:  # this caller's own alias (the flight's may be another's)
                self._remember_rejection((alias,), rejected)
            raise
        if alias is not None:
            self.cache.store((alias,), entry, self.clock())
        return entry

    def _remember_rejection(self, keys: tuple[Hashable, ...], error: AuthError) -> None:
        ttl = self.config.cache_ttl_neg
        if ttl > 0:
            now = self.clock()
            # a copy without the traceback: the raised error's frames hold the whole fetch
            # (the token request with the secret, the IdP's answer), ~10 KB per remembered
            # rejection, and would keep the secret in memory for cache_ttl_neg
            self.cache.reject(keys, _fresh(error), now + ttl, now)

    # -- the flight: one per cache key at a time ------------------------------------------------
    #
    # L1 miss -> _fill -> _find_or_fetch: L2 -> fleet lock -> IdP -> verify -> L2 write -> publish.

    async def _fill(
        self,
        key: str,
        credentials: ClientCredentials,
        keys: tuple[Hashable, ...],
        stale: Entry | None,
    ) -> Entry:
        """The flight's body. It publishes its outcome to the L1 (the entry, the rejection, or
        the stale entry kept serving) before it returns: a request that arrives after the
        flight has ended, before its waiters have resumed, finds the outcome, not a gap."""
        try:
            fresh = await self._find_or_fetch(key, credentials)
        except IdpUnavailable:
            now = self.clock()
            if stale is not None and now < stale.stale_until:
                self.stats.stale_served += 1
                stale.refresh_failed(now)
                self.cache.store(keys, stale, now)
                return stale
            raise
        except (InvalidCredentials, InsufficientScope) as rejected:
            if stale is not None:
                stale.kill()  # the IdP rejects these credentials now: stop serving at once
            self._remember_rejection(keys, rejected)
            raise
        if stale is not None:
            stale.adopt(fresh)  # every L1 key pointing at the old entry sees the new token
            fresh = stale
        self.cache.store(keys, fresh, self.clock())
        return fresh

    async def _find_or_fetch(self, key: str, credentials: ClientCredentials) -> Entry:
        auth = client_auth_for(self.config, credentials.client_id)
        check_gateway_secret(credentials, auth)  # before any shared entry or IdP call
        shared = self.shared
        if shared is None:
            return await self._fetch_from_idp(credentials, auth, None)
        slot = shared.slot(f"{key}#{self._request_shape}")
        found = await shared.load(slot)
        entry = await self._from_shared(found, credentials)
        if entry is not None:
            return entry
        claim = await shared.claim(slot, unusable=found)
        if claim.found is not None:
            entry = await self._from_shared(claim.found, credentials)
            if entry is not None:
                return entry
        try:
            return await self._fetch_from_idp(credentials, auth, slot)
        finally:
            if claim.lease is not None:
                await shared.release(slot, claim.lease)

    async def _from_shared(
        self, found: SharedToken | SharedRejection | None, credentials: ClientCredentials
    ) -> Entry | None:
        """An entry from what the shared cache held: a rejection is raised as the IdP's, a
        token verified as if fresh from the IdP (the cache is not trusted blindly)."""
        if found is None:
            return None
        if isinstance(found, SharedRejection):
            raise InvalidCredentials(found.reason)
        now = self.clock()
        try:
            claims = await self._verify(found.access_token, credentials)
        except InsufficientScope:
            raise  # a genuine token without this instance's audience or scopes
        except AuthError:
            assert self.shared is not None
            self.shared.count_rejected()
            return None
        exp = claims.get("exp")
        lifetime = plan_lifetime(
            self.ttl, found.fetched_at, found.expires_in, exp if _is_number(exp) else None
        )
        # a token due for refresh is not worth taking: it would only be refreshed again
        if now >= lifetime.refresh_at:
            return None
        return self._entry(found.access_token, claims, lifetime)

    async def _fetch_from_idp(
        self, credentials: ClientCredentials, auth: ClientAuth, slot: str | None
    ) -> Entry:
        """Token endpoint -> token request -> verification -> lifetime -> the shared cache."""
        endpoint = await self._token_endpoint()
        try:
            response = await self._request_token(credentials, auth, endpoint)
        except InvalidCredentials as rejected:
            if slot is not None:
                await self._share_rejection(slot, rejected)
            raise
        fetched_at = self.clock()
        claims = await self._verify_issued(response.access_token, credentials)
        exp = claims.get("exp")
        lifetime = plan_lifetime(
            self.ttl, fetched_at, response.expires_in, exp if _is_number(exp) else None
        )
        if slot is not None:
            await self._share_token(slot, response, fetched_at, lifetime)
        return self._entry(response.access_token, claims, lifetime)

    async def _token_endpoint(self) -> str:
        endpoint = self.config.token_endpoint
        if endpoint is None:
            endpoint = (await self.discovery.ready()).token_endpoint
            if endpoint is None:
                raise IdpUnavailable("discovery document has no token_endpoint")
        return endpoint

    async def _request_token(
        self, credentials: ClientCredentials, auth: ClientAuth, endpoint: str
    ) -> TokenResponse:
        """One token request, within the IdP concurrency bound and the timeout."""
        request = build_token_request(
            credentials,
            auth,
            token_endpoint=endpoint,
            scope=self.config.scope,
            post_args=self.config.token_post_args,
            headers=self.config.token_headers,
            now=self.clock(),
        )
        timeout = self.config.timeout_seconds
        try:
            async with asyncio.timeout(timeout):
                await self._idp_slots.acquire()
        except TimeoutError:
            raise IdpTimeout("too many token requests waiting for the identity provider") from None
        try:
            return await request_token(
                self._http, endpoint, request, timeout=timeout, stats=self.stats
            )
        except IdpUnavailable as error:
            # the client is not to blame, so the answer says little: the operator needs the why
            message = f"token request failed: {error.reason}"
            self._idp_warnings.emit(message, "%s", message)
            raise
        finally:
            self._idp_slots.release()

    async def _verify_issued(
        self, access_token: str, credentials: ClientCredentials
    ) -> dict[str, Any]:
        """The claims of a token the IdP just issued; a token failing verification is the
        IdP's fault (IdpTokenRejected, 502), not the caller's."""
        try:
            return await self._verify(access_token, credentials)
        except InsufficientScope:
            raise  # a genuine token without this route's audience or scopes: 403, the caller's
        except InvalidCredentials as error:
            # The IdP accepted the caller's credentials and answered a token that fails
            # verification. Per case (all 502, none negatively cached, see IdpTokenRejected):
            # - alg "none", an HS* token with HS disabled, HS* signed with anything but the
            #   client's secret (e.g. the RSA public key: key confusion), an alg its key does not
            #   allow, a bad signature: the token endpoint (or the path to it) produced a token
            #   no honest IdP signs; the caller's secret was fine.
            # - a kid unknown even after a throttled JWKS re-fetch: a key rotation the JWKS
            #   does not show yet; retrying later works, so it must not lock the caller out.
            # - unknown `crit` names: an IdP feature we do not implement.
            # - expired, not yet valid (nbf), issued in the future: clock skew between the IdP
            #   and the gateway (or an IdP bug), fixed by `leeway`, never by the caller.
            # - a wrong `iss`: the token endpoint is not the configured issuer's.
            # A refresh that meets this keeps serving the last good token (stale-if-error).
            rejected = IdpTokenRejected(
                f"token endpoint issued a token that fails verification: {error.reason}"
            )
            self._idp_warnings.emit(rejected.reason, "%s", rejected.reason)
            raise rejected from None

    async def _share_token(
        self, slot: str, response: TokenResponse, fetched_at: float, lifetime: Lifetime
    ) -> None:
        # gone from Redis when it is due for refresh, so the fleet refreshes it once, under
        # the lock, instead of every process taking a token about to be replaced
        ttl = lifetime.refresh_at - self.clock()
        assert self.shared is not None
        shared = SharedToken(response.access_token, fetched_at, response.expires_in)
        await self.shared.save_token(slot, shared, ttl)

    async def _share_rejection(self, slot: str, rejected: InvalidCredentials) -> None:
        assert self.shared is not None
        ttl = self.config.cache_ttl_neg
        await self.shared.save_rejection(slot, SharedRejection(rejected.reason), ttl)

    async def _verify(self, access_token: str, credentials: ClientCredentials) -> dict[str, Any]:
        jws = parse(access_token)
        keys = KeySet()
        if (
            self.policy.verify_signature
            and jws is not None
            and jws.header.get("alg") not in HMAC_ALGS
        ):
            kid = jws.header.get("kid")
            keys = await self.discovery.keys_for(kid if isinstance(kid, str) else None)
        return verify_token(jws, keys, self.policy, self.clock(), credentials.client_secret)

    def _entry(self, access_token: str, claims: dict[str, Any], lifetime: Lifetime) -> Entry:
        valid_until = lifetime.valid_until
        token = Token(access_token, None if math.isinf(valid_until) else valid_until, claims)
        upstream_headers = self.identity.for_claims(claims)
        header_value = self.token_prefix + access_token.encode("ascii")
        return Entry(token, header_value, upstream_headers, lifetime)


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


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _fresh(error: AuthError) -> AuthError:
    """A new exception like `error`: remembered errors are never re-raised as is, since every
    raise would lengthen the same object's traceback."""
    return type(error)(error.reason)
