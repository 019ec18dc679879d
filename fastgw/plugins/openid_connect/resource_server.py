"""A caller's own access token (Kong's `bearer` and `introspection` methods): verified once,
cached by the token's hash for its lifetime, forwarded unchanged.

- `bearer`: a JWT checked against the issuer's JWKS (an unknown `kid` costs one throttled
  re-fetch), then its claims (`issuers_allowed`, `exp`/`nbf` with `leeway`, audience, scopes).
- `introspection`: a token that is not a JWT (or any token, without `bearer`) is asked about at
  the introspection endpoint by the plugin's own client; `introspect_jwt_tokens` asks about
  JWTs too (after their signature checks out), which catches revoked ones.

A token that fails is the caller's (401, or 403 for missing rights) and is remembered for
`cache_ttl_neg`; an IdP that cannot answer is the IdP's (502/504) and is never remembered.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Hashable
from typing import Any

from fastgw.observability.ratelog import KeyedRateLimitedLog
from fastgw.plugins.building import HttpClient

from .cache import Entry, Lifetime, SingleFlight, Token, TokenCache, TtlPolicy
from .client_auth import ClientAuth
from .credentials import ClientCredentials
from .discovery import Discovery, KeySet
from .errors import AuthError, IdpUnavailable, InsufficientScope, InvalidCredentials
from .identity import IdentityHeaders
from .introspection import build_introspection_request, introspect
from .jws import HMAC_ALGS
from .schema import OidcConfig
from .verify import VerifyPolicy, check_claims, parse, verify_token

logger = logging.getLogger("fastgw.oidc")

# Introspection calls in flight at once per plugin instance (as for token requests)
IDP_MAX_CONCURRENCY = 16
IDP_WARNING_INTERVAL_SECONDS = 1.0


class BearerAuthenticator:
    """Verifies callers' access tokens; `cached` is synchronous, `authenticate` may call the
    IdP. Keys are the caller's digests of `b"Bearer " + token` (the plugin's hasher)."""

    def __init__(
        self,
        config: OidcConfig,
        http_client: HttpClient,
        discovery: Discovery,
        identity: IdentityHeaders,
        token_prefix: bytes,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.clock = clock
        self.policy = VerifyPolicy.from_config(config)
        self.ttl = TtlPolicy.from_config(config)
        self.cache = TokenCache(enabled=True)
        self._http = http_client
        self._discovery = discovery
        self._identity = identity
        self._token_prefix = token_prefix
        self._flights: SingleFlight[Hashable, Entry] = SingleFlight()
        self._idp_slots = asyncio.Semaphore(IDP_MAX_CONCURRENCY)
        self._warnings = KeyedRateLimitedLog(
            logger, logging.WARNING, IDP_WARNING_INTERVAL_SECONDS, monotonic
        )
        own = config.clients[0] if config.clients else None
        # the plugin's own client: the HMAC secret of HS* tokens, and who asks the IdP
        self._own_secret = (own.client_secret or "") if own is not None else ""
        self._introspection_client = ClientCredentials(
            own.client_id if own is not None else "", self._own_secret
        )
        method = config.introspection_endpoint_auth_method or (
            own.client_auth if own is not None else config.default_client_auth
        )
        jwk = own.client_jwk if own is not None else None
        alg = own.client_alg if own is not None else config.default_client_alg
        if alg is None and jwk is not None:
            alg = jwk.algorithm_name
        self._introspection_auth = ClientAuth(method, alg, jwk)

    # -- synchronous ------------------------------------------------------------------------------

    def cached(self, key: Hashable, now: float) -> Entry | None:
        entry = self.cache.entries.get(key)
        if entry is not None and now < entry.expires_at:
            return entry
        return None

    def rejection(self, key: Hashable, now: float) -> AuthError | None:
        return self.cache.rejection(key, now)

    # -- the miss ---------------------------------------------------------------------------------

    async def authenticate(self, token: str, key: Hashable) -> Entry:
        """The entry for `token`, verified (single-flight per key); raises AuthError."""
        now = self.clock()
        entry = self.cached(key, now)
        if entry is not None:
            return entry
        error = self.rejection(key, now)
        if error is not None:
            raise type(error)(error.reason)
        return await self._flights.run(key, lambda: self._fill(token, key))

    async def _fill(self, token: str, key: Hashable) -> Entry:
        try:
            entry, cacheable = await self._check(token)
        except (InvalidCredentials, InsufficientScope) as rejected:
            ttl = self.config.cache_ttl_neg
            if ttl > 0:
                now = self.clock()
                # a copy without the traceback, which holds the token
                self.cache.reject((key,), type(rejected)(rejected.reason), now + ttl, now)
            raise
        if cacheable:
            self.cache.store((key,), entry, self.clock())
        return entry

    async def _check(self, token: str) -> tuple[Entry, bool]:
        """The entry for a token and whether it may be cached."""
        config = self.config
        jws = parse(token)  # InvalidCredentials for a broken JWS
        if jws is not None and config.bearer_enabled:
            keys = KeySet()
            alg = jws.header.get("alg")
            if self.policy.verify_signature and alg not in HMAC_ALGS:
                kid = jws.header.get("kid")
                keys = await self._discovery.keys_for(kid if isinstance(kid, str) else None)
            claims = verify_token(jws, keys, self.policy, self.clock(), self._own_secret)
            cacheable = True
            if config.introspect_jwt_tokens and config.introspection_enabled:
                claims = {**claims, **await self._introspect(token)}
                cacheable = config.cache_introspection
            return self._entry(token, claims), cacheable
        if not config.introspection_enabled:
            if jws is None:
                raise InvalidCredentials("access token is not a JWT (introspection is off)")
            raise InvalidCredentials("JWT access tokens are not accepted (bearer is off)")
        claims = await self._introspect(token)
        check_claims(claims, self.policy, self.clock(), issuer_required=False)
        return self._entry(token, claims), config.cache_introspection

    async def _introspect(self, token: str) -> dict[str, Any]:
        config = self.config
        endpoint = config.introspection_endpoint
        if endpoint is None:
            endpoint = (await self._discovery.ready()).introspection_endpoint
            if endpoint is None:
                raise IdpUnavailable(
                    "no introspection endpoint (not in discovery, introspection_endpoint unset)"
                )
        request = build_introspection_request(
            token,
            self._introspection_client,
            self._introspection_auth,
            endpoint=endpoint,
            token_param=config.introspection_token_param_name,
            hint=config.introspection_hint,
            post_args=config.introspection_post_args,
            headers=config.introspection_headers,
            now=self.clock(),
        )
        timeout = config.timeout_seconds
        try:
            async with asyncio.timeout(timeout):
                await self._idp_slots.acquire()
        except TimeoutError:
            raise IdpUnavailable("too many introspection requests waiting") from None
        try:
            return await introspect(
                self._http,
                endpoint,
                request,
                timeout=timeout,
                check_active=config.introspection_check_active,
            )
        except IdpUnavailable as error:
            message = f"introspection failed: {error.reason}"
            self._warnings.emit(message, "%s", message)
            raise
        finally:
            self._idp_slots.release()

    def _entry(self, token: str, claims: dict[str, Any]) -> Entry:
        """Cached until the token's own expiry (with leeway), else `cache_ttl`, clamped by
        cache_ttl_min/max; no refresh-ahead: a caller's token cannot be refreshed here."""
        headers = self._identity.for_claims(claims)  # ConsumerNotFound: 403
        now = self.clock()
        exp = claims.get("exp")
        valid_until = math.inf
        if isinstance(exp, (int, float)) and not isinstance(exp, bool):
            valid_until = float(exp) + self.config.leeway
        ttl = self.config.cache_ttl if math.isinf(valid_until) else valid_until - now
        if self.ttl.ttl_min is not None:
            ttl = max(ttl, self.ttl.ttl_min)
        if self.ttl.ttl_max is not None:
            ttl = min(ttl, self.ttl.ttl_max)
        expires_at = max(now, min(now + ttl, valid_until))
        lifetime = Lifetime(expires_at, expires_at, expires_at, valid_until)
        expiry = None if math.isinf(valid_until) else valid_until
        header_value = self._token_prefix + token.encode("ascii")
        return Entry(Token(token, expiry, claims), header_value, headers, lifetime)

    def close(self) -> None:
        self._flights.cancel_all()
