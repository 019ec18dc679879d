"""The `correlation-id` step (Kong's access and header_filter phases): the request's id, taken
from the client's header or made here, sent upstream, written to the log record as Kong's
`correlation_id`, and echoed to the client when asked.

The generators are Kong's: `uuid` (a random v4 UUID per request), `uuid#counter` (one UUID per
worker and instance, then `#1`, `#2`, ...: cheap, unique within the fleet), `tracker` (where the
request came in: server address and port, worker pid, connection serial, request number on the
connection, time).
"""

from __future__ import annotations

import itertools
import os
import time
import uuid
from typing import Final

from fastgw.plugins.api import Plugin, RequestContext, set_serialize_value

from .schema import CorrelationIdConfig

PRIORITY: Final = 100001  # Kong's: first of all, so every later step and log line has the id
LOG_KEY: Final = "correlation_id"  # Kong's field of the log record

# nginx's $connection: each connection's serial number in this worker (tracker)
_CONNECTIONS = itertools.count(1)


class _Tracked:
    """A connection as the tracker generator names it: its serial and its requests so far."""

    __slots__ = ("requests", "serial")

    def __init__(self) -> None:
        self.serial = next(_CONNECTIONS)
        self.requests = 0


class CorrelationId(Plugin):
    name = "correlation-id"
    priority = PRIORITY

    def __init__(self, config: CorrelationIdConfig, server_address: tuple[str, int]) -> None:
        self.config = config
        self._header = config.header_name.lower().encode("latin-1")
        self._echo = config.echo_downstream
        self._generator = config.generator
        # uuid#counter: Kong makes the UUID per worker; instances are built in each worker
        self._prefix = f"{uuid.uuid4()}#"
        self._counter = itertools.count(1)
        self._server = f"{server_address[0]}-{server_address[1]}-{os.getpid()}-"

    def access(self, ctx: RequestContext) -> None:
        raw = ctx.get_header(self._header)
        if raw:
            value = raw.decode("latin-1")  # the client's id, forwarded as it came
        else:
            value = self.generate(ctx)
            raw = value.encode("latin-1")
            ctx.set_header(self._header, raw)
        set_serialize_value(ctx, LOG_KEY, value)
        if self._echo:
            ctx.set_response_header(self._header, raw)

    def generate(self, ctx: RequestContext) -> str:
        generator = self._generator
        if generator == "uuid#counter":
            return f"{self._prefix}{next(self._counter)}"
        if generator == "uuid":
            return str(uuid.uuid4())
        memo = ctx.connection_memo
        tracked = memo.get(self)
        if not isinstance(tracked, _Tracked):
            tracked = memo[self] = _Tracked()
        tracked.requests += 1
        return f"{self._server}{tracked.serial}-{tracked.requests}-{time.time():.3f}"
