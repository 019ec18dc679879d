"""http-log's log step and its sender: each finished request's record queued (Kong's queue),
batches POSTed (or PUT, PATCHed) to the endpoint by the queue's sender, off the request's way.

Compiled (build_info.COMPILED_MODULES): `log` runs once per request on the instance's routes and
costs the record line (fastgw.plugins.kong_log.line) and an append to the queue.
"""

from __future__ import annotations

import logging
from typing import Final

from fastgw.http.client import HttpClient, HttpClientError
from fastgw.observability.metrics import Family
from fastgw.observability.ratelog import RateLimitedLog
from fastgw.plugins.api import LogContext, Plugin, RouteInfo, StoreUsage
from fastgw.plugins.http_log.schema import HttpLogConfig
from fastgw.plugins.kong_log.line import record_line
from fastgw.plugins.kong_log.queue import LogQueue, SendError

log = logging.getLogger("fastgw.http_log")

PRIORITY: Final = 12  # Kong's
# Kong succeeds on any status below 300.
SUCCESS_BELOW: Final = 300
# What the endpoint may answer with (read and dropped); a larger answer fails the batch.
MAX_RESPONSE_BODY: Final = 1 << 20
# One sender sends one batch at a time; -1 senders may each hold a connection.
MAX_CONNECTIONS: Final = 16


class HttpLog(Plugin):
    """Sends Kong's log record of each request on its routes to an HTTP endpoint."""

    name = "http-log"
    priority = PRIORITY
    has_log = True

    def __init__(self, config: HttpLogConfig, ca_pem: str | None = None) -> None:
        self.config = config
        endpoint = config.endpoint
        headers = {"Content-Type": config.content_type}
        if endpoint.authorization is not None:
            headers["Authorization"] = endpoint.authorization
        for name, value in config.headers:
            headers.setdefault(name, value)  # Kong's: the plugin's own are not overridden
        self._headers = headers
        self._single = config.queue.max_batch_size == 1  # Kong: one object, not an array
        # Kong's keep-alive time for idle connections to the endpoint; with ssl_verify, the
        # endpoint is verified against the system's CAs and the config's ca_certificates
        self._client: HttpClient | None = HttpClient(
            verify_tls=config.ssl_verify,
            keepalive=config.keepalive > 0,
            max_connections_per_host=MAX_CONNECTIONS,
            ca_pem=ca_pem,
            idle_timeout=config.keepalive,
        )
        self._queue: LogQueue | None = None
        self._failed = 0
        self._failures = RateLimitedLog(log, logging.ERROR)

    async def start(self) -> None:
        config = self.config
        self._queue = LogQueue(
            f"http-log plugin {self.instance_name}",
            config.endpoint.label,
            config.queue,
            self.send,
        )

    async def stop(self) -> None:
        queue, self._queue = self._queue, None
        if queue is not None:
            await queue.stop()
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    def log(self, ctx: LogContext, route: RouteInfo) -> None:
        queue = self._queue
        if queue is None:
            return
        try:
            line = record_line(ctx, route)
        except Exception as error:  # a bug in the record must not cost the request
            self._failed += 1
            self._failures.emit("http-log: a record could not be made", exc_info=error)
            return
        queue.enqueue(line)

    async def send(self, batch: list[bytes]) -> None:
        """One request with the batch: the record itself when max_batch_size is 1, else a
        JSON array of them (Kong's bodies)."""
        client = self._client
        if client is None:
            raise SendError("the plugin stopped")
        config = self.config
        body = batch[0] if self._single else b"[" + b",".join(batch) + b"]"
        try:
            response = await client.request(
                config.method,
                config.endpoint.url,
                headers=self._headers,
                body=body,
                timeout=config.timeout,
                max_body=MAX_RESPONSE_BODY,
            )
        except HttpClientError as error:
            # the client's messages name scheme://host only, never the path or credentials
            raise SendError(f"failed request to {config.endpoint.label}: {error}") from None
        if response.status >= SUCCESS_BELOW:
            raise SendError(
                f"request to {config.endpoint.label} returned status code {response.status}"
            )

    def metrics(self) -> list[Family]:
        queue = self._queue
        return queue.families("http-log", self.instance_name) if queue is not None else []

    def status(self) -> dict[str, object]:
        queue = self._queue
        status: dict[str, object] = {"endpoint": self.config.endpoint.label}
        if queue is not None:
            status.update(queue.counts)
            status["waiting"] = queue.waiting
        status["unformatted"] = self._failed
        return status

    def stores(self) -> list[StoreUsage]:
        queue = self._queue
        if queue is None:
            return []
        return [queue.usage(f"http-log queue ({self.instance_name})")]
