"""Redis's wire protocol as the plugins' client reads it: every reply kind, replies cut across
reads, error replies named as redis-py names them, replies matched to commands in order."""

from __future__ import annotations

import asyncio

import pytest

from fastgw.plugins.common.resp import (
    AuthenticationError,
    OutOfMemoryError,
    RedisReplyError,
    RedisUnavailable,
    RespConnection,
    encode,
    parse,
)


def test_commands_as_bulk_strings() -> None:
    assert encode(("SET", b"k", 5)) == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\n5\r\n"


def test_every_reply_kind() -> None:
    assert parse(b":42\r\n", 0) == (42, 5)
    assert parse(b"+OK\r\n", 0) == (b"OK", 5)
    assert parse(b"$3\r\nabc\r\n", 0) == (b"abc", 9)
    assert parse(b"$-1\r\n", 0) == (None, 5)
    assert parse(b"*2\r\n:1\r\n$-1\r\n", 0) == ([1, None], 13)
    error, _ = parse(b"-ERR unknown command\r\n", 0)
    assert isinstance(error, RedisReplyError) and str(error) == "ERR unknown command"


def test_login_and_memory_errors_are_named_as_redis_py_names_them() -> None:
    wrong, _ = parse(b"-WRONGPASS invalid username-password pair\r\n", 0)
    full, _ = parse(b"-OOM command not allowed\r\n", 0)
    assert isinstance(wrong, AuthenticationError) and isinstance(full, OutOfMemoryError)


class Transport:
    def __init__(self) -> None:
        self.written = b""
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.written += data

    def abort(self) -> None:
        self.aborted = True


async def test_replies_cut_across_reads_go_to_their_commands_in_order() -> None:
    connection = RespConnection()
    transport = Transport()
    connection.connection_made(transport)  # type: ignore[arg-type]
    first, second = connection.send(encode(("GET", "a")) + encode(("GET", "b")), 2)
    connection.data_received(b"$1\r\nx\r\n*2\r")
    assert first.done() and first.result() == b"x" and not second.done()
    connection.data_received(b"\n:1\r\n:2\r\n")
    assert second.result() == [1, 2]


async def test_a_caller_that_gave_up_leaves_the_others_in_step() -> None:
    connection = RespConnection()
    connection.connection_made(Transport())  # type: ignore[arg-type]
    (gone,) = connection.send(encode(("GET", "a")))
    (waiting,) = connection.send(encode(("GET", "b")))
    gone.cancel()
    connection.data_received(b":1\r\n:2\r\n")
    assert waiting.result() == 2


async def test_a_lost_connection_fails_every_waiting_command() -> None:
    connection = RespConnection()
    connection.connection_made(Transport())  # type: ignore[arg-type]
    futures = connection.send(encode(("PING",)) * 2, 2)
    connection.connection_lost(None)
    for future in futures:
        with pytest.raises(RedisUnavailable):
            await future
    with pytest.raises(RedisUnavailable):
        connection.send(encode(("PING",)))


async def test_bytes_that_are_not_redis_end_the_connection() -> None:
    connection = RespConnection()
    transport = Transport()
    connection.connection_made(transport)  # type: ignore[arg-type]
    (future,) = connection.send(encode(("PING",)))
    connection.data_received(b"HTTP/1.1 400 Bad Request\r\n")
    assert transport.aborted
    with pytest.raises(RedisUnavailable):
        await asyncio.wait_for(future, 1)
