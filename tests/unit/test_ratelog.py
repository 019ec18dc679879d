"""The rate-limited log: one line per interval, the held-back count in the next one."""

from __future__ import annotations

import logging

import pytest

from fastgw.observability.ratelog import MAX_KEYS, KeyedRateLimitedLog, RateLimitedLog


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == "t"]


def test_one_line_per_interval_with_the_held_back_count(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="t")
    clock = Clock()
    limiter = RateLimitedLog(logging.getLogger("t"), logging.WARNING, 10.0, clock)
    assert limiter.emit("refused %s", "a")
    assert not limiter.emit("refused %s", "b")
    assert not limiter.emit("refused %s", "c")
    clock.now += 10.0
    assert limiter.emit("refused %s", "d")
    assert messages(caplog) == ["refused a", "refused d (and 2 more since the last report)"]


def test_keys_are_limited_apart_and_bounded(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="t")
    keyed = KeyedRateLimitedLog(logging.getLogger("t"), logging.WARNING, 10.0, Clock())
    assert keyed.emit("x", "x failed")
    assert keyed.emit("y", "y failed")  # another key is not hidden by the first
    assert not keyed.emit("x", "x failed")
    for index in range(MAX_KEYS * 2):
        keyed.emit(f"k{index}", "varying %d", index)
    # past MAX_KEYS the overflow shares one limiter: at most one more line, not MAX_KEYS more
    assert len(messages(caplog)) <= 2 + MAX_KEYS + 1
