"""The upstream keep-alive pool: LIFO reuse, bounds, idle expiry, closed ones never reused."""

from __future__ import annotations

from fastgw.http.timers import Ticker
from fastgw.http.upstream import UpstreamConnection, UpstreamPool


class Transport:
    def __init__(self) -> None:
        self.closed = False

    def write(self, data: bytes) -> None: ...

    def close(self) -> None:
        self.closed = True

    abort = close


def make_pool(size: int = 4, max_requests: int = 100) -> UpstreamPool:
    ticker = Ticker()
    ticker.now = 1000.0
    return UpstreamPool(
        "127.0.0.1", 9, ticker, size=size, idle_timeout=60.0, max_requests=max_requests
    )


def connection(pool: UpstreamPool) -> UpstreamConnection:
    conn = UpstreamConnection(pool)
    conn.connection_made(Transport())  # type: ignore[arg-type]
    pool.busy.add(conn)
    return conn


def test_the_last_released_connection_is_reused_first() -> None:
    pool = make_pool()
    first, second = connection(pool), connection(pool)
    pool.release(first)
    pool.release(second)
    assert pool.acquire() is second
    assert pool.acquire() is first
    assert pool.acquire() is None
    assert pool.busy == {first, second}


def test_an_idle_connection_the_upstream_closes_leaves_the_pool_at_once() -> None:
    pool = make_pool()
    first, second = connection(pool), connection(pool)
    pool.release(first)
    pool.release(second)
    second.connection_lost(None)  # the upstream closed it while it sat idle
    assert pool.idle == [first]
    assert pool.acquire_idle() is first
    assert pool.acquire() is None


def test_releases_beyond_the_pool_size_or_max_requests_close() -> None:
    pool = make_pool(size=1, max_requests=2)
    first, second, third = connection(pool), connection(pool), connection(pool)
    pool.release(first)
    pool.release(second)  # the pool is full
    assert pool.idle == [first]
    assert second.closed and second.transport.closed  # type: ignore[union-attr]
    assert pool.acquire() is first
    third.requests = 2  # served its max_requests
    pool.release(third)
    assert third.closed
    assert pool.idle == [] and pool.busy == {first}


def test_sweep_closes_the_connections_idle_too_long_and_keeps_the_rest() -> None:
    pool = make_pool()
    old, recent = connection(pool), connection(pool)
    pool.release(old)
    pool.ticker.now += 30
    pool.release(recent)
    pool.sweep(pool.ticker.now + 45)  # old: idle 75 s, recent: 45 s
    assert old.closed and not recent.closed
    assert pool.idle == [recent]
    pool.sweep(pool.ticker.now + 61)
    assert recent.closed and pool.idle == []


def test_close_closes_idle_and_aborts_busy() -> None:
    pool = make_pool()
    idle, busy = connection(pool), connection(pool)
    pool.release(idle)
    pool.close()
    assert idle.closed and busy.closed
    assert pool.idle == [] and pool.busy == set()
