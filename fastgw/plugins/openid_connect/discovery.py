"""The issuer's metadata and signing keys: discovery, JWKS parsing, re-fetch on an unknown kid.

Parsing is pure (`parse_metadata`, `parse_jwks`); `Discovery` fetches asynchronously, one fetch at
a time, keeps the last good keys when a fetch fails and never empties them.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm
from jwt.exceptions import PyJWTError

from fastgw.plugins.building import HttpClient
from fastgw.plugins.jws import EC_ALG_BY_CURVE, OKP_ALGS, RSA_ALGS

from .errors import AuthError, IdpUnavailable
from .idp_http import call_idp
from .stats import OidcStats

logger = logging.getLogger("fastgw.oidc")

# First retry of a failed discovery after this long, doubling up to the maximum: quick recovery
# when the IdP starts a little after the gateway, without hammering one that is down for long.
DISCOVERY_RETRY_MIN_SECONDS = 1.0
DISCOVERY_RETRY_MAX_SECONDS = 60.0
# Discovery documents and key sets are a few KiB; anything this big is not one.
MAX_DOCUMENT_BYTES = 512 * 1024
# RSA keys below this are breakable (NIST SP 800-131A); a JWKS offering one is misconfigured.
MIN_RSA_KEY_BITS = 2048


def normalize_issuer(issuer: str) -> str:
    """Issuer identifiers compared tolerant of one trailing slash (IdPs differ on it)."""
    return issuer.rstrip("/")


@dataclass(frozen=True, slots=True)
class Metadata:
    issuer: str
    token_endpoint: str | None
    jwks_uri: str | None
    introspection_endpoint: str | None = None


@dataclass(frozen=True, slots=True)
class VerificationKey:
    kid: str | None
    algs: frozenset[str]  # what this key may verify: from its kty/crv/alg, not the token's say-so
    key: Any = field(repr=False)  # a cryptography public key


@dataclass(frozen=True, slots=True)
class KeySet:
    keys: tuple[VerificationKey, ...] = ()
    by_kid: Mapping[str, VerificationKey] = field(default_factory=dict)

    @classmethod
    def of(cls, keys: tuple[VerificationKey, ...]) -> KeySet:
        return cls(keys, {key.kid: key for key in keys if key.kid is not None})

    def knows(self, kid: str) -> bool:
        return kid in self.by_kid

    def candidates(self, kid: str | None, alg: str) -> tuple[VerificationKey, ...]:
        """Keys that may check a token signed with `alg` (and `kid`, when the token names one)."""
        if kid is not None:
            key = self.by_kid.get(kid)
            return (key,) if key is not None and alg in key.algs else ()
        return tuple(key for key in self.keys if alg in key.algs)


def _is_http_url(value: object) -> bool:
    return isinstance(value, str) and value.startswith(("http://", "https://"))


class IssuerMismatch(IdpUnavailable):
    """The discovery document names an issuer that is neither the configured one nor one of
    `issuers_allowed` (OpenID Connect Discovery §4.3: it is not that issuer's document)."""


def parse_metadata(
    body: bytes, expected_issuer: str, also_allowed: frozenset[str] = frozenset(), url: str = ""
) -> Metadata:
    """The parts of a discovery document we use. Its `issuer` must be the configured one, or
    one of `issuers_allowed` (the IdP's public name when the gateway reaches it by another)."""
    where = f" at {url}" if url else ""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise IdpUnavailable(f"discovery document{where} is not JSON") from None
    if not isinstance(document, dict):
        raise IdpUnavailable(f"discovery document{where} is not a JSON object")
    issuer = document.get("issuer")
    if not isinstance(issuer, str) or not issuer:
        raise IdpUnavailable(
            f"the JSON{where} is not an OpenID discovery document (it has no issuer)"
        )
    accepted = {normalize_issuer(expected_issuer)} | {normalize_issuer(i) for i in also_allowed}
    if normalize_issuer(issuer) not in accepted:
        raise IssuerMismatch(
            f'discovery document{where} names the issuer "{issuer[:200]}", not the configured '
            f'"{expected_issuer}"; if the IdP is reached by another name, add "{issuer[:200]}" '
            "to issuers_allowed"
        )
    token_endpoint = document.get("token_endpoint")
    jwks_uri = document.get("jwks_uri")
    introspection_endpoint = document.get("introspection_endpoint")
    return Metadata(
        issuer=issuer,
        token_endpoint=token_endpoint if _is_http_url(token_endpoint) else None,
        jwks_uri=jwks_uri if _is_http_url(jwks_uri) else None,
        introspection_endpoint=(
            introspection_endpoint if _is_http_url(introspection_endpoint) else None
        ),
    )


def parse_jwk(jwk: Mapping[str, Any]) -> VerificationKey | None:
    """A signature-verification key from one JWK, or None when it is not one we can use."""
    if jwk.get("use", "sig") != "sig":
        return None
    key_ops = jwk.get("key_ops")
    if isinstance(key_ops, list) and "verify" not in key_ops:
        return None
    kid = jwk.get("kid")
    kid = kid if isinstance(kid, str) else None
    declared = jwk.get("alg")
    kty = jwk.get("kty")
    key: Any  # a cryptography public key of the JWK's type (as VerificationKey.key)
    try:
        if kty == "RSA":
            algs = RSA_ALGS if declared is None else RSA_ALGS & {declared}
            key = RSAAlgorithm.from_jwk(dict(jwk))
            if isinstance(key, RSAPrivateKey):
                key = key.public_key()
            if not isinstance(key, RSAPublicKey) or key.key_size < MIN_RSA_KEY_BITS:
                return None
        elif kty == "EC":
            curve_alg = EC_ALG_BY_CURVE.get(jwk.get("crv", ""))
            if curve_alg is None or declared not in (None, curve_alg):
                return None
            algs = frozenset({curve_alg})
            key = ECAlgorithm.from_jwk(dict(jwk))
        elif kty == "OKP":
            if jwk.get("crv") not in ("Ed25519", "Ed448") or declared not in (None, "EdDSA"):
                return None
            algs = OKP_ALGS
            key = OKPAlgorithm.from_jwk(dict(jwk))
        else:
            return None  # "oct" keys have no place in a public key set
    except (PyJWTError, ValueError, TypeError, KeyError):
        return None
    if not algs:
        return None
    if hasattr(key, "public_key"):
        key = key.public_key()  # a private JWK published by mistake: keep only the public half
    return VerificationKey(kid, frozenset(algs), key)


def parse_jwks(body: bytes) -> KeySet:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise IdpUnavailable("JWKS is not JSON") from None
    keys = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(keys, list):
        raise IdpUnavailable("JWKS has no keys array")
    parsed = (parse_jwk(jwk) for jwk in keys if isinstance(jwk, dict))
    return KeySet.of(tuple(key for key in parsed if key is not None))


class Discovery:
    """Fetches metadata + keys; `refresh` is single-flight, throttled callers use `keys_for`."""

    def __init__(
        self,
        *,
        issuer: str,
        discovery_url: str,
        http: HttpClient,
        timeout: float,
        rediscovery_lifetime: float,
        need_keys: bool = True,
        clock: Callable[[], float] = time.monotonic,
        issuers_allowed: frozenset[str] = frozenset(),
        jwks_endpoint: str | None = None,
        extra_jwks_uris: tuple[str, ...] = (),
        headers: tuple[tuple[str, str], ...] = (),
        stats: OidcStats | None = None,
    ) -> None:
        self._issuer = issuer
        self._issuers_allowed = issuers_allowed
        self._jwks_endpoint = jwks_endpoint  # Kong's override of the document's jwks_uri
        self._extra_jwks_uris = extra_jwks_uris  # more trusted key sets (Kong's)
        self._headers = {"Accept": "application/json", **dict(headers)}
        self._discovery_url = discovery_url
        self._http = http
        self._timeout = timeout
        self._rediscovery_lifetime = rediscovery_lifetime
        self._need_keys = need_keys
        self._clock = clock
        self._stats = stats
        self.metadata: Metadata | None = None
        self.keys = KeySet()
        self._last_attempt = -math.inf
        self._last_error: AuthError | None = None
        self._inflight: asyncio.Task[None] | None = None

    # -- fetching ---------------------------------------------------------------------------------

    async def refresh(self) -> None:
        """Fetch metadata and keys now, joining a fetch already under way."""
        task = self._inflight
        if task is None:
            task = asyncio.get_running_loop().create_task(self._fetch())
            self._inflight = task
            task.add_done_callback(self._fetch_done)
        # shielded: a caller giving up (client gone, timeout) does not abort the shared fetch
        await asyncio.shield(task)

    def _fetch_done(self, task: asyncio.Task[None]) -> None:
        self._inflight = None
        if not task.cancelled():
            task.exception()  # retrieved here, so an unawaited failure is not reported as lost

    async def _fetch(self) -> None:
        self._last_attempt = self._clock()
        try:
            body = await self._get_document(self._discovery_url, "discovery", "discovery")
            metadata = parse_metadata(
                body, self._issuer, self._issuers_allowed, self._discovery_url
            )
            keys = self.keys
            if self._need_keys:
                keys = await self._fetch_keys(metadata)
        except AuthError as error:
            self._last_error = error
            # a wrong issuer fails every request until the config changes: an error, not noise
            level = logging.ERROR if isinstance(error, IssuerMismatch) else logging.WARNING
            logger.log(level, "OpenID discovery for %s failed: %s", self._issuer, error.reason)
            raise
        self.metadata, self.keys, self._last_error = metadata, keys, None

    async def _fetch_keys(self, metadata: Metadata) -> KeySet:
        jwks_uri = self._jwks_endpoint or metadata.jwks_uri
        if jwks_uri is None:
            raise IdpUnavailable("discovery document has no jwks_uri")
        try:
            keys = parse_jwks(await self._get_document(jwks_uri, "JWKS", "jwks"))
            for uri in self._extra_jwks_uris:
                extra = parse_jwks(await self._get_document(uri, "JWKS", "jwks"))
                keys = KeySet.of(keys.keys + extra.keys)
            if not keys.keys and self.keys.keys:
                # an empty set mid-rotation would fail every token; keep the last good keys
                raise IdpUnavailable("JWKS has no usable signing keys")
        except AuthError:
            if self._stats is not None:
                self._stats.jwks_fetched(False)
            raise
        if self._stats is not None:
            self._stats.jwks_fetched(True)
        return keys

    async def _get_document(self, url: str, what: str, endpoint: str) -> bytes:
        """The body of a JSON document the IdP publishes (bounded); IdpUnavailable otherwise."""
        response = await call_idp(
            self._http,
            "GET",
            url,
            what=what,
            timeout=self._timeout,
            max_body=MAX_DOCUMENT_BYTES,
            headers=self._headers,
            stats=self._stats,
            endpoint=endpoint,
        )
        if response.status != 200:
            raise IdpUnavailable(f"{what} answered HTTP {response.status}")
        return response.body

    async def run(self) -> None:
        """Discover in the background until it first succeeds, backing off between attempts."""
        delay = DISCOVERY_RETRY_MIN_SECONDS
        while self.metadata is None:
            try:
                await self.refresh()
            except AuthError:
                pass  # logged by _fetch
            except Exception:
                logger.exception("OpenID discovery for %s failed unexpectedly", self._issuer)
            if self.metadata is not None:
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, DISCOVERY_RETRY_MAX_SECONDS)

    # -- for requests -----------------------------------------------------------------------------

    async def ready(self) -> Metadata:
        """The metadata, fetching it when there is none (at most once per retry interval)."""
        if self.metadata is not None:
            return self.metadata
        error = self._last_error
        recent = self._clock() - self._last_attempt < DISCOVERY_RETRY_MIN_SECONDS
        if self._inflight is None and recent and error is not None:
            raise type(error)(f"discovery failed: {error.reason}")
        await self.refresh()
        assert self.metadata is not None
        return self.metadata

    async def keys_for(self, kid: str | None) -> KeySet:
        """The key set, re-fetched first when `kid` is unknown and `rediscovery_lifetime` has
        passed since the last fetch (an unknown kid is how key rotation shows)."""
        await self.ready()
        if kid is None or self.keys.knows(kid):
            return self.keys
        if self._inflight is not None:
            await asyncio.shield(self._inflight)
        elif self._clock() - self._last_attempt >= self._rediscovery_lifetime:
            await self.refresh()
        return self.keys

    async def close(self) -> None:
        task = self._inflight
        if task is not None:
            task.cancel()
