"""tcp-log's log step and its sender: each finished request's record queued, batches of lines
written on one kept-alive TCP (or TLS) connection by the queue's sender.

Compiled (build_info.COMPILED_MODULES): `log` runs once per request on the instance's routes and
costs the record line (fastgw.plugins.kong_log.line) and an append to the queue.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Final

from fastgw.observability.metrics import Family
from fastgw.observability.ratelog import RateLimitedLog
from fastgw.plugins.api import LogContext, Plugin, RouteInfo, StoreUsage
from fastgw.plugins.kong_log.line import record_line
from fastgw.plugins.kong_log.queue import LogQueue, SendError
from fastgw.plugins.kong_log.settings import QueueSettings
from fastgw.plugins.tcp_log.schema import TcpLogConfig

log = logging.getLogger("fastgw.tcp_log")

PRIORITY: Final = 7  # Kong's
# tcp-log's queue (Kong has none, see the package's docstring): Kong's defaults for the bound
# and the retries; up to this many lines in one write, sent as soon as they are there.
QUEUE: Final = QueueSettings(max_batch_size=1000, max_coalescing_delay=0.0)


class TcpLog(Plugin):
    """Writes Kong's log record of each request on its routes as a JSON line to a TCP peer."""

    name = "tcp-log"
    priority = PRIORITY
    has_log = True

    def __init__(self, config: TcpLogConfig) -> None:
        self.config = config
        self._connection = LineConnection(config)
        self._queue: LogQueue | None = None
        self._failed = 0
        self._failures = RateLimitedLog(log, logging.ERROR)

    async def start(self) -> None:
        self._queue = LogQueue(
            f"tcp-log plugin {self.instance_name}", self.config.label, QUEUE, self.send
        )

    async def stop(self) -> None:
        queue, self._queue = self._queue, None
        if queue is not None:
            await queue.stop()
        self._connection.close()

    def log(self, ctx: LogContext, route: RouteInfo) -> None:
        queue = self._queue
        if queue is None:
            return
        try:
            line = record_line(ctx, route)
        except Exception as error:  # a bug in the record must not cost the request
            self._failed += 1
            self._failures.emit("tcp-log: a record could not be made", exc_info=error)
            return
        queue.enqueue(line)

    async def send(self, batch: list[bytes]) -> None:
        await self._connection.write(b"\n".join(batch) + b"\n")

    def metrics(self) -> list[Family]:
        queue = self._queue
        return queue.families("tcp-log", self.instance_name) if queue is not None else []

    def status(self) -> dict[str, object]:
        queue = self._queue
        status: dict[str, object] = {"endpoint": self.config.label}
        if queue is not None:
            status.update(queue.counts)
            status["waiting"] = queue.waiting
        status["unformatted"] = self._failed
        return status

    def stores(self) -> list[StoreUsage]:
        queue = self._queue
        if queue is None:
            return []
        return [queue.usage(f"tcp-log queue ({self.instance_name})")]


class LineConnection:
    """One kept-alive connection to the peer: made when needed, closed after `keepalive` idle
    seconds, dropped on any failure (the next write makes a new one)."""

    def __init__(self, config: TcpLogConfig) -> None:
        self.config = config
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._tls: ssl.SSLContext | None = None
        if config.tls:
            # Kong's handshake: no verification of the peer's certificate
            context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            self._tls = context

    async def write(self, data: bytes) -> None:
        """Write `data` within the timeout (connecting first if needed), or raise SendError."""
        config = self.config
        try:
            async with asyncio.timeout(config.timeout):
                writer = await self._ready()
                writer.write(data)
                await writer.drain()
        except (OSError, TimeoutError, ssl.SSLError) as error:
            self.close()
            reason = "timeout" if isinstance(error, TimeoutError) else type(error).__name__
            raise SendError(f"failed to send data to {config.label}: {reason}") from None
        self._keep()

    async def _ready(self) -> asyncio.StreamWriter:
        writer, reader = self._writer, self._reader
        if writer is not None and reader is not None:
            if not writer.is_closing() and not reader.at_eof():
                return writer
            self.close()  # the peer closed it while it was idle
        config = self.config
        server_hostname = None
        if self._tls is not None:
            server_hostname = config.tls_sni or ""  # "": no SNI, as Kong without tls_sni
        self._reader, self._writer = await asyncio.open_connection(
            config.host, config.port, ssl=self._tls, server_hostname=server_hostname
        )
        return self._writer

    def _keep(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        if self.config.keepalive <= 0:
            self.close()
            return
        self._idle = asyncio.get_running_loop().call_later(self.config.keepalive, self.close)

    def close(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
