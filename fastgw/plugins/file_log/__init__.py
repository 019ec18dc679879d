"""`file-log`: Kong's plugin of that name: one JSON line per request (Kong's log record).

Config as Kong's: `path` (created when missing) and `reopen` (reopen the file for every write;
here: for every batch of lines). The log step (handler.py) makes the request's line; a thread
of the file's own writes the batches (writer.py). SIGUSR1 reopens the file.
"""

from __future__ import annotations

import re
from typing import Any

from fastgw.config.schema import Reader
from fastgw.plugins.building import SpecBase
from fastgw.plugins.kong_log.settings import refuse_lua

from .handler import FileLog

# Kong's check of `path` (a Lua pattern): no whitespace at either end, none of * & % ` inside.
_VALID_PATH = re.compile(r"^[^\s*&%`][^*&%`]*[^\s*&%`]$")

__all__ = ["SPEC", "FileLog"]


class _Spec(SpecBase):
    name = "file-log"

    def parse_config(self, reader: Reader) -> dict[str, Any]:
        path = reader.string("path", required=True)
        if path is not None and not _VALID_PATH.match(path):
            reader.error("path", "not a valid filename")
        reopen = reader.boolean("reopen", False)
        refuse_lua(reader)
        reader.finish()
        return {"path": path, "reopen": reopen}

    def build(self, config: dict[str, Any], runtime: object) -> FileLog:
        return FileLog(config["path"], config["reopen"])


SPEC = _Spec()
