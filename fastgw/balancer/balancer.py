"""A Kong upstream's choice: its targets, the algorithm choosing among them, their health.

The forwarding (fastgw.proxy.forwarding) asks `pick` for a target once the plugins ran (hashing
may need the consumer) and again for a retry, naming the targets already tried. A target is
whatever declares `BalancedTarget`; the policy never touches its connections.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, Generic, Protocol, TypeVar

from fastgw.balancer.health import TargetHealth, Thresholds
from fastgw.balancer.ring import ConsistentHashing, LeastConnections, RoundRobin

ROUND_ROBIN: Final = "round-robin"
LEAST_CONNECTIONS: Final = "least-connections"
CONSISTENT_HASHING: Final = "consistent-hashing"

# Kong's answer when no target may take the request (all unhealthy, or all weights 0).
NO_PEER_MESSAGE: Final = "failure to get a peer from the ring-balancer"


class BalancedTarget(Protocol):
    """What a target is to the policy (fastgw.proxy.targets.UpstreamTarget is one)."""

    @property
    def name(self) -> str:
        """Kong's `target`, host:port: where it sits on the hashing ring."""

    @property
    def weight(self) -> int: ...

    @property
    def health(self) -> TargetHealth: ...

    @property
    def in_flight(self) -> int:
        """Requests on their way to or at the target, for least-connections."""


Target = TypeVar("Target", bound=BalancedTarget)


class BalancedRequest(Protocol):
    """What hashing reads of a request (the exchange is one)."""

    path: bytes
    query: bytes

    @property
    def client_ip(self) -> str: ...

    def get_header(self, name: bytes) -> bytes | None: ...


class HashSource:
    """Kong's hash_on / hash_fallback: where the consistent-hashing key comes from."""

    __slots__ = ("kind", "name")

    def __init__(self, kind: str, name: bytes = b"") -> None:
        self.kind = kind  # none, consumer, ip, header, path, query_arg
        self.name = name  # the header (lower case) or query argument

    def key(self, request: BalancedRequest, consumer: bytes) -> bytes | None:
        kind = self.kind
        if kind == "header":
            return request.get_header(self.name)
        if kind == "ip":
            return request.client_ip.encode()
        if kind == "consumer":
            return consumer or None
        if kind == "path":
            return request.path
        if kind == "query_arg":
            return _query_arg(request.query, self.name)
        return None


def _query_arg(query: bytes, name: bytes) -> bytes | None:
    """The values of one query argument, sorted and joined by "," (Kong's normalisation)."""
    values = []
    for pair in query.split(b"&"):
        key, _, value = pair.partition(b"=")
        if key == name:
            values.append(value)
    if not values:
        return None
    return b",".join(sorted(values))


class Balancer(Generic[Target]):
    """One Kong upstream: the targets with weight > 0 (weight 0 disables one) and the choice."""

    __slots__ = (
        "algorithm",
        "hash_fallback",
        "hash_on",
        "hashing",
        "healths",
        "least",
        "name",
        "passive",
        "round_robin",
        "targets",
        "threshold",
        "total_weight",
        "weights",
    )

    def __init__(
        self,
        name: str,
        targets: Sequence[Target],
        *,
        algorithm: str = ROUND_ROBIN,
        hash_on: HashSource | None = None,
        hash_fallback: HashSource | None = None,
        slots: int = 10_000,
        threshold: float = 0.0,
        passive: Thresholds | None = None,
    ) -> None:
        self.name = name
        self.targets = tuple(target for target in targets if target.weight > 0)
        # read per pick: kept here once (a target's health object is its own for good)
        self.healths = tuple(target.health for target in self.targets)
        self.algorithm = algorithm
        self.hash_on = hash_on or HashSource("none")
        self.hash_fallback = hash_fallback or HashSource("none")
        self.threshold = threshold  # percent of the total weight that must be healthy, or 503
        self.passive = passive
        self.weights = weights = [target.weight for target in self.targets]
        self.total_weight = sum(weights)
        self.round_robin = RoundRobin(weights)
        self.least = LeastConnections(weights)
        self.hashing = (
            ConsistentHashing([target.name for target in self.targets], weights, slots)
            if algorithm == CONSISTENT_HASHING
            else None
        )

    def pick(
        self, request: BalancedRequest, tried: Sequence[Target] = (), consumer: bytes = b""
    ) -> Target | None:
        """A healthy target not in `tried` (any healthy one once all were tried), or None.
        `consumer`: who the plugins authenticated, consistent hashing's `hash_on: consumer`."""
        targets = self.targets
        allowed = [health.healthy for health in self.healths]
        if self.threshold and not self._healthy_enough(allowed):
            return None
        if tried:
            fresh = [
                ok and target not in tried for ok, target in zip(allowed, targets, strict=True)
            ]
            if True in fresh:
                allowed = fresh
        index = self._choose(request, allowed, consumer)
        return targets[index] if index >= 0 else None

    def _choose(self, request: BalancedRequest, allowed: list[bool], consumer: bytes) -> int:
        hashing = self.hashing
        if hashing is not None:
            key = self.hash_on.key(request, consumer)
            if key is None:
                key = self.hash_fallback.key(request, consumer)
            return hashing.pick(key or b"", allowed)
        if self.algorithm == LEAST_CONNECTIONS:
            return self.least.pick(allowed, [target.in_flight for target in self.targets])
        return self.round_robin.pick(allowed)

    def _healthy_enough(self, allowed: list[bool]) -> bool:
        healthy = sum(weight for ok, weight in zip(allowed, self.weights, strict=True) if ok)
        return healthy * 100 >= self.threshold * self.total_weight
