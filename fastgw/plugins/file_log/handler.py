"""file-log's log step: each finished request's record line, batched towards its file.

Compiled (build_info.COMPILED_MODULES): `log` runs once per request on the instance's routes and
costs the record line (fastgw.plugins.kong_log.line) and a list append; once per batch the
lines go to the file's writer thread (writer.py).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final

from fastgw.observability.metrics import Family, counter
from fastgw.observability.ratelog import RateLimitedLog
from fastgw.plugins.api import LogContext, Plugin, RouteInfo, StoreUsage
from fastgw.plugins.file_log import writer
from fastgw.plugins.kong_log.line import record_line

log = logging.getLogger("fastgw.file_log")

PRIORITY: Final = 9  # Kong's
# A request's line is on disk within this long, and a batch costs one write.
FLUSH_SECONDS: Final = 0.2
# ... or sooner, once this many lines wait: bounds what a burst holds in memory.
FLUSH_RECORDS: Final = 256


class FileLog(Plugin):
    """Appends Kong's log record of each request on its routes to `path`."""

    name = "file-log"
    priority = PRIORITY
    has_log = True

    def __init__(self, path: str, reopen: bool) -> None:
        self.path = path
        self.reopen_each_write = reopen
        self._file: writer.LogFile | None = None
        self._pending: list[bytes] = []
        self._flush_handle: asyncio.TimerHandle | None = None
        self._failed = 0  # records that could not be made (a bug): counted as dropped
        self._failures = RateLimitedLog(log, logging.ERROR)

    async def start(self) -> None:
        self._file = writer.acquire(self.path, self.reopen_each_write)

    async def stop(self) -> None:
        self.flush()
        file, self._file = self._file, None
        if file is not None:
            await asyncio.to_thread(writer.release, file)

    def log(self, ctx: LogContext, route: RouteInfo) -> None:
        if self._file is None:
            return
        try:
            line = record_line(ctx, route)
        except Exception as error:  # a bug in the record must not cost the request
            self._failed += 1
            self._failures.emit("file-log: a record could not be made", exc_info=error)
            return
        pending = self._pending
        pending.append(line)
        if len(pending) == 1:
            self._flush_handle = asyncio.get_running_loop().call_later(FLUSH_SECONDS, self.flush)
        elif len(pending) >= FLUSH_RECORDS:
            self.flush()

    def flush(self) -> None:
        """Hand the lines waiting to the file's writer (at once on stop)."""
        handle = self._flush_handle
        if handle is not None:
            handle.cancel()
            self._flush_handle = None
        pending = self._pending
        if not pending:
            return
        self._pending = []
        file = self._file
        if file is not None:
            file.write(pending)

    def reopen(self) -> None:
        if self._file is not None:
            self._file.reopen()

    def metrics(self) -> list[Family]:
        file = self._file
        if file is None:
            return []
        label = (self.instance_name, self.path)
        return [
            counter(
                "fastgw_file_log_lines_total",
                "Log lines by result: written, or dropped (full disk, missing directory, a disk "
                "that does not keep up).",
                ("instance", "path", "result"),
            )
            .add((*label, "written"), file.written)
            .add((*label, "dropped"), file.dropped + self._failed)
        ]

    def status(self) -> dict[str, object]:
        file = self._file
        return {
            "path": self.path,
            "lines_written": file.written if file else 0,
            "lines_dropped": (file.dropped if file else 0) + self._failed,
        }

    def stores(self) -> list[StoreUsage]:
        """The bytes waiting for the file's writer thread, against their bound."""
        file = self._file
        if file is None:
            return []
        return [
            StoreUsage(
                f"file-log queue ({self.instance_name or self.path})",
                file.queued_bytes,
                writer.MAX_QUEUED_BYTES,
            )
        ]
