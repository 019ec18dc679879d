"""When a request may be sent upstream again: only when the upstream cannot have processed it.

Pure functions of what happened to the attempt; the target and the exchange act on the answer.
"""

from __future__ import annotations

from fastgw.http.vocabulary import IDEMPOTENT_METHOD_BYTES


def connect_attempts(retries: int) -> int:
    """Connection attempts for a service with `retries` (Kong: retries after the first)."""
    return retries + 1


def may_resend(
    method: bytes, has_body: bool, reused: bool, got_response: bool, resent: bool
) -> bool:
    """A pooled connection the upstream had already closed: resend once on a fresh one.

    Only a connection that served earlier requests (`reused`) can have been closed by the upstream
    while idle; only before any byte of the response is it certain the request was not answered;
    only an idempotent method without a body may be sent twice (RFC 9110 §9.2.2).
    """
    return (
        reused
        and not got_response
        and not has_body
        and not resent
        and method in IDEMPOTENT_METHOD_BYTES
    )
