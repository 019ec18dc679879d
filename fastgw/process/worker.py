"""What every worker process has, whatever runs in it: how it was launched, its place in a
`--workers N` instance, its event loop's error handler, and the config validation a reload runs.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Literal

from fastgw.config import GatewayConfig, Listener, load_config, parse_config
from fastgw.errors import ConfigError
from fastgw.observability.ratelog import KeyedRateLimitedLog

log = logging.getLogger("fastgw")


@dataclass(frozen=True, slots=True)
class Launch:
    """How the instance was started: its config file and the command line's overrides."""

    config_path: str
    listen: tuple[Listener, ...] | None
    admin: tuple[str, int] | Literal["off"] | None


@dataclass(frozen=True, slots=True)
class Supervised:
    """A worker's place in a `--workers N` instance."""

    run_dir: str
    slot: int
    node_id: str


def read_config(path: str, text: str | None = None) -> tuple[GatewayConfig | None, list[str]]:
    """(config, []) or (None, the lines `fastgw check` prints): a reload's validation."""
    try:
        if text is None:
            return load_config(path), []
        return parse_config(text, source=path), []
    except ConfigError as error:
        return None, error.lines(path)


class LoopErrors:
    """The worker loop's exception handler: one line per kind of error, rate-limited.

    What reaches it comes from uvloop's transports and servers (a peer resetting mid-write, an
    accept failing): repeatable at will by clients, so never a log flood and never a traceback
    unless the exception is not an OSError (then it is a bug and the traceback helps).
    """

    def __init__(self) -> None:
        self._logs = KeyedRateLimitedLog(log, logging.ERROR)

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
        message = str(context.get("message") or "event loop error")
        error = context.get("exception")
        kind = f"{type(error).__name__}:{message[:60]}"
        emit = self._logs.emit
        if not isinstance(error, BaseException):
            emit(kind, "event loop: %s", message)
        elif isinstance(error, OSError):
            emit(kind, "event loop: %s: %s", message, error)
        else:
            emit(kind, "event loop: %s: %r", message, error, exc_info=error)
