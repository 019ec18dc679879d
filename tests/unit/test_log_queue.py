"""Kong's queue for the loggers: enqueue never waits, batches and their coalescing, the bound
(oldest dropped, counted; max_bytes), retries with backoff until max_retry_time, concurrency,
stopping with what is left, and the queue as a bounded store."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from fastgw.plugins.kong_log.queue import UNLIMITED_SENDERS, LogQueue, SendError
from fastgw.plugins.kong_log.settings import QueueSettings

WAIT = 5.0  # generous: every wait below ends on a state, this only bounds a bug


class Receiver:
    """The far end of a queue: records batches; `down` makes sends fail, `hold` keeps them."""

    def __init__(self) -> None:
        self.batches: list[list[bytes]] = []
        self.attempts = 0
        self.down = False
        self.gate: asyncio.Event | None = None  # set: sends wait for it
        self.in_flight = 0
        self.most_in_flight = 0

    async def send(self, batch: list[bytes]) -> None:
        self.attempts += 1
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.gate is not None:
                await self.gate.wait()
            if self.down:
                raise SendError("receiver down")
            self.batches.append(list(batch))
        finally:
            self.in_flight -= 1

    @property
    def entries(self) -> list[bytes]:
        return [entry for batch in self.batches for entry in batch]


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(WAIT):
        while not condition():
            await asyncio.sleep(0.001)


def queue(receiver: Receiver, **settings: object) -> LogQueue:
    return LogQueue(
        "test plugin plugins[0]", "http://logs.test:80", QueueSettings(**settings), receiver.send
    )  # type: ignore[arg-type]


async def test_enqueue_returns_at_once_and_a_batch_of_one_goes_out_alone() -> None:
    receiver = Receiver()
    receiver.gate = asyncio.Event()  # the receiver hangs: enqueue must not care
    q = queue(receiver)
    for index in range(3):
        assert q.enqueue(b"e%d" % index) is True
    await until(lambda: receiver.in_flight == 1)
    receiver.gate.set()
    await until(lambda: len(receiver.batches) == 3)
    assert receiver.batches == [[b"e0"], [b"e1"], [b"e2"]]
    assert q.counts["sent"] == 3
    await q.stop()


async def test_batches_fill_up_to_max_batch_size_within_the_coalescing_delay() -> None:
    receiver = Receiver()
    q = queue(receiver, max_batch_size=3, max_coalescing_delay=60)
    for index in range(7):
        q.enqueue(b"e%d" % index)
    await until(lambda: len(receiver.entries) == 6)
    assert receiver.batches == [[b"e0", b"e1", b"e2"], [b"e3", b"e4", b"e5"]]
    # the seventh waits for company, up to the delay; stopping sends it at once
    await q.stop()
    assert receiver.batches[-1] == [b"e6"] and q.counts["sent"] == 7


async def test_a_short_coalescing_delay_sends_what_is_there() -> None:
    receiver = Receiver()
    q = queue(receiver, max_batch_size=100, max_coalescing_delay=0.06)
    q.enqueue(b"a")
    q.enqueue(b"b")
    await until(lambda: receiver.batches == [[b"a", b"b"]])
    await q.stop()


async def test_a_full_queue_drops_its_oldest_entries_and_counts_them() -> None:
    receiver = Receiver()
    receiver.gate = asyncio.Event()
    q = queue(receiver, max_entries=3)
    q.enqueue(b"first")  # taken by the sender at once, held by the receiver
    await until(lambda: receiver.in_flight == 1)
    for index in range(6):
        q.enqueue(b"e%d" % index)
    assert q.waiting == 3 and q.counts["queue_full"] == 3
    usage = q.usage("q")
    assert (usage.entries, usage.capacity_entries) == (3, 3)
    assert usage.used_bytes == usage.capacity_bytes > 0
    receiver.gate.set()
    await until(lambda: len(receiver.entries) == 4)
    assert receiver.entries == [b"first", b"e3", b"e4", b"e5"]  # the newest kept
    await q.stop()


async def test_max_bytes_refuses_an_entry_too_large_and_drops_old_ones_to_fit() -> None:
    receiver = Receiver()
    receiver.gate = asyncio.Event()
    q = queue(receiver, max_bytes=10)
    q.enqueue(b"held")
    await until(lambda: receiver.in_flight == 1)
    assert q.enqueue(b"x" * 11) is False and q.counts["too_large"] == 1
    q.enqueue(b"aaaa")
    q.enqueue(b"bbbb")
    q.enqueue(b"cccc")  # 12 bytes would be waiting: the oldest goes
    assert q.bytes_queued == 8 and q.counts["queue_full"] == 1
    usage = q.usage("q")
    assert (usage.used_bytes, usage.capacity_bytes) == (8, 10)
    receiver.gate.set()
    await until(lambda: len(receiver.entries) == 3)
    assert receiver.entries == [b"held", b"bbbb", b"cccc"]
    await q.stop()


async def test_a_failed_batch_is_retried_with_backoff_until_it_goes_through() -> None:
    receiver = Receiver()
    receiver.down = True
    q = queue(receiver, initial_retry_delay=0.001, max_retry_delay=0.004)
    q.enqueue(b"e")
    await until(lambda: receiver.attempts >= 5)
    assert q.counts["sent"] == 0
    receiver.down = False
    await until(lambda: receiver.entries == [b"e"])
    assert q.counts["sent"] == 1 and q.counts["retries_exhausted"] == 0
    await q.stop()


async def test_a_batch_still_failing_after_max_retry_time_is_dropped_and_counted() -> None:
    receiver = Receiver()
    receiver.down = True
    q = queue(receiver, max_retry_time=0, initial_retry_delay=0.001)
    q.enqueue(b"lost")
    await until(lambda: q.counts["retries_exhausted"] == 1)
    q.enqueue(b"next")  # the queue goes on
    await until(lambda: q.counts["retries_exhausted"] == 2)
    assert receiver.entries == []
    await q.stop()


async def test_unlimited_concurrency_sends_entries_one_each_side_by_side_but_bounded() -> None:
    receiver = Receiver()
    receiver.gate = asyncio.Event()
    q = queue(receiver, concurrency_limit=-1, max_batch_size=50)
    for index in range(UNLIMITED_SENDERS + 5):
        q.enqueue(b"e%d" % index)
    await until(lambda: receiver.in_flight == UNLIMITED_SENDERS)
    assert q.waiting == 5
    receiver.gate.set()
    await until(lambda: len(receiver.entries) == UNLIMITED_SENDERS + 5)
    assert all(len(batch) == 1 for batch in receiver.batches)
    assert receiver.most_in_flight == UNLIMITED_SENDERS
    await q.stop()


async def test_stopping_gives_up_on_a_hanging_receiver_within_its_grace() -> None:
    receiver = Receiver()
    receiver.gate = asyncio.Event()  # never set
    q = queue(receiver)
    for index in range(4):
        q.enqueue(b"e%d" % index)
    await until(lambda: receiver.in_flight == 1)
    await q.stop(grace=0.01)
    assert q.counts["stopped"] == 4 and q.waiting == 0
    assert q.enqueue(b"late") is False and q.counts["stopped"] == 5


def test_the_queue_reports_kongs_results_under_its_endpoint() -> None:
    q = queue(Receiver())
    entries, waiting = q.families("http-log", "plugins[0]")
    assert entries.name == "fastgw_log_queue_entries_total"
    assert {key[3] for key in entries.samples} == {
        "sent",
        "queue_full",
        "too_large",
        "retries_exhausted",
        "stopped",
    }
    assert waiting.samples == {("http-log", "plugins[0]", "http://logs.test:80"): 0}


@pytest.mark.parametrize("size", [1, 5])
async def test_an_empty_queue_reports_a_typical_entry_size(size: int) -> None:
    receiver = Receiver()
    q = queue(receiver, max_entries=size)
    usage = q.usage("q")
    assert usage.used_bytes == 0 and usage.capacity_bytes > 0
    await q.stop()
