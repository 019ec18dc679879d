"""One client's token fetch (a flight): the shared cache, the fleet lock, an admitted IdP call,
verification, and the outcome published to the L1 and the shared cache, all by one deadline.

The authenticator runs `fill` inside its single-flight; nothing here runs on a cache hit.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Hashable
from typing import Any

from fastgw.observability.ratelog import KeyedRateLimitedLog
from fastgw.plugins.building import HttpClient
from fastgw.plugins.jws import HMAC_ALGS

from .admission import Admission, IdpCall, KnownGood
from .cache import Entry, Lifetime, Token, TokenCache, TtlPolicy, plan_lifetime
from .client_auth import ClientAuth, build_token_request, check_gateway_secret, client_auth_for
from .credentials import ClientCredentials
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
from .l2 import SharedRejection, SharedToken, SharedTokenCache
from .schema import OidcConfig
from .stats import OidcStats
from .token_endpoint import TokenResponse, request_token
from .verify import VerifyPolicy, parse, verify_token


class TokenFetcher:
    """L1 miss -> shared cache -> fleet lock -> IdP (admitted) -> verify -> shared cache -> L1.

    `fill` publishes its outcome to the L1 (the entry, the rejection, or the stale entry kept
    serving) before it returns, and remembers the credentials as known-good or forgets them.
    """

    def __init__(
        self,
        config: OidcConfig,
        http: HttpClient,
        *,
        cache: TokenCache,
        discovery: Discovery,
        identity: IdentityHeaders,
        token_prefix: bytes,
        shared: SharedTokenCache | None,
        admission: Admission,
        known: KnownGood,
        stats: OidcStats,
        warnings: KeyedRateLimitedLog,
        clock: Callable[[], float],
        request_shape: str,
    ) -> None:
        self.config = config
        self.policy = VerifyPolicy.from_config(config)
        self.ttl = TtlPolicy.from_config(config)
        self._http = http
        self._cache = cache
        self._discovery = discovery
        self._identity = identity
        self._token_prefix = token_prefix
        self._shared = shared
        self._admission = admission
        self._known = known
        self._stats = stats
        self._warnings = warnings
        self._clock = clock
        # what shapes the token request besides the credentials: two plugin instances share
        # an entry only when they would have asked the IdP for the same token
        self._request_shape = request_shape

    def remember_rejection(self, keys: tuple[Hashable, ...], error: AuthError) -> None:
        ttl = self.config.cache_ttl_neg
        if ttl > 0:
            now = self._clock()
            # a copy without the traceback: the raised error's frames hold the whole fetch
            # (the token request with the secret, the IdP's answer), ~10 KB per remembered
            # rejection, and would keep the secret in memory for cache_ttl_neg
            self._cache.reject(keys, type(error)(error.reason), now + ttl, now)

    async def fill(
        self,
        key: str,
        credentials: ClientCredentials,
        keys: tuple[Hashable, ...],
        stale: Entry | None,
        kind: int,
        source: str,
    ) -> Entry:
        """The flight's body; its deadline starts now (`timeout` for all of it)."""
        call = IdpCall.starting_now(kind, source, self.config.timeout_seconds)
        try:
            fresh = await self._find_or_fetch(key, credentials, call)
        except IdpUnavailable:
            now = self._clock()
            if stale is not None and now < stale.stale_until:
                self._stats.stale_served += 1
                stale.refresh_failed(now)
                self._cache.store(keys, stale, now)
                return stale
            raise
        except (InvalidCredentials, InsufficientScope) as rejected:
            if stale is not None:
                stale.kill()  # the IdP rejects these credentials now: stop serving at once
            self._known.discard(key)
            self.remember_rejection(keys, rejected)
            raise
        if stale is not None:
            stale.adopt(fresh)  # every L1 key pointing at the old entry sees the new token
            fresh = stale
        self._known.add(key)
        self._cache.store(keys, fresh, self._clock())
        return fresh

    async def _find_or_fetch(
        self, key: str, credentials: ClientCredentials, call: IdpCall
    ) -> Entry:
        auth = client_auth_for(self.config, credentials.client_id)
        check_gateway_secret(credentials, auth)  # before any shared entry or IdP call
        shared = self._shared
        if shared is None:
            return await self._fetch_from_idp(credentials, auth, None, call)
        slot = shared.slot(f"{key}#{self._request_shape}")
        found = await shared.load(slot)
        entry = await self._from_shared(found, credentials, call)
        if entry is not None:
            return entry
        claim = await shared.claim(slot, unusable=found, within=call.remaining())
        if claim.found is not None:
            entry = await self._from_shared(claim.found, credentials, call)
            if entry is not None:
                return entry
        try:
            return await self._fetch_from_idp(credentials, auth, slot, call)
        finally:
            if claim.lease is not None:
                await shared.release(slot, claim.lease)

    async def _from_shared(
        self,
        found: SharedToken | SharedRejection | None,
        credentials: ClientCredentials,
        call: IdpCall,
    ) -> Entry | None:
        """An entry from what the shared cache held: a rejection is raised as the IdP's, a
        token verified as if fresh from the IdP (the cache is not trusted blindly)."""
        if found is None:
            return None
        if isinstance(found, SharedRejection):
            raise InvalidCredentials(found.reason)
        now = self._clock()
        try:
            claims = await self._verify(found.access_token, credentials, call)
        except InsufficientScope:
            raise  # a genuine token without this instance's audience or scopes
        except IdpTimeout:
            raise  # the keys did not come in time: the deadline is spent
        except AuthError:
            assert self._shared is not None
            self._shared.count_rejected()
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
        self, credentials: ClientCredentials, auth: ClientAuth, slot: str | None, call: IdpCall
    ) -> Entry:
        """Token endpoint -> token request -> verification -> lifetime -> the shared cache."""
        endpoint = await self._token_endpoint(call)
        try:
            response = await self._request_token(credentials, auth, endpoint, call)
        except InvalidCredentials as rejected:
            if slot is not None:
                await self._share_rejection(slot, rejected)
            raise
        fetched_at = self._clock()
        claims = await self._verify_issued(response.access_token, credentials, call)
        exp = claims.get("exp")
        lifetime = plan_lifetime(
            self.ttl, fetched_at, response.expires_in, exp if _is_number(exp) else None
        )
        if slot is not None:
            await self._share_token(slot, response, fetched_at, lifetime)
        return self._entry(response.access_token, claims, lifetime)

    async def _token_endpoint(self, call: IdpCall) -> str:
        endpoint = self.config.token_endpoint
        if endpoint is None:
            metadata = await call.within(self._discovery.ready(), "discovery")
            endpoint = metadata.token_endpoint
            if endpoint is None:
                raise IdpUnavailable("discovery document has no token_endpoint")
        return endpoint

    async def _request_token(
        self, credentials: ClientCredentials, auth: ClientAuth, endpoint: str, call: IdpCall
    ) -> TokenResponse:
        """One token request, admitted (its slot, in its turn) and within the deadline."""
        request = build_token_request(
            credentials,
            auth,
            token_endpoint=endpoint,
            scope=self.config.scope,
            post_args=self.config.token_post_args,
            headers=self.config.token_headers,
            now=self._clock(),
        )
        admission = self._admission
        await admission.acquire(call)
        started = asyncio.get_running_loop().time()
        try:
            response = await request_token(
                self._http,
                endpoint,
                request,
                timeout=call.remaining(),
                budget=call.budget,
                stats=self._stats,
            )
            admission.answered(asyncio.get_running_loop().time() - started)
            return response
        except (InvalidCredentials, InsufficientScope):
            admission.answered(asyncio.get_running_loop().time() - started)  # an answer too
            raise
        except IdpUnavailable as error:
            # the client is not to blame, so the answer says little: the operator needs the why
            message = f"token request failed: {error.reason}"
            self._warnings.emit(message, "%s", message)
            raise
        finally:
            admission.release(call.kind)

    async def _verify_issued(
        self, access_token: str, credentials: ClientCredentials, call: IdpCall
    ) -> dict[str, Any]:
        """The claims of a token the IdP just issued; a token failing verification is the
        IdP's fault (IdpTokenRejected, 502), not the caller's."""
        try:
            return await self._verify(access_token, credentials, call)
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
            self._warnings.emit(rejected.reason, "%s", rejected.reason)
            raise rejected from None

    async def _share_token(
        self, slot: str, response: TokenResponse, fetched_at: float, lifetime: Lifetime
    ) -> None:
        # gone from Redis when it is due for refresh, so the fleet refreshes it once, under
        # the lock, instead of every process taking a token about to be replaced
        ttl = lifetime.refresh_at - self._clock()
        assert self._shared is not None
        shared = SharedToken(response.access_token, fetched_at, response.expires_in)
        await self._shared.save_token(slot, shared, ttl)

    async def _share_rejection(self, slot: str, rejected: InvalidCredentials) -> None:
        assert self._shared is not None
        ttl = self.config.cache_ttl_neg
        await self._shared.save_rejection(slot, SharedRejection(rejected.reason), ttl)

    async def _verify(
        self, access_token: str, credentials: ClientCredentials, call: IdpCall
    ) -> dict[str, Any]:
        jws = parse(access_token)
        keys = KeySet()
        if (
            self.policy.verify_signature
            and jws is not None
            and jws.header.get("alg") not in HMAC_ALGS
        ):
            kid = jws.header.get("kid")
            wanted = kid if isinstance(kid, str) else None
            keys = await call.within(self._discovery.keys_for(wanted), "JWKS")
        return verify_token(jws, keys, self.policy, self._clock(), credentials.client_secret)

    def _entry(self, access_token: str, claims: dict[str, Any], lifetime: Lifetime) -> Entry:
        valid_until = lifetime.valid_until
        token = Token(access_token, None if math.isinf(valid_until) else valid_until, claims)
        upstream_headers, principal = self._identity.for_claims(claims)
        header_value = self._token_prefix + access_token.encode("ascii")
        return Entry(token, header_value, upstream_headers, lifetime, principal)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
