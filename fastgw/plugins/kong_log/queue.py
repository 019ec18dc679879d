"""Kong's queue (kong/tools/queue.lua) for the loggers that send their records away: bounded,
batched, retried with backoff, and never in a request's way.

`enqueue` is the request's one call: it appends to a deque and returns. Entries wait bounded by
`max_entries` (and `max_bytes`, when set); a full queue drops its OLDEST entry to make room,
Kong's policy (recent records are worth more than old ones), and counts it. One sender task
(concurrency_limit 1) takes up to `max_batch_size` entries, waiting up to
`max_coalescing_delay` after the first for more, and hands the batch to the plugin's `send`. A
batch that fails is tried again after `initial_retry_delay`, doubled per try up to
`max_retry_delay`, until `max_retry_time` has passed since its first try; then it is dropped
(counted). Entries arriving meanwhile queue up, within the bound. concurrency_limit -1 (Kong:
every entry in its own timer, without bound) is UNLIMITED_SENDERS senders taking one entry each.

Log lines name the plugin instance and the queue's label (the endpoint without credentials),
never an entry, at most one per condition every 10 s.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Final

from fastgw.observability.metrics import Family, counter, gauge
from fastgw.observability.ratelog import KeyedRateLimitedLog
from fastgw.observability.stores import StoreUsage
from fastgw.plugins.kong_log.settings import QueueSettings

log = logging.getLogger("fastgw.log_queue")

# Kong's: a batch is sent at once when less than this is left of the coalescing delay.
COALESCE_MIN_TIME: Final = 0.05
# Kong's "unlimited" concurrency, bounded: this many entries in flight at once.
UNLIMITED_SENDERS: Final = 16
# Kong warns once when a queue reaches this share of max_entries.
CAPACITY_WARNING: Final = 0.8
# What a queue may take to send what is left when its plugin stops (a reload, a shutdown).
STOP_GRACE_SECONDS: Final = 5.0
# An entry's size when a queue bounded by entries reports its use in bytes before it has seen any.
TYPICAL_ENTRY_BYTES: Final = 1024

Send = Callable[[list[bytes]], Awaitable[None]]  # raises SendError (or any error) on failure

RESULTS: Final = ("sent", "queue_full", "too_large", "retries_exhausted", "stopped")


class SendError(Exception):
    """A batch could not be delivered; the message is safe to log (no credentials, no entry)."""


class LogQueue:
    """One plugin instance's queue towards its endpoint."""

    def __init__(self, name: str, label: str, settings: QueueSettings, send: Send) -> None:
        self.name = name  # the instance's log tag, e.g. "http-log plugin plugins[0]"
        self.label = label  # what is sent where, without credentials
        self.settings = settings
        self._send = send
        self._entries: deque[bytes] = deque()
        self.bytes_queued = 0
        self.counts = dict.fromkeys(RESULTS, 0)
        self._senders: list[asyncio.Task[None]] = []
        self._wake: asyncio.Future[None] | None = None  # a sender waits for entries
        self._full_warned = False
        self._dropping = False
        self._stopping = False
        self._logs = KeyedRateLimitedLog(log, logging.WARNING)
        self._errors = KeyedRateLimitedLog(log, logging.ERROR)

    # -- the request's side ----------------------------------------------------------------------

    def enqueue(self, entry: bytes) -> bool:
        """Queue `entry` (one record line); False when it was refused (too large, stopped)."""
        settings = self.settings
        if self._stopping:
            self.counts["stopped"] += 1
            return False
        max_bytes = settings.max_bytes
        if max_bytes is not None and len(entry) > max_bytes:
            self.counts["too_large"] += 1
            self._say(
                "too large",
                "string to be queued is longer (%d bytes) than the queue's max_bytes (%d bytes)",
                len(entry),
                max_bytes,
                error=True,
            )
            return False
        entries = self._entries
        if len(entries) >= settings.max_entries:
            self._drop_oldest()
            self._say(
                "full",
                "queue full, dropping old entries until processing is successful again",
                error=True,
            )
        if max_bytes is not None and self.bytes_queued + len(entry) > max_bytes:
            dropped = 0
            while entries and self.bytes_queued + len(entry) > max_bytes:
                self._drop_oldest()
                dropped += 1
            self._say(
                "bytes",
                "byte capacity exceeded, %d queue entries were dropped",
                dropped,
                error=True,
            )
        entries.append(entry)
        self.bytes_queued += len(entry)
        if len(entries) >= settings.max_entries * CAPACITY_WARNING:
            if not self._full_warned:
                self._full_warned = True
                self._say("80%", "queue at %d%% capacity", int(CAPACITY_WARNING * 100))
        else:
            self._full_warned = False
        if not self._senders:
            self._start()
        elif self._wake is not None and (
            len(entries) == 1 or len(entries) >= settings.max_batch_size
        ):
            self._wake_senders()
        return True

    def _drop_oldest(self) -> None:
        entry = self._entries.popleft()
        self.bytes_queued -= len(entry)
        self.counts["queue_full"] += 1
        self._dropping = True

    # -- the senders -----------------------------------------------------------------------------

    def _start(self) -> None:
        count = UNLIMITED_SENDERS if self.settings.concurrency_limit == -1 else 1
        self._senders = [asyncio.ensure_future(self._run()) for _ in range(count)]

    def _wake_senders(self) -> None:
        wake, self._wake = self._wake, None
        if wake is not None and not wake.done():
            wake.set_result(None)

    async def _wait(self, timeout: float | None) -> None:
        """Until an entry comes (or `timeout` seconds pass)."""
        if self._wake is None or self._wake.done():
            self._wake = asyncio.get_running_loop().create_future()
        wake = self._wake
        if timeout is None:
            await asyncio.shield(wake)
            return
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(wake)
        except TimeoutError:
            pass

    async def _run(self) -> None:
        while True:
            while not self._entries:
                if self._stopping:
                    return
                await self._wait(None)
            batch = await self._collect()
            if batch:
                await self._deliver(batch)

    async def _collect(self) -> list[bytes]:
        """The next batch: what is there up to max_batch_size, after waiting (at most the
        coalescing delay since the first entry) for a fuller one."""
        settings = self.settings
        size = 1 if settings.concurrency_limit == -1 else settings.max_batch_size
        if size > 1 and not self._stopping:
            deadline = time.monotonic() + settings.max_coalescing_delay
            while len(self._entries) < size and not self._stopping:
                left = deadline - time.monotonic()
                if left < COALESCE_MIN_TIME:
                    break
                await self._wait(left)
        entries = self._entries
        batch = [entries.popleft() for _ in range(min(size, len(entries)))]
        self.bytes_queued -= sum(len(entry) for entry in batch)
        if self._dropping and batch:
            self._dropping = False
            log.info("[%s] queue %s: queue resumed processing", self.name, self.label)
        return batch

    async def _deliver(self, batch: list[bytes]) -> None:
        """Send `batch`, retrying with Kong's backoff until max_retry_time is over."""
        try:
            result = await self._attempts(batch)
        except asyncio.CancelledError:
            self.counts["stopped"] += len(batch)
            raise
        self.counts[result] += len(batch)
        if result == "retries_exhausted":
            self._say(
                "lost",
                "could not send entries due to max_retry_time exceeded. %d queue entries were lost",
                len(batch),
                error=True,
            )

    async def _attempts(self, batch: list[bytes]) -> str:
        settings = self.settings
        started = time.monotonic()
        tries = 0
        while True:
            try:
                await self._send(batch)
            except Exception as error:  # the plugin's send failed: retried, never raised
                reason = str(error) if isinstance(error, SendError) else type(error).__name__
                self._say("failed", "handler could not process entries: %s", reason)
            else:
                return "sent"
            if self._stopping:
                return "stopped"
            if time.monotonic() - started > settings.max_retry_time:
                return "retries_exhausted"
            await asyncio.sleep(
                min(settings.max_retry_delay, 2**tries * settings.initial_retry_delay)
            )
            tries += 1

    async def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """Send what is queued within `grace` seconds (Kong's worker exit: no more
        coalescing), then give up; what is left is counted as stopped."""
        self._stopping = True
        self._wake_senders()
        senders, self._senders = self._senders, []
        if senders:
            _, pending = await asyncio.wait(senders, timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        left = len(self._entries)
        if left:
            self.counts["stopped"] += left
            self._entries.clear()
            self.bytes_queued = 0

    # -- reports ---------------------------------------------------------------------------------

    def _say(self, key: str, message: str, *args: object, error: bool = False) -> None:
        """Kong's line for the queue (warnings, or errors), at most one per key every 10 s."""
        limiter = self._errors if error else self._logs
        limiter.emit(key, f"[%s] queue %s: {message}", self.name, self.label, *args)

    @property
    def waiting(self) -> int:
        return len(self._entries)

    def usage(self, name: str) -> StoreUsage:
        """The queue as a bounded store: entries against max_entries (bytes estimated by the
        entries' mean size), or bytes against max_bytes when that is the tighter bound."""
        settings = self.settings
        count = len(self._entries)
        if settings.max_bytes is not None:
            return StoreUsage(name, self.bytes_queued, settings.max_bytes, count, 0)
        typical = self.bytes_queued // count if count else TYPICAL_ENTRY_BYTES
        return StoreUsage(
            name, count * typical, settings.max_entries * typical, count, settings.max_entries
        )

    def families(self, plugin: str, instance: str) -> list[Family]:
        labels = (plugin, instance, self.label)
        entries = counter(
            "fastgw_log_queue_entries_total",
            "Log entries by what became of them: sent; dropped because the queue was full "
            "(oldest first), too large for max_bytes, not sent within max_retry_time, or left "
            "when the plugin stopped.",
            ("plugin", "instance", "endpoint", "result"),
        )
        for result in RESULTS:
            entries.add((*labels, result), self.counts[result])
        waiting = gauge(
            "fastgw_log_queue_waiting_entries",
            "Log entries waiting in the queue.",
            ("plugin", "instance", "endpoint"),
        ).add(labels, len(self._entries))
        return [entries, waiting]
