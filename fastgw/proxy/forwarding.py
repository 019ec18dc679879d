"""How a request is forwarded: which target takes it, whether a failed attempt is made again and
where, what the targets' passive health checks count. The wire's `Forwarding` trait, implemented.

Per route, a `Direct` (a service's own host, or an upstream of one target) or a `Balanced` (a
Kong upstream) is shared by every request: a request that never fails costs no object here, and
a plain one is not even asked (the dispatcher hands the exchange its target). The first failure
gives the request its `Attempts`, which counts its tries from then on. The rules themselves are
fastgw.balancer.retry's.
"""

from __future__ import annotations

from typing import Final, cast

from fastgw.balancer.balancer import NO_PEER_MESSAGE, Balancer
from fastgw.balancer.health import TCP_FAILURE, TIMEOUT
from fastgw.balancer.retry import GIVE_UP, RESEND_STALE, after_lost, may_retry_connect
from fastgw.http.exchange import Exchange, Forwarding
from fastgw.http.hop import CONNECT_REFUSED, CONNECT_TIMEOUT, Hop
from fastgw.http.vocabulary import IDEMPOTENT_METHOD_BYTES
from fastgw.plugins.api import Authenticated
from fastgw.proxy.targets import UpstreamTarget

# Nobody authenticated the request: consistent hashing on `consumer` takes its `hash_fallback`.
NO_CONSUMER: Final = b""


def consumer_key(exchange: Exchange) -> bytes:
    """Who the plugins authenticated (Kong's consumer, else the credential): `hash_on: consumer`."""
    principal = exchange.principal
    if isinstance(principal, Authenticated):
        return principal.hash_key
    return NO_CONSUMER


def _target(exchange: Exchange) -> UpstreamTarget:
    """The target of the attempt just made (every hop the proxy hands out is one)."""
    return cast(UpstreamTarget, exchange.target)


class ServiceForwarding(Forwarding):
    """What every request of one service shares: its retries, and where a retry goes."""

    __slots__ = ("retries",)

    def __init__(self, retries: int) -> None:
        self.retries = retries  # Kong's service `retries`: attempts after the first

    def next_target(
        self, exchange: Exchange, failed: UpstreamTarget, tried: tuple[UpstreamTarget, ...]
    ) -> UpstreamTarget | None:
        """Where the next attempt goes after `tried` failed (the latest, `failed`, included)."""
        raise NotImplementedError

    def attempts(self, exchange: Exchange) -> Attempts:
        """The request's failure state, made now that its first attempt failed."""
        attempts = Attempts(self)
        exchange.forwarding = attempts
        return attempts

    def first_hop(self, exchange: Exchange) -> Hop | None:
        raise NotImplementedError

    def connect_failed(self, exchange: Exchange, failure: int) -> Hop | None:
        return self.attempts(exchange).connect_failed(exchange, failure)

    def lost(self, exchange: Exchange, reused: bool, got_response: bool) -> Hop | None:
        return self.attempts(exchange).lost(exchange, reused, got_response)

    def failed(self, exchange: Exchange, timed_out: bool) -> None:
        _target(exchange).report(TIMEOUT if timed_out else TCP_FAILURE)

    def responded(self, exchange: Exchange, status: int) -> None:
        _target(exchange).report_status(status)


class Direct(ServiceForwarding):
    """A service with one target: every attempt goes there."""

    __slots__ = ("target",)

    def __init__(self, target: UpstreamTarget, retries: int) -> None:
        super().__init__(retries)
        self.target = target

    def first_hop(self, exchange: Exchange) -> Hop | None:
        return self.target

    def next_target(
        self, exchange: Exchange, failed: UpstreamTarget, tried: tuple[UpstreamTarget, ...]
    ) -> UpstreamTarget | None:
        return failed


class Balanced(ServiceForwarding):
    """A service naming a Kong upstream: the balancer picks per attempt, avoiding those tried."""

    __slots__ = ("balancer",)

    def __init__(self, balancer: Balancer[UpstreamTarget], retries: int) -> None:
        super().__init__(retries)
        self.balancer = balancer

    def first_hop(self, exchange: Exchange) -> Hop | None:
        target = self.balancer.pick(exchange, (), consumer_key(exchange))
        if target is None:
            exchange.respond_error(503, NO_PEER_MESSAGE)
        return target

    def next_target(
        self, exchange: Exchange, failed: UpstreamTarget, tried: tuple[UpstreamTarget, ...]
    ) -> UpstreamTarget | None:
        return self.balancer.pick(exchange, tried, consumer_key(exchange))


class Attempts(Forwarding):
    """One request's attempts once one failed: how many counted against `retries`, the targets
    that failed it, whether a stale pooled connection's resend was spent."""

    __slots__ = ("resent", "service", "tried", "tries")

    def __init__(self, service: ServiceForwarding) -> None:
        self.service = service
        self.tries = 1  # the attempt that just failed
        self.tried: tuple[UpstreamTarget, ...] = ()
        self.resent = False

    def first_hop(self, exchange: Exchange) -> Hop | None:
        return self.service.first_hop(exchange)

    def connect_failed(self, exchange: Exchange, failure: int) -> Hop | None:
        target = _target(exchange)
        if failure == CONNECT_TIMEOUT:
            target.report(TIMEOUT)
        elif failure == CONNECT_REFUSED:
            target.report(TCP_FAILURE)
        if not may_retry_connect(self.tries, self.service.retries):
            exchange.respond_error(504 if failure == CONNECT_TIMEOUT else 502)
            return None
        return self._next(exchange, target)

    def lost(self, exchange: Exchange, reused: bool, got_response: bool) -> Hop | None:
        target = _target(exchange)
        decision = after_lost(
            exchange.method in IDEMPOTENT_METHOD_BYTES,
            exchange.has_body(),
            reused,
            got_response,
            self.resent,
            self.tries,
            self.service.retries,
        )
        if decision == RESEND_STALE:
            self.resent = True  # not counted against retries (nginx's rule too)
            return target
        if not reused:
            target.report(TCP_FAILURE)  # closed on a fresh connection: the target's doing
        if decision == GIVE_UP:
            exchange.respond_error(502)
            return None
        return self._next(exchange, target)

    def _next(self, exchange: Exchange, failed: UpstreamTarget) -> Hop | None:
        """Another counted attempt: on another target where the service's upstream has one."""
        self.tried = tried = (*self.tried, failed)
        target = self.service.next_target(exchange, failed, tried)
        if target is None:
            exchange.respond_error(503, NO_PEER_MESSAGE)
            return None
        self.tries += 1
        return target

    def failed(self, exchange: Exchange, timed_out: bool) -> None:
        self.service.failed(exchange, timed_out)

    def responded(self, exchange: Exchange, status: int) -> None:
        self.service.responded(exchange, status)
