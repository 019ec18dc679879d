"""The upstream keep-alive pool: LIFO reuse, bounds, idle expiry, closed ones never reused."""

from __future__ import annotations

from fastgw.http.timers import Ticker
from fastgw.http.upstream import EXCESS_IDLE_GRACE, UpstreamConnection, UpstreamPool


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
    assert pool.acquire() is first
    assert pool.acquire() is None


def test_connections_beyond_the_size_stay_through_a_burst_then_go() -> None:
    """Released beyond `size`, connections wait in the pool for the next burst; the sweep closes
    the oldest of them once they have been idle EXCESS_IDLE_GRACE (nginx would close them at once
    and open new ones a moment later)."""
    pool = make_pool(size=2)
    conns = [connection(pool) for _ in range(4)]
    for conn in conns:
        pool.release(conn)
    assert pool.idle == conns and not any(conn.closed for conn in conns)
    pool.sweep(pool.ticker.now + EXCESS_IDLE_GRACE / 2)  # a burst's gap: nothing closes
    assert pool.idle == conns
    assert pool.acquire() is conns[3]  # and the next burst reuses them
    pool.release(conns[3])
    pool.sweep(pool.ticker.now + EXCESS_IDLE_GRACE + 0.1)  # idle past the grace: back to size
    assert conns[0].closed and conns[1].closed
    assert pool.idle == [conns[2], conns[3]]
    assert not conns[2].closed and not conns[3].closed


def test_max_requests_and_a_zero_size_close_at_release() -> None:
    pool = make_pool(max_requests=2)
    worn = connection(pool)
    worn.requests = 2  # served its max_requests
    pool.release(worn)
    assert worn.closed and worn.transport.closed  # type: ignore[union-attr]
    no_keepalive = make_pool(size=0)
    conn = connection(no_keepalive)
    no_keepalive.release(conn)
    assert conn.closed and no_keepalive.idle == [] and no_keepalive.busy == set()


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
