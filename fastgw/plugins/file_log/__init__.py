"""`file-log`: Kong's plugin of that name: one JSON line per request (Kong's log record).

Config as Kong's: `path` (created when missing) and `reopen` (reopen the file for every write;
here: for every batch of lines). The log step keeps a reference to the finished request; the
record is built and written off the request path (writer.py). SIGUSR1 reopens the file.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

from fastgw.config.schema import Reader
from fastgw.observability.metrics import Family, counter
from fastgw.plugins.api import LogContext, Plugin, RouteInfo
from fastgw.plugins.building import SpecBase

from . import writer
from .record import Prepared, line

PRIORITY = 9  # Kong's
# Kong's check of `path` (a Lua pattern): no whitespace at either end, none of * & % ` inside.
_VALID_PATH = re.compile(r"^[^\s*&%`][^*&%`]*[^\s*&%`]$")


class FileLog(Plugin):
    """Appends Kong's log record of each request on its routes to `path`."""

    name = "file-log"
    priority = PRIORITY
    has_log = True

    def __init__(self, path: str, reopen: bool) -> None:
        self.path = path
        self.reopen_each_write = reopen
        self._file: writer.LogFile | None = None
        self._prepared: dict[RouteInfo, Prepared] = {}  # per route, made once

    async def start(self) -> None:
        self._file = writer.acquire(self.path, self.reopen_each_write)

    async def stop(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            file.flush()
            await asyncio.to_thread(writer.release, file)

    def log(self, ctx: LogContext, route: RouteInfo) -> None:
        file = self._file
        if file is not None:
            file.add(self._format, (ctx, route))

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
            .add((*label, "dropped"), file.dropped)
        ]

    def status(self) -> dict[str, object]:
        file = self._file
        return {
            "path": self.path,
            "lines_written": file.written if file else 0,
            "lines_dropped": file.dropped if file else 0,
        }

    def _format(self, item: tuple[LogContext, RouteInfo]) -> bytes:
        ctx, route = item
        prepared = self._prepared.get(route)
        if prepared is None:
            prepared = self._prepared[route] = Prepared(route)
        return line(ctx, time.time() - time.monotonic(), prepared)


class _Spec(SpecBase):
    name = "file-log"

    def parse_config(self, reader: Reader) -> dict[str, Any]:
        path = reader.string("path", required=True)
        if path is not None and not _VALID_PATH.match(path):
            reader.error("path", "not a valid filename")
        reopen = reader.boolean("reopen", False)
        reader.ignore("custom_fields_by_lua")
        if reader.raw.get("custom_fields_by_lua"):
            reader.error("custom_fields_by_lua", "not supported: fastgw runs no Lua")
        reader.finish()
        return {"path": path, "reopen": reopen}

    def build(self, config: dict[str, Any], runtime: object) -> FileLog:
        return FileLog(config["path"], config["reopen"])


SPEC = _Spec()
