"""A clock the tests move: the plugins' whole-second clock (fastgw/plugins/common/clock.py)
reads it instead of the system's."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fastgw.plugins.common.clock import CLOCK

# 2027-01-15 08:00:00 UTC: the start of a minute, an hour and a day (not of a month)
T0 = 1_800_000_000


class FakeTime:
    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now

    def set(self, now: float) -> None:
        self.now = now
        CLOCK.refresh()

    def advance(self, seconds: float) -> None:
        self.set(self.now + seconds)


@pytest.fixture
def clock() -> Iterator[FakeTime]:
    fake = FakeTime(T0 + 10)
    saved = CLOCK.source
    CLOCK.source = fake.time
    CLOCK.refresh()
    try:
        yield fake
    finally:
        CLOCK.source = saved
        CLOCK.refresh()
