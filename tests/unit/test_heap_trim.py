"""The heap trim after a flood (fastgw/process/memory.py): when it trims, and how rarely."""

from __future__ import annotations

from fastgw.process.memory import TRIM_AFTER_CLOSED, TRIM_INTERVAL, HeapTrimmer


class Counted:
    def __init__(self) -> None:
        self.open = 0
        self.trims: list[int] = []

    def trimmer(self) -> HeapTrimmer:
        trimmer = HeapTrimmer(lambda: self.open)
        trimmer._trim = lambda pad: self.trims.append(pad) or 1  # type: ignore[assignment]
        return trimmer


def test_trims_once_the_connections_fell_far_below_their_peak() -> None:
    counted = Counted()
    trimmer = counted.trimmer()
    counted.open = 2 * TRIM_AFTER_CLOSED
    trimmer.sweep(100.0)
    counted.open = TRIM_AFTER_CLOSED + 10  # not yet half the peak
    trimmer.sweep(200.0)
    assert counted.trims == []
    counted.open = 5
    trimmer.sweep(300.0)
    assert counted.trims == []  # still falling
    trimmer.sweep(300.1)
    assert counted.trims == [0]


def test_waits_for_the_wave_of_closes_to_end() -> None:
    counted = Counted()
    trimmer = counted.trimmer()
    counted.open = 4 * TRIM_AFTER_CLOSED
    trimmer.sweep(100.0)
    # the closes arrive over several sweeps; a trim halfway would leave the rest untrimmed
    for step, open_now in enumerate((TRIM_AFTER_CLOSED, TRIM_AFTER_CLOSED // 2, 3, 0)):
        counted.open = open_now
        trimmer.sweep(101.0 + step * 0.1)
    assert counted.trims == []
    trimmer.sweep(102.0)
    assert counted.trims == [0]
    assert trimmer.peak == 0


def test_a_small_drop_never_trims() -> None:
    counted = Counted()
    trimmer = counted.trimmer()
    counted.open = TRIM_AFTER_CLOSED - 1
    trimmer.sweep(100.0)
    counted.open = 0
    trimmer.sweep(200.0)
    assert counted.trims == []


def test_at_most_one_trim_per_interval() -> None:
    counted = Counted()
    trimmer = counted.trimmer()
    for step in range(10):
        now = 100.0 + step * TRIM_INTERVAL / 4
        counted.open = 1000
        trimmer.sweep(now)
        counted.open = 0
        trimmer.sweep(now + 0.1)
        trimmer.sweep(now + 0.2)
    assert len(counted.trims) == 3  # 10 floods over 2.5 intervals
