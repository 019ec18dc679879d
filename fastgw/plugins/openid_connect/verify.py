"""Access-token verification, done once per token when it enters the cache: signature, then claims.

Pure: a function of the token, a key set, the policy and `now`; fetching keys is discovery.py's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fastgw.plugins.jws import (
    ASYMMETRIC_ALGS,
    HMAC_ALGS,
    CompactJws,
    JwsError,
    check_signature,
    split,
)

from .discovery import KeySet, normalize_issuer
from .errors import InsufficientScope, InvalidCredentials
from .schema import OidcConfig


class UnknownSigningKey(InvalidCredentials):
    """No key in the set may check this token; a key re-fetch may help (rotation)."""


@dataclass(frozen=True, slots=True)
class VerifyPolicy:
    verify_signature: bool
    verify_claims: bool
    enable_hs_signatures: bool
    leeway: float
    issuers: frozenset[str]  # normalized (see normalize_issuer)
    audience_required: tuple[str, ...]
    audience_claim: tuple[str, ...]
    scopes_required: tuple[frozenset[str], ...]  # OR across items, AND within one
    scopes_claim: tuple[str, ...]
    groups_required: tuple[frozenset[str], ...] = ()  # as scopes_required
    groups_claim: tuple[str, ...] = ("groups",)
    roles_required: tuple[frozenset[str], ...] = ()
    roles_claim: tuple[str, ...] = ("roles",)
    claims_forbidden: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, config: OidcConfig) -> VerifyPolicy:
        issuers = config.issuers_allowed or (config.issuer,)
        return cls(
            verify_signature=config.verify_signature,
            verify_claims=config.verify_claims,
            enable_hs_signatures=config.enable_hs_signatures,
            leeway=config.leeway,
            issuers=frozenset(normalize_issuer(issuer) for issuer in issuers),
            audience_required=config.audience_required,
            audience_claim=config.audience_claim,
            scopes_required=_any_of_all(config.scopes_required),
            scopes_claim=config.scopes_claim,
            groups_required=_any_of_all(config.groups_required),
            groups_claim=config.groups_claim,
            roles_required=_any_of_all(config.roles_required),
            roles_claim=config.roles_claim,
            claims_forbidden=config.claims_forbidden,
        )

    @property
    def needs_claims(self) -> bool:
        return bool(
            self.audience_required
            or self.scopes_required
            or self.groups_required
            or self.roles_required
        )


def _any_of_all(items: tuple[str, ...]) -> tuple[frozenset[str], ...]:
    """Kong's AND/OR lists: any one item, each item all of its space-separated values."""
    return tuple(frozenset(item.split()) for item in items)


def parse(access_token: str) -> CompactJws | None:
    """The token's JWS parts, None when it is opaque; InvalidCredentials when it is a broken JWS."""
    try:
        return split(access_token)
    except JwsError as error:
        raise InvalidCredentials(f"malformed access token: {error}") from None


def check_signature_of(jws: CompactJws, keys: KeySet, policy: VerifyPolicy, secret: str) -> None:
    """The algorithm must be one the chosen key allows (RS*/PS* for RSA keys, the curve's ES* for
    EC keys, EdDSA for OKP); HS* only when enabled, and then with the client's own secret."""
    header = jws.header
    alg = header.get("alg")
    if "crit" in header:
        # RFC 7515 §4.1.11: we understand no extensions, so any critical one is a reject
        raise InvalidCredentials("access token has critical header parameters")
    if alg in HMAC_ALGS:
        if not policy.enable_hs_signatures:
            raise InvalidCredentials(f"{alg} tokens are not accepted (enable_hs_signatures)")
        if not check_signature(alg, jws.signing_input, secret.encode(), jws.signature):
            raise InvalidCredentials("access token signature is invalid")
        return
    if not isinstance(alg, str) or alg not in ASYMMETRIC_ALGS:
        raise InvalidCredentials(f"access token algorithm {str(alg)[:16]!r} is not accepted")
    kid = header.get("kid")
    kid = kid if isinstance(kid, str) else None
    candidates = keys.candidates(kid, alg)
    if not candidates:
        if kid is not None and keys.knows(kid):
            raise InvalidCredentials(f"access token algorithm {alg} does not fit its key")
        raise UnknownSigningKey("access token signed with an unknown key")
    for candidate in candidates:
        if check_signature(alg, jws.signing_input, candidate.key, jws.signature):
            return
    raise InvalidCredentials("access token signature is invalid")


def claim_at(claims: Mapping[str, Any], path: Sequence[str]) -> Any:
    """The claim at `path` (Kong's claim arrays are paths into nested objects), or None."""
    value: Any = claims
    for name in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(name)
    return value


def _string_set(value: Any, *, split_spaces: bool) -> frozenset[str]:
    if isinstance(value, str):
        return frozenset(value.split()) if split_spaces else frozenset((value,))
    if isinstance(value, list):
        return frozenset(item for item in value if isinstance(item, str))
    return frozenset()


def _number(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidCredentials(f"access token claim {name} is not a number")
    return float(value)


def check_claims(
    claims: Mapping[str, Any], policy: VerifyPolicy, now: float, *, issuer_required: bool = True
) -> None:
    """A flat list of option-gated checks with leeway, in the order a reader would expect.
    `issuer_required` is off for introspection answers, where RFC 7662 makes `iss` optional
    (one that is there must still be allowed)."""
    leeway = policy.leeway
    if policy.verify_claims:
        issuer = claims.get("iss")
        if issuer is None and not issuer_required:
            pass
        elif not isinstance(issuer, str) or normalize_issuer(issuer) not in policy.issuers:
            raise InvalidCredentials("access token issuer is not allowed")
        expires = _number(claims, "exp")
        if expires is not None and now >= expires + leeway:
            raise InvalidCredentials("access token has expired")
        not_before = _number(claims, "nbf")
        if not_before is not None and now + leeway < not_before:
            raise InvalidCredentials("access token is not valid yet")
        issued = _number(claims, "iat")
        if issued is not None and issued > now + leeway:
            raise InvalidCredentials("access token was issued in the future")
    if policy.audience_required:
        audience = _string_set(claim_at(claims, policy.audience_claim), split_spaces=False)
        if not any(required in audience for required in policy.audience_required):
            raise InsufficientScope("access token lacks a required audience")
    if policy.scopes_required:
        scopes = _string_set(claim_at(claims, policy.scopes_claim), split_spaces=True)
        if not any(required <= scopes for required in policy.scopes_required):
            raise InsufficientScope("access token lacks the required scopes")
    if policy.groups_required:
        groups = _string_set(claim_at(claims, policy.groups_claim), split_spaces=False)
        if not any(required <= groups for required in policy.groups_required):
            raise InsufficientScope("access token lacks the required groups")
    if policy.roles_required:
        roles = _string_set(claim_at(claims, policy.roles_claim), split_spaces=False)
        if not any(required <= roles for required in policy.roles_required):
            raise InsufficientScope("access token lacks the required roles")
    for name in policy.claims_forbidden:
        if name in claims:
            raise InsufficientScope(f"access token has the forbidden claim {name[:40]}")


def verify_token(
    jws: CompactJws | None, keys: KeySet, policy: VerifyPolicy, now: float, client_secret: str
) -> dict[str, Any]:
    """The verified claims of a token parsed by `parse` ({} for an opaque token, None); raises
    InvalidCredentials, UnknownSigningKey or InsufficientScope."""
    if jws is None:
        if policy.needs_claims:
            raise InsufficientScope("access token is opaque; required scopes cannot be checked")
        return {}
    if policy.verify_signature:
        check_signature_of(jws, keys, policy, client_secret)
    check_claims(jws.claims, policy, now)
    return dict(jws.claims)
