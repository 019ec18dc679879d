"""Who calls the identity provider next: a bound on one plugin instance's IdP calls in flight,
shared out by class of work and, within a class, round robin over the callers' addresses.

Every miss asks for a slot before its token request or introspection call. The classes, in the
order a freed slot goes to them:
- REFRESH: a background refresh of a cached client's token (its requests keep being served);
- KNOWN: credentials (or a token) that were good before, remembered as digests in `KnownGood`;
- UNKNOWN: never seen, which is what a flood of made-up client ids or tokens is.
UNKNOWN work may hold at most half of the slots and KNOWN + UNKNOWN three quarters, so that
refreshes never wait behind unknown callers, nor known clients behind more than half of them.
Within KNOWN and UNKNOWN each caller address (an IPv4 address, an IPv6 /64) has its own FIFO and
a freed slot goes to the next address in turn, so a flood from some addresses leaves the others
their turns. Each queue is bounded: a full one answers at once (IdpBusy 503, TooManyWaiting
429 for one address's queue) instead of holding a request until its deadline. A waiter gives up
at the miss's one deadline (`IdpCall.deadline`, the plugin's `timeout` after the miss began),
and a waiter whose turn comes with less time left than the IdP typically takes to answer gives
up then (`too_late`) rather than spend a slot on a call that would time out.

Nothing here runs on a cache hit.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections import deque
from collections.abc import Awaitable, Hashable
from dataclasses import dataclass
from typing import Final, TypeVar

from fastgw.observability.metrics import Family, counter, gauge
from fastgw.plugins.api import StoreUsage

from .errors import IdpBusy, IdpTimeout, TooManyWaiting

T = TypeVar("T")

# IdP calls (token requests and introspection) in flight at once per plugin instance: the HTTP
# client's per-host connection budget, as more would only queue there.
IDP_MAX_CONCURRENCY: Final = 16
# Of the slots, unknown work may hold this share, and known + unknown work the next: the rest
# is kept for refreshes (a quarter) and for known clients (another quarter) whatever else waits.
UNKNOWN_SHARE: Final = 0.5
KNOWN_SHARE: Final = 0.75
# Waiters per class. A waiter holds only a future and its place; a full class answers at once.
QUEUE_LIMIT: Final = 1024
# Waiters per caller address in one class: a quarter of the class, so that a single address
# fills its own queue long before the class, while many clients behind one NAT still queue.
SOURCE_QUEUE_LIMIT: Final = 256
# Credentials (and tokens) remembered as good: as many as the token cache holds clients.
KNOWN_GOOD_LIMIT: Final = 100_000
# What one known-good digest (a str or bytes key in a dict) and one waiter (its future, its
# place in a queue) typically hold in memory: for the stores' reports, which estimate bytes.
KNOWN_GOOD_KEY_BYTES = 120
WAITER_BYTES = 300
# How much each IdP answer moves the typical answer time (an exponential moving average): a
# fifth, so that a few answers show a slower IdP and one slow answer does not dominate.
ANSWER_TIME_WEIGHT: Final = 0.2

REFRESH: Final = 0
KNOWN: Final = 1
UNKNOWN: Final = 2
CLASS_NAMES: Final = ("refresh", "known", "unknown")
# A background refresh has no caller: its one queue.
NO_SOURCE: Final = ""
_IPV6_SUBSCRIBER_BITS: Final = 64  # one subscriber's share of IPv6 space: an address to us

BUSY_REASON: Final = "too many requests waiting for the identity provider"
SOURCE_REASON: Final = "too many requests from this address waiting for the identity provider"


def source_of(address: str) -> str:
    """The fairness unit of a client address: the address itself for IPv4 (an IPv4-mapped IPv6
    address included), its /64 for IPv6 (a host given a /64 would otherwise be 2**64 callers)."""
    if ":" not in address:
        return address
    try:
        ip = ipaddress.IPv6Address(address.partition("%")[0])
    except ValueError:
        return address
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    prefix = int(ip) >> (128 - _IPV6_SUBSCRIBER_BITS)
    return f"{prefix:016x}::/{_IPV6_SUBSCRIBER_BITS}"


@dataclass(frozen=True, slots=True)
class IdpCall:
    """Who asks the IdP (class of work, address) and the miss's one deadline, in loop time: the
    slot wait, discovery and keys, connect, request and response all end by it."""

    kind: int
    source: str
    deadline: float
    budget: float  # the whole miss's timeout in seconds, as errors name it

    @classmethod
    def starting_now(cls, kind: int, source: str, timeout: float) -> IdpCall:
        return cls(kind, source, asyncio.get_running_loop().time() + timeout, timeout)

    def remaining(self) -> float:
        return self.deadline - asyncio.get_running_loop().time()

    async def within(self, awaitable: Awaitable[T], what: str) -> T:
        """`awaitable` (a shielded wait: discovery, keys) bounded by the deadline."""
        try:
            async with asyncio.timeout_at(self.deadline):
                return await awaitable
        except TimeoutError:
            raise IdpTimeout(f"{what} did not answer within {self.budget:g} s") from None


class KnownGood:
    """Digests of credentials (or tokens) the IdP accepted: a bounded set, the oldest forgotten
    first. Never a secret: the keys are the caches' own (salted) digests."""

    def __init__(self, capacity: int = KNOWN_GOOD_LIMIT) -> None:
        self.capacity = capacity
        self._keys: dict[Hashable, None] = {}

    def __contains__(self, key: Hashable) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, key: Hashable) -> None:
        keys = self._keys
        if key in keys:
            del keys[key]  # to the young end: what keeps being accepted is forgotten last
        elif len(keys) >= self.capacity:
            del keys[next(iter(keys))]
        keys[key] = None

    def discard(self, key: Hashable) -> None:
        self._keys.pop(key, None)

    def usage(self, name: str) -> StoreUsage:
        used, bound = len(self._keys), self.capacity
        return StoreUsage(
            name, used * KNOWN_GOOD_KEY_BYTES, bound * KNOWN_GOOD_KEY_BYTES, used, bound
        )


class _Queue:
    """One class's waiters: a FIFO per source, the sources served in turn (dict order)."""

    __slots__ = ("by_source", "limit", "source_limit", "waiting")

    def __init__(self, limit: int, source_limit: int) -> None:
        self.by_source: dict[str, deque[asyncio.Future[None]]] = {}
        self.limit = limit
        self.source_limit = source_limit
        self.waiting = 0

    def push(self, source: str, waiter: asyncio.Future[None]) -> None:
        """Raises IdpBusy when the class is full, TooManyWaiting when `source`'s queue is."""
        if self.waiting >= self.limit:
            raise IdpBusy(BUSY_REASON)
        queue = self.by_source.get(source)
        if queue is None:
            queue = self.by_source[source] = deque()
        elif len(queue) >= self.source_limit:
            raise TooManyWaiting(SOURCE_REASON)
        queue.append(waiter)
        self.waiting += 1

    def pop(self) -> asyncio.Future[None] | None:
        """The first waiter of the source whose turn it is; that source goes to the back."""
        for source, queue in self.by_source.items():
            waiter = queue.popleft()
            self.waiting -= 1
            del self.by_source[source]
            if queue:
                self.by_source[source] = queue
            return waiter
        return None

    def remove(self, source: str, waiter: asyncio.Future[None]) -> None:
        queue = self.by_source.get(source)
        if queue is None or waiter not in queue:
            return  # popped already (granted, or skipped as cancelled)
        queue.remove(waiter)
        self.waiting -= 1
        if not queue:
            del self.by_source[source]


class AdmissionStats:
    """Per class: slots granted at once or after a wait, refusals by reason, waits that ran out
    of time (plain integers, read by /metrics)."""

    def __init__(self) -> None:
        self.admitted = [0, 0, 0]
        self.busy = [0, 0, 0]
        self.source_limited = [0, 0, 0]
        self.timed_out = [0, 0, 0]


class Admission:
    """The slots of one plugin instance's IdP calls (`acquire`, then `release` once)."""

    def __init__(
        self,
        slots: int = IDP_MAX_CONCURRENCY,
        *,
        queue_limit: int = QUEUE_LIMIT,
        source_limit: int = SOURCE_QUEUE_LIMIT,
    ) -> None:
        self.slots = slots
        # the most slots a class and every class after it may hold together
        self._caps = (slots, max(1, int(slots * KNOWN_SHARE)), max(1, int(slots * UNKNOWN_SHARE)))
        self._busy = [0, 0, 0]
        # how long the IdP typically takes to answer (seconds, learnt from its answers)
        self.typical_answer = 0.0
        # a background refresh has no address: its class is one FIFO
        self._queues = (
            _Queue(queue_limit, queue_limit),
            _Queue(queue_limit, source_limit),
            _Queue(queue_limit, source_limit),
        )
        self.stats = AdmissionStats()

    @property
    def in_flight(self) -> int:
        return sum(self._busy)

    def _may_start(self, kind: int) -> bool:
        busy = self._busy
        if busy[REFRESH] + busy[KNOWN] + busy[UNKNOWN] >= self.slots:
            return False
        if kind == REFRESH:
            return True
        if busy[KNOWN] + busy[UNKNOWN] >= self._caps[KNOWN]:
            return False
        return kind == KNOWN or busy[UNKNOWN] < self._caps[UNKNOWN]

    async def acquire(self, call: IdpCall) -> None:
        """A slot for `call`, at once or in its turn; raises IdpBusy or TooManyWaiting when its
        queue is full, IdpTimeout when the deadline passes first (or comes too close to it)."""
        kind = call.kind
        queue = self._queues[kind]
        if not queue.waiting and self._may_start(kind):
            self._busy[kind] += 1
            self.stats.admitted[kind] += 1
        else:
            await self._wait_turn(call, queue)
        if self.too_late(call):
            self.release(kind)
            raise IdpTimeout(f"no identity provider call slot free within {call.budget:g} s")

    async def _wait_turn(self, call: IdpCall, queue: _Queue) -> None:
        kind = call.kind
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        try:
            queue.push(call.source, waiter)
        except TooManyWaiting:
            self.stats.source_limited[kind] += 1
            raise
        except IdpBusy:
            self.stats.busy[kind] += 1
            raise
        # a waiter whose wait just ended may still be counted: whatever can start, starts
        self._dispatch()
        try:
            async with asyncio.timeout_at(call.deadline):
                await waiter
        except TimeoutError:
            self._abandon(call, waiter)
            self.stats.timed_out[kind] += 1
            raise IdpTimeout(
                f"no identity provider call slot free within {call.budget:g} s"
            ) from None
        except BaseException:  # the caller is gone (cancelled)
            self._abandon(call, waiter)
            raise

    def too_late(self, call: IdpCall) -> bool:
        """For a call holding its slot: whether it has less time left than the IdP typically
        takes (it gives up with IdpTimeout, its slot going to the next waiter)."""
        if call.remaining() >= self.typical_answer:
            return False
        self.stats.timed_out[call.kind] += 1
        return True

    def answered(self, seconds: float) -> None:
        """The IdP answered a call (whatever it said) in `seconds`."""
        self.typical_answer += (seconds - self.typical_answer) * ANSWER_TIME_WEIGHT

    def _abandon(self, call: IdpCall, waiter: asyncio.Future[None]) -> None:
        if waiter.done() and not waiter.cancelled():
            self.release(call.kind)  # granted as the wait ended: the slot goes to the next
        else:
            self._queues[call.kind].remove(call.source, waiter)

    def release(self, kind: int) -> None:
        self._busy[kind] -= 1
        self._dispatch()

    def _dispatch(self) -> None:
        for turn in (REFRESH, KNOWN, UNKNOWN):
            queue = self._queues[turn]
            while queue.waiting and self._may_start(turn):
                waiter = queue.pop()
                if waiter is None:
                    break
                if waiter.done():
                    continue  # its wait ended (deadline, cancel) before it was removed
                self._busy[turn] += 1
                self.stats.admitted[turn] += 1
                waiter.set_result(None)

    def status(self) -> dict[str, object]:
        """For /status: slots and their use, waiters per class, addresses waiting."""
        return {
            "slots": self.slots,
            "in_flight": self.in_flight,
            "waiting": {name: self._queues[i].waiting for i, name in enumerate(CLASS_NAMES)},
            "queue_capacity": {name: self._queues[i].limit for i, name in enumerate(CLASS_NAMES)},
            "addresses_waiting": sum(len(queue.by_source) for queue in self._queues[KNOWN:]),
            "typical_answer_seconds": round(self.typical_answer, 3),
        }

    def usage(self, name: str) -> StoreUsage:
        """Every class's waiters against the queues' bounds."""
        waiting = sum(queue.waiting for queue in self._queues)
        bound = sum(queue.limit for queue in self._queues)
        return StoreUsage(name, waiting * WAITER_BYTES, bound * WAITER_BYTES, waiting, bound)

    def metric_families(self, instance: str) -> list[Family]:
        stats = self.stats
        slots = gauge(
            "fastgw_oidc_idp_slots",
            "Identity provider calls this instance may have in flight at once.",
            ("instance",),
        ).add((instance,), self.slots)
        in_flight = gauge(
            "fastgw_oidc_idp_in_flight",
            "Identity provider calls in flight by class of work (refresh, known, unknown).",
            ("instance", "class"),
        )
        waiting = gauge(
            "fastgw_oidc_idp_waiting",
            "Requests waiting for an identity provider call slot, by class of work.",
            ("instance", "class"),
        )
        capacity = gauge(
            "fastgw_oidc_idp_queue_capacity",
            "How many requests each class of work may have waiting.",
            ("instance", "class"),
        )
        admissions = counter(
            "fastgw_oidc_idp_admissions_total",
            "Asks for an identity provider call slot by class of work and result: admitted, "
            "busy (the class's queue full: 503), address_limit (the address's queue full: "
            "429), timeout (the deadline passed while waiting: 504).",
            ("instance", "class", "result"),
        )
        for index, name in enumerate(CLASS_NAMES):
            label = (instance, name)
            in_flight.add(label, self._busy[index])
            waiting.add(label, self._queues[index].waiting)
            capacity.add(label, self._queues[index].limit)
            admissions.add((*label, "admitted"), stats.admitted[index])
            admissions.add((*label, "busy"), stats.busy[index])
            admissions.add((*label, "address_limit"), stats.source_limited[index])
            admissions.add((*label, "timeout"), stats.timed_out[index])
        return [slots, in_flight, waiting, capacity, admissions]


def known_good_families(known: KnownGood, instance: str, what: str) -> list[Family]:
    """`what`: "clients" (credentials) or "tokens" (introspected tokens)."""
    return [
        gauge(
            f"fastgw_oidc_known_good_{what}",
            f"Known-good {what} remembered (digests): their misses go before never-seen ones.",
            ("instance",),
        ).add((instance,), len(known)),
        gauge(
            f"fastgw_oidc_known_good_{what}_capacity",
            f"How many known-good {what} are remembered at most (the oldest are forgotten).",
            ("instance",),
        ).add((instance,), known.capacity),
    ]
