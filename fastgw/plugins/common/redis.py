"""The one Redis client of the plugins (rate-limiting's counters, openid-connect's shared token
cache): where Redis is (`RedisEndpoint`: a server, Sentinel or Cluster), how commands reach it
(`Commands`), and the circuit breaker that turns a dead Redis into quick local answers.

A single server is spoken to over one pipelined connection per worker (resp.py): no pool, no
lock, replies matched in order. Sentinel and Cluster, which only openid-connect's cache offers,
go through redis-py's asyncio clients. Either way a caller sees `execute(*args)`; replies are
RESP's (integers, bytes, None, lists) and an error reply raises RedisReplyError.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from .resp import Arg, RedisReplyError, RedisUnavailable, Reply, RespConnection, encode

__all__ = [
    "BREAKER_FAILURES",
    "BREAKER_RETRY_SECONDS",
    "Breaker",
    "Commands",
    "RedisEndpoint",
    "RedisReplyError",
    "RedisUnavailable",
    "Script",
    "SingleRedis",
    "connect",
]

# After this many failed Redis calls in a row the breaker opens: callers stop asking Redis and
# answer locally. Three tells a dead or unreachable Redis from one lost packet.
BREAKER_FAILURES: Final = 3
# While open, one call is let through this often to see whether Redis is back.
BREAKER_RETRY_SECONDS: Final = 2.0


@dataclass(frozen=True, slots=True)
class RedisEndpoint:
    """Where Redis is and how to log in (Kong's redis records); timeouts in seconds. Sentinel
    when `sentinel_nodes` are given, Cluster when `cluster_nodes` are, else one server."""

    host: str = "127.0.0.1"
    port: int = 6379
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    database: int = 0
    ssl: bool = False
    ssl_verify: bool = False
    server_name: str | None = None  # the TLS name to check (SNI); default: the host
    connect_timeout: float = 2.0
    timeout: float = 2.0  # a command's reply
    pool_size: int = 256  # Sentinel and Cluster (redis-py's pools)
    sentinel_master: str | None = None
    sentinel_nodes: tuple[tuple[str, int], ...] = ()
    sentinel_username: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)
    cluster_nodes: tuple[tuple[str, int], ...] = ()
    cluster_max_redirections: int = 5

    @property
    def topology(self) -> str:
        if self.cluster_nodes:
            return "cluster"
        return "sentinel" if self.sentinel_nodes else "single"

    @property
    def address(self) -> str:
        """What logs and status name it by (never a secret)."""
        if self.cluster_nodes:
            return ",".join(f"{host}:{port}" for host, port in self.cluster_nodes)
        if self.sentinel_nodes:
            return f"sentinel {self.sentinel_master}"
        return f"{self.host}:{self.port}/{self.database}"


class Commands(Protocol):
    """Redis commands, however Redis is reached."""

    async def execute(self, *args: Arg) -> Reply:
        """One command's reply; RedisReplyError for an error reply, RedisUnavailable (or the
        client library's own error) when there is no reply."""

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Script:
    """A Lua script, run by its digest (EVALSHA) and loaded again when Redis lost it."""

    source: str
    sha: str = ""

    @staticmethod
    def of(source: str) -> Script:
        # Redis names a script by its SHA-1
        return Script(source, hashlib.sha1(source.encode()).hexdigest())

    async def run(self, commands: Commands, keys: Sequence[Arg], args: Sequence[Arg]) -> Reply:
        try:
            return await commands.execute("EVALSHA", self.sha, len(keys), *keys, *args)
        except RedisReplyError as error:
            if not str(error).startswith("NOSCRIPT"):
                raise
        return await commands.execute("EVAL", self.source, len(keys), *keys, *args)


# -- one server, one pipelined connection ---------------------------------------------------------


class SingleRedis:
    """`Commands` over one pipelined connection to one server, made on first use and again after
    a failure (AUTH and SELECT as Kong's redis connector does: on a fresh connection). A reply
    later than `timeout` ends the connection; its callers, and those behind it, fail at once."""

    def __init__(self, endpoint: RedisEndpoint) -> None:
        self.endpoint = endpoint
        self._connection: RespConnection | None = None
        self._connecting: asyncio.Future[RespConnection] | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._closed = False

    async def execute(self, *args: Arg) -> Reply:
        reply = await self.execute_encoded(encode(args))
        if isinstance(reply, RedisReplyError):
            raise reply
        return reply

    async def execute_encoded(self, payload: bytes) -> Reply:
        """One encoded command's reply (an error reply returned, not raised), connecting
        first when needed."""
        future = self.send_encoded(payload)
        if future is None:
            connection = await self._connect()
            (future,) = connection.send(payload)
            self._watch_if_idle(connection)
        return await future

    def send_encoded(self, payload: bytes) -> asyncio.Future[Reply] | None:
        """One encoded command on its way: its reply to come (no await here, so a caller on
        the hot path waits for the future alone); None when not connected yet. Raises
        RedisUnavailable when the connection cannot take it."""
        connection = self._connection
        if connection is None or not connection.usable:
            return None
        (future,) = connection.send(payload)
        self._watch_if_idle(connection)
        return future

    def _watch_if_idle(self, connection: RespConnection) -> None:
        if self._watchdog is None:
            self._watch(connection)

    async def _connect(self) -> RespConnection:
        if self._closed:
            raise RedisUnavailable("the Redis client is closed")
        pending = self._connecting
        if pending is None:
            # one attempt at a time: the callers arriving meanwhile wait for the same one
            pending = self._connecting = asyncio.ensure_future(self._open())
            pending.add_done_callback(self._connected)
        return await asyncio.shield(pending)

    def _connected(self, attempt: asyncio.Future[RespConnection]) -> None:
        self._connecting = None
        if not attempt.cancelled() and attempt.exception() is None:
            self._connection = attempt.result()

    async def _open(self) -> RespConnection:
        endpoint = self.endpoint
        loop = asyncio.get_running_loop()
        context = _tls_context(endpoint) if endpoint.ssl else None
        try:
            async with asyncio.timeout(endpoint.connect_timeout):
                _, connection = await loop.create_connection(
                    RespConnection,
                    endpoint.host,
                    endpoint.port,
                    ssl=context,
                    server_hostname=(endpoint.server_name or endpoint.host) if context else None,
                )
                await self._log_in(connection)
        except TimeoutError:
            reason = f"no connection to Redis at {endpoint.address} in time"
            raise RedisUnavailable(reason) from None
        except OSError as error:
            reason = f"cannot connect to Redis at {endpoint.address}: {error}"
            raise RedisUnavailable(reason) from None
        return connection

    async def _log_in(self, connection: RespConnection) -> None:
        endpoint = self.endpoint
        commands: list[bytes] = []
        if endpoint.password:
            login: tuple[str, ...] = (endpoint.password,)
            if endpoint.username:
                login = (endpoint.username, endpoint.password)
            commands.append(encode(("AUTH", *login)))
        if endpoint.database:
            commands.append(encode(("SELECT", endpoint.database)))
        if not commands:
            return
        for future in connection.send(b"".join(commands), len(commands)):
            reply = await future
            if isinstance(reply, RedisReplyError):
                connection.abort(reply)
                raise reply

    def _watch(self, connection: RespConnection) -> None:
        """Check, a timeout from now, that the oldest command got its reply in time."""
        loop = asyncio.get_running_loop()
        self._watchdog = loop.call_later(self.endpoint.timeout, self._check, connection)

    def _check(self, connection: RespConnection) -> None:
        self._watchdog = None
        waited = connection.oldest_wait(time.monotonic())
        timeout = self.endpoint.timeout
        if waited >= timeout:
            connection.abort(RedisUnavailable(f"Redis did not answer within {timeout:g} s"))
            return
        if connection.waiting:
            loop = asyncio.get_running_loop()
            self._watchdog = loop.call_later(timeout - waited, self._check, connection)

    async def close(self) -> None:
        self._closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        connection, self._connection = self._connection, None
        if connection is not None and connection.transport is not None:
            connection.transport.close()


def _tls_context(endpoint: RedisEndpoint) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if not endpoint.ssl_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


# -- Sentinel and Cluster: redis-py ---------------------------------------------------------------


class _RedisPy:
    """`Commands` over one of redis-py's asyncio clients (Sentinel's master, a Cluster)."""

    def __init__(self, client: Any) -> None:
        self._client = client

    async def execute(self, *args: Arg) -> Reply:
        from redis.exceptions import ResponseError

        try:
            reply: Reply = await self._client.execute_command(*args)
        except ResponseError as error:
            raise RedisReplyError(str(error)) from None
        return reply

    async def close(self) -> None:
        with contextlib.suppress(Exception):  # closing a broken connection is worth no error
            await self._client.aclose()


def connect(endpoint: RedisEndpoint) -> Commands:
    """Commands for `endpoint`; nothing connects before the first command, so a Redis down at
    start is no error."""
    if endpoint.topology == "single":
        return SingleRedis(endpoint)
    tls: dict[str, Any] = {}
    if endpoint.ssl:
        tls = {
            "ssl": True,
            "ssl_cert_reqs": "required" if endpoint.ssl_verify else "none",
            "ssl_check_hostname": endpoint.ssl_verify,
        }
    if endpoint.topology == "cluster":
        from redis.asyncio.cluster import ClusterNode, RedisCluster

        return _RedisPy(
            RedisCluster(
                startup_nodes=[ClusterNode(host, port) for host, port in endpoint.cluster_nodes],
                username=endpoint.username,
                password=endpoint.password,
                socket_timeout=endpoint.timeout,
                socket_connect_timeout=endpoint.connect_timeout,
                max_connections=endpoint.pool_size,
                # a dead node costs a few quick retries, not the default ten
                cluster_error_retry_attempts=max(1, endpoint.cluster_max_redirections),
                **tls,
            )
        )
    from redis.asyncio.sentinel import Sentinel

    sentinel = Sentinel(
        list(endpoint.sentinel_nodes),
        sentinel_kwargs={
            "username": endpoint.sentinel_username,
            "password": endpoint.sentinel_password,
            "socket_timeout": endpoint.timeout,
            "socket_connect_timeout": endpoint.connect_timeout,
        },
    )
    assert endpoint.sentinel_master is not None  # the schemas require it with sentinel_nodes
    master = sentinel.master_for(
        endpoint.sentinel_master,
        username=endpoint.username,
        password=endpoint.password,
        db=endpoint.database,
        socket_timeout=endpoint.timeout,
        socket_connect_timeout=endpoint.connect_timeout,
        max_connections=endpoint.pool_size,
        **tls,
    )
    return _RedisPy(master)


# -- the circuit breaker --------------------------------------------------------------------------


class Breaker:
    """Closed: calls go through. After BREAKER_FAILURES failures in a row, open: calls are
    skipped, except one probe every BREAKER_RETRY_SECONDS; a success closes it again."""

    __slots__ = ("_failures", "_next_probe", "open")

    def __init__(self) -> None:
        self._failures = 0
        self._next_probe = 0.0
        self.open = False

    def allow(self, now: float) -> bool:
        if not self.open:
            return True
        if now >= self._next_probe:
            self._next_probe = now + BREAKER_RETRY_SECONDS  # one probe per interval
            return True
        return False

    def succeeded(self) -> bool:
        """Record a success; True when it closed an open breaker."""
        was_open = self.open
        self._failures = 0
        self.open = False
        return was_open

    def failed(self, now: float) -> None:
        self._failures += 1
        if self._failures >= BREAKER_FAILURES and not self.open:
            self.open = True
            self._next_probe = now + BREAKER_RETRY_SECONDS
