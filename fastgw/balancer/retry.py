"""When a request may be sent upstream again: only when the upstream cannot have processed it.

Pure functions of what happened to the attempt; fastgw.proxy.forwarding acts on the answer.

- A connection that could not be made: the request never left, any method is tried again, on
  another target where the service's upstream has one, up to the service's `retries`.
- A pooled keep-alive connection the upstream had closed while idle, noticed before any byte of
  the response: the upstream never read the request. Sent once more on a fresh connection,
  without counting against `retries` (nginx does the same), but only for an idempotent method
  without a body: that the connection was closed before the request arrived is likely, not sure.
- A fresh connection closed or reset before any byte of the response: the upstream may have
  acted on the request. Only an idempotent method without a body is sent again (RFC 9110
  §9.2.2), to another target where there is one, counted against `retries`. A POST (or any
  request whose body was sent) is never sent twice: the client gets a 502.
- A timeout after the request was sent, or a response that began: never.
"""

from __future__ import annotations

from typing import Final

# What to do after an upstream connection ended before any byte of the response.
GIVE_UP: Final = 0
RESEND_STALE: Final = 1  # the same request on a fresh connection, not counted as a retry
RETRY: Final = 2  # counted against the service's retries; another target where there is one


def connect_attempts(retries: int) -> int:
    """Connection attempts for a service with `retries` (Kong: retries after the first)."""
    return retries + 1


def may_retry_connect(tries: int, retries: int) -> bool:
    """After `tries` attempts that failed to connect, whether to make another."""
    return tries < connect_attempts(retries)


def after_lost(
    idempotent: bool,
    has_body: bool,
    reused: bool,
    got_response: bool,
    resent_stale: bool,
    tries: int,
    retries: int,
) -> int:
    """The connection carrying a request ended; `idempotent`: its method is (RFC 9110 §9.2.2);
    `tries` counts the attempts made so far."""
    if got_response or has_body or not idempotent:
        return GIVE_UP
    if reused and not resent_stale:
        return RESEND_STALE
    if tries < connect_attempts(retries):
        return RETRY
    return GIVE_UP
