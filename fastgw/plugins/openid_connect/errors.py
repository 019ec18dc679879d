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
