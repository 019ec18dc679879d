"""A caller's own access token (Kong's `bearer` and `introspection` methods): verified once,
cached by the token's hash for its lifetime, forwarded unchanged.

- `bearer`: a JWT checked against the issuer's JWKS (an unknown `kid` costs one throttled
  re-fetch), then its claims (`issuers_allowed`, `exp`/`nbf` with `leeway`, audience, scopes).
- `introspection`: a token that is not a JWT (or any token, without `bearer`) is asked about at
  the introspection endpoint by the plugin's own client; `introspect_jwt_tokens` asks about
  JWTs too (after their signature checks out), which catches revoked ones.

A token that fails is the caller's (401, or 403 for missing rights) and is remembered for
`cache_ttl_neg`; an IdP that cannot answer is the IdP's (502/504) and is never remembered.
Introspection calls share the plugin's admission to the IdP (admission.py): tokens that were
active before go ahead of never-seen ones, each miss within one deadline.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Hashable
from typing import Any

from fastgw.observability.metrics import Family
from fastgw.observability.ratelog import KeyedRateLimitedLog
from fastgw.plugins.api import StoreUsage
from fastgw.plugins.building import HttpClient
from fastgw.plugins.jws import HMAC_ALGS

from .admission import KNOWN, UNKNOWN, Admission, IdpCall, KnownGood, known_good_families, source_of
from .cache import Entry, HeaderKeys, Lifetime, Token, TokenCache, TtlPolicy
from .client_auth import ClientAuth
from .credentials import ClientCredentials
from .discovery import Discovery, KeySet
from .errors import AuthError, IdpUnavailable, InsufficientScope, InvalidCredentials
from .flights import SingleFlight
from .identity import IdentityHeaders
from .introspection import build_introspection_request, introspect
from .schema import OidcConfig
from .verify import VerifyPolicy, check_claims, parse, verify_token

logger = logging.getLogger("fastgw.oidc")

IDP_WARNING_INTERVAL_SECONDS = 1.0


class BearerAuthenticator:
    """Verifies callers' access tokens; `cached` is synchronous, `authenticate` may call the
    IdP. Keys are digests of `b"Bearer " + token` by `keys`, the client-credentials cache's
    (so that the hot path's digest of an Authorization header finds either)."""

    def __init__(
        self,
        config: OidcConfig,
        http_client: HttpClient,
        discovery: Discovery,
        identity: IdentityHeaders,
        token_prefix: bytes,
        *,
        keys: HeaderKeys | None = None,
        admission: Admission | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.clock = clock
        self.policy = VerifyPolicy.from_config(config)
        self.ttl = TtlPolicy.from_config(config)
        self.cache = TokenCache(enabled=True, clock=clock, keys=keys)
        self.admission = admission if admission is not None else Admission()
        self.known = KnownGood()  # tokens that introspected active before
        self._http = http_client
        self._discovery = discovery
        self._identity = identity
        self._token_prefix = token_prefix
        self._flights: SingleFlight[Hashable, Entry] = SingleFlight()
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

    def key(self, token: str) -> bytes:
        """The cache key of `token`: the digest the hot path takes of `Bearer <token>`."""
        return self.cache.header_key(b"Bearer " + token.encode("ascii"))

    def cached(self, key: Hashable) -> Entry | None:
        # no refresh-ahead for a caller's token: it serves until its own expiry
        return self.cache.hit(key)

    def rejection(self, key: Hashable) -> AuthError | None:
        return self.cache.rejection(key, self.clock())

    # -- the miss ---------------------------------------------------------------------------------

    async def authenticate(self, token: str, key: Hashable, client_address: str = "") -> Entry:
        """The entry for `token`, verified (single-flight per key); raises AuthError.
        `client_address` is the caller's, for fair admission to the IdP."""
        entry = self.cached(key)
        if entry is not None:
            return entry
        error = self.rejection(key)
        if error is not None:
            raise type(error)(error.reason)
        kind = KNOWN if key in self.known else UNKNOWN
        source = source_of(client_address)
        return await self._flights.run(key, lambda: self._fill(token, key, kind, source))

    async def _fill(self, token: str, key: Hashable, kind: int, source: str) -> Entry:
        call = IdpCall.starting_now(kind, source, self.config.timeout_seconds)
        try:
            entry, cacheable = await self._check(token, call)
        except (InvalidCredentials, InsufficientScope) as rejected:
            self.known.discard(key)
            ttl = self.config.cache_ttl_neg
            if ttl > 0:
                now = self.clock()
                # a copy without the traceback, which holds the token
                self.cache.reject((key,), type(rejected)(rejected.reason), now + ttl, now)
            raise
        self.known.add(key)
        if cacheable:
            self.cache.store((key,), entry, self.clock())
        return entry

    async def _check(self, token: str, call: IdpCall) -> tuple[Entry, bool]:
        """The entry for a token and whether it may be cached."""
        config = self.config
        jws = parse(token)  # InvalidCredentials for a broken JWS
        if jws is not None and config.bearer_enabled:
            keys = KeySet()
            alg = jws.header.get("alg")
            if self.policy.verify_signature and alg not in HMAC_ALGS:
                kid = jws.header.get("kid")
                wanted = kid if isinstance(kid, str) else None
                keys = await call.within(self._discovery.keys_for(wanted), "JWKS")
            claims = verify_token(jws, keys, self.policy, self.clock(), self._own_secret)
            cacheable = True
            if config.introspect_jwt_tokens and config.introspection_enabled:
                claims = {**claims, **await self._introspect(token, call)}
                cacheable = config.cache_introspection
            return self._entry(token, claims), cacheable
        if not config.introspection_enabled:
            if jws is None:
                raise InvalidCredentials("access token is not a JWT (introspection is off)")
            raise InvalidCredentials("JWT access tokens are not accepted (bearer is off)")
        claims = await self._introspect(token, call)
        check_claims(claims, self.policy, self.clock(), issuer_required=False)
        return self._entry(token, claims), config.cache_introspection

    async def _introspect(self, token: str, call: IdpCall) -> dict[str, Any]:
        config = self.config
        endpoint = config.introspection_endpoint
        if endpoint is None:
            endpoint = (
                await call.within(self._discovery.ready(), "discovery")
            ).introspection_endpoint
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
        admission = self.admission
        await admission.acquire(call)
        started = asyncio.get_running_loop().time()
        try:
            answer = await introspect(
                self._http,
                endpoint,
                request,
                timeout=call.remaining(),
                budget=call.budget,
                check_active=config.introspection_check_active,
            )
            admission.answered(asyncio.get_running_loop().time() - started)
            return answer
        except InvalidCredentials:  # not active: an answer too
            admission.answered(asyncio.get_running_loop().time() - started)
            raise
        except IdpUnavailable as error:
            message = f"introspection failed: {error.reason}"
            self._warnings.emit(message, "%s", message)
            raise
        finally:
            admission.release(call.kind)

    def _entry(self, token: str, claims: dict[str, Any]) -> Entry:
        """Cached until the token's own expiry (with leeway), else `cache_ttl`, clamped by
        cache_ttl_min/max; no refresh-ahead: a caller's token cannot be refreshed here."""
        headers, principal = self._identity.for_claims(claims)  # ConsumerNotFound: 403
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
        return Entry(Token(token, expiry, claims), header_value, headers, lifetime, principal)

    def status(self) -> dict[str, object]:
        """For /status: cached and rejected tokens, known-good tokens (used and capacity)."""
        return {
            "cached_tokens": self.cache.clients(),
            "cached_tokens_capacity": self.cache.max_entries,
            "negative_tokens": len(self.cache.rejections),
            "negative_tokens_capacity": self.cache.max_entries,
            "known_tokens": len(self.known),
            "known_tokens_capacity": self.known.capacity,
            "token_checks": len(self._flights),  # under way, each within its deadline
        }

    def metrics(self, instance: str) -> list[Family]:
        return known_good_families(self.known, instance, "tokens")

    def stores(self, where: str) -> list[StoreUsage]:
        """Callers' tokens: cached, rejected, known-good (the admission is the plugin's)."""
        stores = self.cache.usage(
            f"openid-connect bearer token cache ({where})",
            f"openid-connect rejected tokens ({where})",
        )
        stores.append(self.known.usage(f"openid-connect known-good tokens ({where})"))
        return stores

    def close(self) -> None:
        self._flights.cancel_all()
