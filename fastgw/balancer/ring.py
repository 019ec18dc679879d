"""Choosing a target: Kong's round-robin wheel, least-connections, and consistent-hashing ring.

Pure: targets are indices with weights; whether one may be chosen (healthy, not tried yet) is a
list of booleans the caller passes. The balancer owns the targets; these own only their order.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from math import gcd
from typing import Final

# Points of a target of average weight. Kong gives 160 (Ketama's figure), which leaves a
# target's share of the keys up to ~8% off its weight's; 800 keeps it within ~3%. It does not
# depend on how many targets there are (up to half the ring), so removing a target moves only
# the keys it owned.
TARGET_POINTS: Final = 800
# Kong clamps the ring's size (the upstream's `slots`) to at least this many points.
MIN_CONTINUUM_SIZE: Final = 1000


def hash_value(key: bytes) -> int:
    """A 32-bit hash, the same in every process (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.blake2b(key, digest_size=4).digest(), "big")


class RoundRobin:
    """Kong's wheel: each target weight/gcd times, shuffled once; a pointer walks it."""

    __slots__ = ("pointer", "wheel")

    def __init__(self, weights: Sequence[int], rng: random.Random | None = None) -> None:
        divisor = 0
        for weight in weights:
            divisor = gcd(divisor, weight)
        wheel: list[int] = []
        if divisor:
            for index, weight in enumerate(weights):
                wheel += [index] * (weight // divisor)
        (rng or random.Random()).shuffle(wheel)
        self.wheel = wheel
        self.pointer = 0

    def pick(self, allowed: Sequence[bool]) -> int:
        """The next allowed target on the wheel, or -1 when none is."""
        wheel = self.wheel
        size = len(wheel)
        for _ in range(size):
            pointer = self.pointer + 1
            if pointer >= size:
                pointer = 0
            self.pointer = pointer
            index = wheel[pointer]
            if allowed[index]:
                return index
        return -1


class LeastConnections:
    """The allowed target with the fewest requests in flight per unit of weight (Kong's
    (connections + 1) / weight); ties go round in turn."""

    __slots__ = ("start", "weights")

    def __init__(self, weights: Sequence[int]) -> None:
        self.weights = list(weights)
        self.start = 0

    def pick(self, allowed: Sequence[bool], in_flight: Sequence[int]) -> int:
        weights = self.weights
        count = len(weights)
        best = -1
        best_score = 0.0
        start = self.start
        for step in range(count):
            index = (start + step) % count
            if not allowed[index] or not weights[index]:
                continue
            score = (in_flight[index] + 1) / weights[index]
            if best < 0 or score < best_score:
                best, best_score = index, score
        self.start = (start + 1) % count if count else 0
        return best


class ConsistentHashing:
    """Kong's Ketama continuum: each target owns points of a ring of `slots` in proportion to
    its weight; a key goes to the owner of its point, or the next allowed owner going down.

    Removing a target moves only the keys it owned, so most keys stay where they were.
    """

    __slots__ = ("owners", "points")

    def __init__(self, names: Sequence[str], weights: Sequence[int], slots: int) -> None:
        points = max(slots, MIN_CONTINUUM_SIZE)
        continuum: list[int] = [-1] * points
        total = sum(weights)
        count = sum(1 for weight in weights if weight)
        per_target = min(TARGET_POINTS, points // (2 * count)) if count else 0
        # added in name order, so that every process builds the same ring from the same targets;
        # a point that collides is dropped rather than moved, so that a target's points do not
        # depend on the other targets (removing one moves only the keys it owned)
        for index in sorted(range(len(names)), key=lambda i: names[i]):
            weight = weights[index]
            if not weight:
                continue
            entries = max(1, round(weight * count * per_target / total))
            for label in range(1, entries + 1):
                slot = hash_value(b"%s %d" % (names[index].encode(), label)) % points
                if continuum[slot] == -1:
                    continuum[slot] = index
        # a key landing between two points belongs to the point below it (Kong walks down)
        owners = list(continuum)
        last = -1
        for slot in range(points - 1, -1, -1):
            if continuum[slot] != -1:
                last = continuum[slot]
                break
        for slot in range(points):
            if owners[slot] == -1:
                owners[slot] = last
            else:
                last = owners[slot]
        self.owners = owners
        self.points = points

    def pick(self, key: bytes, allowed: Sequence[bool]) -> int:
        if True not in allowed:
            return -1
        owners = self.owners
        points = self.points
        slot = hash_value(key) % points
        for _ in range(points):
            index = owners[slot]
            if index >= 0 and allowed[index]:
                return index
            slot = slot - 1 if slot else points - 1
        return -1
