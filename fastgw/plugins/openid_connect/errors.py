"""Typed outcomes of a failed authentication, shared by the embedding API and the plugin.

Each error names the HTTP answer it maps to; `reason` is safe to show (never a secret or token).
"""

from __future__ import annotations


class AuthError(Exception):
    """Base of every authentication failure; `status` is the HTTP answer it maps to."""

    status = 500
    # RFC 6750 §3.1 error code for `WWW-Authenticate`, or None when no challenge applies
    error_code: str | None = None

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class InvalidCredentials(AuthError):
    """Missing, malformed or rejected client credentials, or a token that failed verification."""

    status = 401
    error_code = "invalid_token"


class InsufficientScope(AuthError):
    """The client is known but its token lacks a required scope or audience."""

    status = 403
    error_code = "insufficient_scope"


class IdpUnavailable(AuthError):
    """The identity provider could not be asked or answered badly; the client is not to blame."""

    status = 502


class IdpTimeout(IdpUnavailable):
    """The identity provider did not answer within `timeout`."""

    status = 504


class IdpBusy(IdpUnavailable):
    """The plugin's calls to the identity provider are at their bound and this caller's class of
    work has its queue full: answered at once rather than queued. Nothing the caller sent is
    wrong and a retry may work, so no challenge and no negative caching, as for every
    IdpUnavailable."""

    status = 503


class TooManyWaiting(IdpBusy):
    """This caller's address already has the most requests a class of work queues per address
    waiting for the identity provider: the address is asked to slow down."""

    status = 429


class IdpTokenRejected(IdpUnavailable):
    """The token endpoint accepted the client's credentials (HTTP 200) but answered a token that
    fails verification: a bad signature or algorithm, an unknown key, an unknown critical header,
    a wrong issuer, a lifetime that does not cover now. Nothing the caller sent is wrong, and a
    retry may work (a key rotation the JWKS has not caught up with, clock skew being fixed), so
    502 and no negative caching; a token that verifies but lacks this route's audience or scopes
    is the caller's lack of rights instead (InsufficientScope, 403)."""

    status = 502


class BodyTooLarge(AuthError):
    """Credentials may be in a body bigger than `credentials_max_body_size`: 413, not read."""

    status = 413
