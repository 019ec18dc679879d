"""The balancer's pure parts: the wheel, least-connections, the hash ring, health, retries."""

from __future__ import annotations

import collections
import random

from fastgw.balancer.health import (
    HTTP_FAILURE,
    SUCCESS,
    TCP_FAILURE,
    TIMEOUT,
    TargetHealth,
    Thresholds,
)
from fastgw.balancer.retry import GIVE_UP, RESEND_STALE, RETRY, after_lost, may_retry_connect
from fastgw.balancer.ring import ConsistentHashing, LeastConnections, RoundRobin


def test_round_robin_wheel_gives_each_target_its_weight_per_turn() -> None:
    wheel = RoundRobin([50, 30, 20], random.Random(7))
    assert len(wheel.wheel) == 10  # 100 / gcd 10
    counts = collections.Counter(wheel.pick([True] * 3) for _ in range(1000))
    assert counts == {0: 500, 1: 300, 2: 200}


def test_round_robin_skips_what_is_not_allowed_and_says_when_nothing_is() -> None:
    wheel = RoundRobin([1, 1, 1])
    assert {wheel.pick([True, False, True]) for _ in range(30)} == {0, 2}
    assert wheel.pick([False, False, False]) == -1


def test_least_connections_prefers_the_least_loaded_per_weight() -> None:
    least = LeastConnections([100, 100, 200])
    assert least.pick([True] * 3, [5, 1, 3]) == 1
    assert least.pick([True] * 3, [5, 5, 5]) == 2  # (5+1)/200 beats (5+1)/100
    assert least.pick([True, True, False], [5, 1, 0]) == 1


def test_consistent_hashing_keeps_two_thirds_of_keys_when_one_of_three_goes() -> None:
    """Whichever target goes, only its keys move; the others keep theirs. A target's share is
    a third give or take the ring's and the keys' randomness (a few points), so the keys kept
    are two thirds within that."""
    names = ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"]
    ring = ConsistentHashing(names, [100, 100, 100], 10_000)
    keys = [b"user-%d" % n for n in range(6000)]
    before = {key: names[ring.pick(key, [True] * 3)] for key in keys}
    shares = collections.Counter(before.values())
    assert all(abs(count / len(keys) - 1 / 3) < 0.04 for count in shares.values()), shares
    for removed in names:
        remaining = [name for name in names if name != removed]
        smaller = ConsistentHashing(remaining, [100, 100], 10_000)
        after = {key: remaining[smaller.pick(key, [True] * 2)] for key in keys}
        stayed = [key for key in keys if before[key] != removed]
        assert all(after[key] == before[key] for key in stayed)  # none of theirs moved
        kept = sum(1 for key in keys if before[key] == after[key]) / len(keys)
        assert kept >= 2 / 3 - 0.04, (removed, kept)


def test_consistent_hashing_walks_past_an_unhealthy_owner_only() -> None:
    ring = ConsistentHashing(["a:1", "b:1", "c:1"], [1, 1, 1], 1000)
    keys = [b"k%d" % n for n in range(500)]
    owners = {key: ring.pick(key, [True] * 3) for key in keys}
    moved = {key: ring.pick(key, [True, False, True]) for key in keys}
    assert all(moved[key] == owners[key] for key in keys if owners[key] != 1)
    assert all(moved[key] in (0, 2) for key in keys)
    assert ring.pick(b"x", [False] * 3) == -1


PASSIVE = Thresholds(frozenset({200}), 2, frozenset({500, 503}), 3, 1, 2)


def test_failures_in_a_row_turn_a_target_off_and_successes_on_again() -> None:
    health = TargetHealth()
    assert not health.report(HTTP_FAILURE, PASSIVE)
    assert not health.report(HTTP_FAILURE, PASSIVE)
    assert not health.report(SUCCESS, PASSIVE)  # breaks the streak
    assert not health.report(HTTP_FAILURE, PASSIVE) and not health.report(HTTP_FAILURE, PASSIVE)
    assert health.report(HTTP_FAILURE, PASSIVE) and not health.healthy
    assert not health.report(SUCCESS, PASSIVE)
    assert health.report(SUCCESS, PASSIVE) and health.healthy


def test_each_failure_kind_has_its_threshold_and_zero_switches_it_off() -> None:
    health = TargetHealth()
    assert health.report(TCP_FAILURE, PASSIVE)  # tcp_failures: 1
    health.set(True)
    assert not health.report(TIMEOUT, PASSIVE) and health.report(TIMEOUT, PASSIVE)
    off = Thresholds(frozenset({200}), 0, frozenset({500}), 0, 0, 0)
    health = TargetHealth()
    assert not any(health.report(TCP_FAILURE, off) for _ in range(10)) and health.healthy
    assert not off.counts_anything and PASSIVE.counts_anything
    assert PASSIVE.outcome_of_status(503) == HTTP_FAILURE
    assert PASSIVE.outcome_of_status(200) == SUCCESS
    assert PASSIVE.outcome_of_status(404) == -1


def test_retry_policy_never_sends_a_request_that_may_have_been_processed_twice() -> None:
    # a POST whose connection ended before any response byte: never again
    assert after_lost(False, False, False, False, False, 1, 5) == GIVE_UP
    assert after_lost(False, True, True, False, False, 1, 5) == GIVE_UP
    # an idempotent request (a PUT) with a body: its body is gone, never again
    assert after_lost(True, True, True, False, False, 1, 5) == GIVE_UP
    # a response that began: never
    assert after_lost(True, False, True, True, False, 1, 5) == GIVE_UP
    # a stale pooled connection: once more, not counted
    assert after_lost(True, False, True, False, False, 1, 0) == RESEND_STALE
    assert after_lost(True, False, True, False, True, 1, 0) == GIVE_UP
    # a fresh connection closed: retried within the service's retries
    assert after_lost(True, False, False, False, False, 1, 1) == RETRY
    assert after_lost(True, False, False, False, False, 2, 1) == GIVE_UP
    assert may_retry_connect(1, 1) and not may_retry_connect(2, 1)
