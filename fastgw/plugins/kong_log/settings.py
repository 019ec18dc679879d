"""The config the logging plugins share: Kong's `queue` record (kong/tools/queue_schema.lua),
its legacy keys, durations in milliseconds, and `custom_fields_by_lua`, which needs Lua.

Kong's names, defaults and bounds; fastgw's messages (the schema engine's).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastgw.config.schema import Declared, Integer, Number, Reader, Schema, read_schema

# Kong's bounds (queue_schema.lua)
MAX_BATCH_SIZE = 1_000_000
MAX_COALESCING_DELAY = 3600  # seconds
MAX_ENTRIES = 1_000_000
MIN_RETRY_DELAY = 0.001  # seconds
MAX_RETRY_DELAY = 1_000_000  # seconds: "effectively unlimited"
# concurrency_limit: 1 is one sender per queue; -1 Kong's "unlimited" (each entry on its own)
CONCURRENCY_LIMITS = (-1, 1)
# Kong's defaults of the legacy keys: a value equal to one changes nothing (Queue.get_plugin_params)
LEGACY_QUEUE_SIZE = 1
LEGACY_FLUSH_TIMEOUT = 2
LEGACY_RETRY_COUNT = 10


@dataclass(frozen=True, slots=True)
class QueueSettings:
    """Kong's queue parameters, with its defaults."""

    max_batch_size: int = 1
    max_coalescing_delay: float = 1.0  # seconds; no effect when max_batch_size is 1
    max_entries: int = 10_000
    max_bytes: int | None = None  # bytes waiting, on top of max_entries
    max_retry_time: float = 60.0  # seconds before a failing batch is given up
    initial_retry_delay: float = 0.01  # seconds, doubled per retry ...
    max_retry_delay: float = 60.0  # ... up to this
    concurrency_limit: int = 1


def _settings(reader: Reader, values: dict[str, Any]) -> QueueSettings:
    return QueueSettings(**values)


DEFAULTS = QueueSettings()
QUEUE = Schema(
    {
        "max_batch_size": Integer(DEFAULTS.max_batch_size, minimum=1, maximum=MAX_BATCH_SIZE),
        "max_coalescing_delay": Number(
            DEFAULTS.max_coalescing_delay, minimum=0, maximum=MAX_COALESCING_DELAY
        ),
        "max_entries": Integer(DEFAULTS.max_entries, minimum=1, maximum=MAX_ENTRIES),
        "max_bytes": Integer(minimum=1),
        "max_retry_time": Number(DEFAULTS.max_retry_time),
        "initial_retry_delay": Number(
            DEFAULTS.initial_retry_delay, minimum=MIN_RETRY_DELAY, maximum=MAX_RETRY_DELAY
        ),
        "max_retry_delay": Number(
            DEFAULTS.max_retry_delay, minimum=MIN_RETRY_DELAY, maximum=MAX_RETRY_DELAY
        ),
        "concurrency_limit": Integer(DEFAULTS.concurrency_limit, one_of=CONCURRENCY_LIMITS),
    },
    build=_settings,
)


def read_queue(reader: Reader, plugin: str) -> QueueSettings:
    """`queue` and the legacy keys Kong still honours (queue_size, flush_timeout) or only warns
    about (retry_count), with Kong's deprecation messages."""
    settings = read_schema(reader.mapping("queue"), QUEUE)
    retry_count = reader.integer("retry_count")
    queue_size = reader.integer("queue_size")
    flush_timeout = reader.number("flush_timeout")
    if retry_count is not None:
        reader.warn(
            "retry_count",
            f"{plugin}: config.retry_count no longer works, please use "
            "config.queue.max_retry_time instead",
        )
    changes: dict[str, Any] = {}
    if queue_size is not None:
        reader.warn(
            "queue_size",
            f"{plugin}: config.queue_size is deprecated, please use "
            "config.queue.max_batch_size instead",
        )
        if queue_size != LEGACY_QUEUE_SIZE:
            if 1 <= queue_size <= MAX_BATCH_SIZE:
                changes["max_batch_size"] = queue_size
            else:
                reader.error("queue_size", f"must be between 1 and {MAX_BATCH_SIZE}")
    if flush_timeout is not None:
        reader.warn(
            "flush_timeout",
            f"{plugin}: config.flush_timeout is deprecated, please use "
            "config.queue.max_coalescing_delay instead",
        )
        if flush_timeout != LEGACY_FLUSH_TIMEOUT:
            if 0 <= flush_timeout <= MAX_COALESCING_DELAY:
                changes["max_coalescing_delay"] = float(flush_timeout)
            else:
                reader.error("flush_timeout", f"must be between 0 and {MAX_COALESCING_DELAY}")
    if changes:
        values = {name: getattr(settings, name) for name in QUEUE.fields}
        settings = QueueSettings(**{**values, **changes})
    return settings


class Milliseconds(Declared):
    """A duration in ms (Kong's number), read as seconds; `positive`: 0 is refused (a wait
    without a deadline)."""

    __slots__ = ("default", "positive")

    def __init__(self, default: int, *, positive: bool) -> None:
        self.default = default
        self.positive = positive

    def read(self, reader: Reader, key: str) -> float:
        value = Number(self.default, minimum=0).read(reader, key)
        if self.positive and value == 0:
            reader.error(key, "must be > 0")
            value = self.default
        return float(value) / 1000


def refuse_lua(reader: Reader) -> None:
    """`custom_fields_by_lua`: accepted empty, else an error (its values are Lua code)."""
    reader.ignore("custom_fields_by_lua")
    if reader.raw.get("custom_fields_by_lua"):
        reader.error("custom_fields_by_lua", "not supported: fastgw runs no Lua")
