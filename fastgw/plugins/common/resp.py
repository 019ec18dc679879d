"""Redis's wire protocol (RESP2) on one asyncio connection, pipelined: every caller writes its
command at once and waits for its reply, which comes back in the order the commands went out.

One connection carries a whole worker's commands without a pool or a lock: a rate-limited
request costs one write and one future. A call that waits longer than the timeout aborts the
connection (every reply behind it would be late too): its callers get an error, the next call
connects again.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Sequence
from typing import Final, TypeAlias

_CRLF: Final = b"\r\n"
_INTEGER: Final = 0x3A  # b":"
_STATUS: Final = 0x2B  # b"+"
_ERROR: Final = 0x2D  # b"-"
_BULK: Final = 0x24  # b"$"
_ARRAY: Final = 0x2A  # b"*"
# Commands waiting for their reply on one connection at most: beyond it a call fails at once
# (Redis is not keeping up; waiting would only grow the queue).
MAX_IN_FLIGHT: Final = 10_000


class RedisReplyError(Exception):
    """Redis answered with an error reply (`-ERR ...`, `-NOSCRIPT ...`)."""


class AuthenticationError(RedisReplyError):
    """The login was refused (`-WRONGPASS`, `-NOAUTH`): named as redis-py names it."""


class OutOfMemoryError(RedisReplyError):
    """Redis is full and refuses writes (`-OOM`, maxmemory with noeviction)."""


# error replies by their first word, as redis-py's classes name them in logs
_ERRORS: Final[dict[bytes, type[RedisReplyError]]] = {
    b"WRONGPASS": AuthenticationError,
    b"NOAUTH": AuthenticationError,
    b"OOM": OutOfMemoryError,
}


class RedisUnavailable(ConnectionError):
    """No reply: the connection failed, was lost, or a reply took longer than the timeout."""


# A reply: an integer, bytes (bulk or status string), None (nil), a list of replies, or an
# error reply (RedisReplyError, returned rather than raised, so one bad command in a pipeline
# does not hide the others' replies).
Reply: TypeAlias = "int | bytes | list[Reply] | RedisReplyError | None"
Arg: TypeAlias = bytes | str | int | float


class _Incomplete(Exception):
    """The buffer ends inside a reply: wait for more bytes."""


def encode(args: Sequence[Arg]) -> bytes:
    """One command as a RESP array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, str):
            data = arg.encode()
        else:
            data = str(arg).encode()
        parts.append(b"$%d\r\n" % len(data))
        parts.append(data)
        parts.append(_CRLF)
    return b"".join(parts)


def parse(buffer: bytes, start: int) -> tuple[Reply, int]:
    """The reply beginning at `start` and where the next begins; _Incomplete if it has not all
    arrived."""
    end = buffer.find(_CRLF, start)
    if end < 0:
        raise _Incomplete
    kind = buffer[start]
    line = buffer[start + 1 : end]
    after = end + 2
    if kind == _INTEGER:
        return int(line), after
    if kind == _BULK:
        size = int(line)
        if size < 0:
            return None, after
        if len(buffer) < after + size + 2:
            raise _Incomplete
        return buffer[after : after + size], after + size + 2
    if kind == _ARRAY:
        count = int(line)
        if count < 0:
            return None, after
        items: list[Reply] = []
        for _ in range(count):
            item, after = parse(buffer, after)
            items.append(item)
        return items, after
    if kind == _STATUS:
        return line, after
    if kind == _ERROR:
        error = _ERRORS.get(line.partition(b" ")[0], RedisReplyError)
        return error(line.decode(errors="replace")), after
    raise ValueError(f"not a RESP reply (first byte {kind!r})")


class RespConnection(asyncio.Protocol):
    """One connection to Redis: commands out in order, replies matched to them in order."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.waiting: collections.deque[tuple[asyncio.Future[Reply], float]] = collections.deque()
        self.buffer = b""
        self.lost: Exception | None = None  # why the connection ended

    # -- asyncio.Protocol -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        position = 0
        waiting = self.waiting
        try:
            while position < len(buffer):
                reply, position = parse(buffer, position)
                if not waiting:
                    raise ValueError("a reply no command asked for")
                future = waiting.popleft()[0]
                if not future.done():  # a caller that gave up has a cancelled future
                    future.set_result(reply)
        except _Incomplete:
            pass
        except ValueError as error:  # not Redis, or out of step: nothing after it is sure
            self.abort(RedisUnavailable(f"bad reply from Redis: {error}"))
            return
        self.buffer = buffer[position:] if position < len(buffer) else b""

    def connection_lost(self, exc: Exception | None) -> None:
        reason = self.lost or RedisUnavailable(
            f"connection to Redis lost: {exc}" if exc else "connection to Redis closed"
        )
        self.lost = reason
        self.transport = None
        self._fail_all(reason)

    # -- calls ------------------------------------------------------------------------------------

    @property
    def usable(self) -> bool:
        return self.transport is not None and self.lost is None

    def send(self, payload: bytes, commands: int = 1) -> list[asyncio.Future[Reply]]:
        """Write `commands` encoded commands at once; a future per reply, in order."""
        transport = self.transport
        if transport is None or self.lost is not None:
            raise self.lost or RedisUnavailable("not connected to Redis")
        if len(self.waiting) + commands > MAX_IN_FLIGHT:
            raise RedisUnavailable("too many commands waiting for Redis")
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        futures = [loop.create_future() for _ in range(commands)]
        for future in futures:
            self.waiting.append((future, now))
        transport.write(payload)
        return futures

    def oldest_wait(self, now: float) -> float:
        """How long the oldest unanswered command has waited (0 when none)."""
        return now - self.waiting[0][1] if self.waiting else 0.0

    def abort(self, reason: Exception) -> None:
        """End the connection now; every waiting caller gets `reason`."""
        if self.lost is None:
            self.lost = reason
        transport = self.transport
        self.transport = None
        if transport is not None:
            transport.abort()
        self._fail_all(reason)

    def _fail_all(self, reason: Exception) -> None:
        waiting = self.waiting
        while waiting:
            future = waiting.popleft()[0]
            if not future.done():
                future.set_exception(reason)
                future.exception()  # retrieved: a caller that gave up leaves no warning
