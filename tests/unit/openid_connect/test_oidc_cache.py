"""Cache policy, sans-IO: TTL math, L1 bound, negative entries, single-flight."""

from __future__ import annotations

import asyncio
import math

import pytest
from oidc_fakes import NOW

from fastgw.plugins.openid_connect.cache import (
    REFRESH_AHEAD_MAX_SECONDS,
    REFRESH_AHEAD_MIN_SECONDS,
    REFRESH_RETRY_SECONDS,
    Entry,
    Token,
    TokenCache,
    TtlPolicy,
    credentials_cache_key,
    plan_lifetime,
)
from fastgw.plugins.openid_connect.credentials import ClientCredentials
from fastgw.plugins.openid_connect.errors import IdpUnavailable, InvalidCredentials
from fastgw.plugins.openid_connect.flights import SingleFlight

POLICY = TtlPolicy(cache_ttl=3600, ttl_min=None, ttl_max=None, resurrect=0)


def policy(**changes: float | None) -> TtlPolicy:
    values = {"cache_ttl": 3600, "ttl_min": None, "ttl_max": None, "resurrect": 0}
    values.update(changes)
    return TtlPolicy(**values)  # type: ignore[arg-type]


# -- TTL math -------------------------------------------------------------------------------------


def test_ttl_from_expires_in() -> None:
    times = plan_lifetime(POLICY, NOW, 300, None)
    assert times.expires_at == NOW + 300
    assert times.valid_until == NOW + 300
    assert times.refresh_at == NOW + 300 - 30  # 10% of 300 s
    assert times.stale_until == times.expires_at


def test_ttl_from_exp_when_no_expires_in() -> None:
    times = plan_lifetime(POLICY, NOW, None, NOW + 100)
    assert (times.expires_at, times.valid_until) == (NOW + 100, NOW + 100)


def test_cache_ttl_when_no_expiry_at_all() -> None:
    times = plan_lifetime(policy(cache_ttl=42), NOW, None, None)
    assert times.expires_at == NOW + 42
    assert math.isinf(times.valid_until)


def test_refresh_margin_is_capped_at_a_minute() -> None:
    times = plan_lifetime(POLICY, NOW, 86_400, None)
    assert times.expires_at - times.refresh_at == REFRESH_AHEAD_MAX_SECONDS


def test_short_lived_tokens_refresh_at_least_a_second_ahead() -> None:
    four = plan_lifetime(POLICY, NOW, 4, None)
    assert four.expires_at - four.refresh_at == REFRESH_AHEAD_MIN_SECONDS  # not 10%: 0.4 s
    one = plan_lifetime(POLICY, NOW, 1, None)
    assert one.expires_at - one.refresh_at == 0.5  # half a lifetime under 2 s
    thirty = plan_lifetime(POLICY, NOW, 30, None)
    assert thirty.expires_at - thirty.refresh_at == pytest.approx(3.0)  # 10% from 10 s up


def test_max_clamp() -> None:
    times = plan_lifetime(policy(ttl_max=60), NOW, 3600, NOW + 3600)
    assert times.expires_at == NOW + 60
    assert times.valid_until == NOW + 3600


def test_min_clamp_never_goes_past_the_tokens_own_expiry() -> None:
    times = plan_lifetime(policy(ttl_min=600), NOW, 30, None)
    assert times.expires_at == NOW + 30  # Kong would cache it for 600 s, expired
    opaque = plan_lifetime(policy(cache_ttl=10, ttl_min=600), NOW, None, None)
    assert opaque.expires_at == NOW + 600


def test_exp_earlier_than_expires_in_wins() -> None:
    times = plan_lifetime(POLICY, NOW, 3600, NOW + 100)
    assert times.expires_at == NOW + 100


def test_already_expired_token_is_never_a_hit() -> None:
    times = plan_lifetime(POLICY, NOW, None, NOW - 5)
    assert times.refresh_at <= NOW and times.expires_at <= NOW


def test_resurrect_window_is_capped_by_validity() -> None:
    times = plan_lifetime(policy(ttl_max=60, resurrect=600), NOW, 300, None)
    assert times.expires_at == NOW + 60
    assert times.stale_until == NOW + 300  # the token itself dies at 300 s
    opaque = plan_lifetime(policy(cache_ttl=60, resurrect=30), NOW, None, None)
    assert opaque.stale_until == NOW + 90


# -- entries --------------------------------------------------------------------------------------


def entry(expires_in: float = 300, ttl: TtlPolicy = POLICY, now: float = NOW) -> Entry:
    return Entry(Token("t", None), b"Bearer t", (), plan_lifetime(ttl, now, expires_in, None))


def test_refresh_failed_serves_stale_and_schedules_a_retry() -> None:
    stale = entry(300, policy(ttl_max=60, resurrect=120))
    stale.refresh_failed(NOW + 61)
    assert stale.expires_at == NOW + 180  # expires_at + resurrect
    assert stale.refresh_at == NOW + 61 + REFRESH_RETRY_SECONDS


def test_refresh_failed_without_resurrect_keeps_the_expiry() -> None:
    current = entry(300)
    current.refresh_failed(NOW + 290)
    assert current.expires_at == NOW + 300
    assert current.refresh_at == NOW + 295


def test_kill() -> None:
    current = entry()
    current.kill()
    assert current.expires_at <= NOW and current.refresh_at <= NOW


# -- L1 and negative cache ------------------------------------------------------------------------


def test_l1_is_bounded_dropping_expired_then_oldest() -> None:
    cache = TokenCache(max_entries=5)  # 5 clients: 10 keys (an alias and a canonical key each)
    for index in range(5):
        cache.store((f"old{index}",), entry(10), NOW)  # these expire at NOW + 10
    for index in range(5):
        cache.store((f"live{index}",), entry(1000), NOW)
    cache.store(("new",), entry(1000), NOW + 20)
    assert not any(key.startswith("old") for key in cache.entries)
    assert "new" in cache.entries and len(cache.entries) == 6
    for index in range(20):
        cache.store((f"more{index}",), entry(1000), NOW + 20)
    assert len(cache.entries) <= 10
    assert "live0" not in cache.entries  # oldest first
    assert "more19" in cache.entries


def test_disabled_cache_stores_nothing() -> None:
    cache = TokenCache(enabled=False)
    cache.store(("k",), entry(), NOW)
    assert cache.entries == {}


def test_rejections_expire() -> None:
    cache = TokenCache()
    error = InvalidCredentials("nope")
    cache.reject(("k",), error, NOW + 5, NOW)
    assert cache.rejection("k", NOW + 4.9) is error
    assert cache.rejection("k", NOW + 5) is None
    assert "k" not in cache.rejections


def test_cache_key_has_kongs_shape() -> None:
    import base64
    import hashlib

    credentials = ClientCredentials("id", "secret")
    material = b"https://i#grant_type=client_credentials&id&secret&salt&openid"
    expected = base64.urlsafe_b64encode(hashlib.sha256(material).digest()).rstrip(b"=").decode()
    assert credentials_cache_key("https://i", credentials, "salt", "openid") == expected
    without = credentials_cache_key("https://i", credentials, None, None)
    assert without != expected and "secret" not in without


# -- single-flight --------------------------------------------------------------------------------


async def test_single_flight_one_fetch_for_many_waiters() -> None:
    flights: SingleFlight[str, str] = SingleFlight()
    calls = 0
    gate = asyncio.Event()

    async def fetch() -> str:
        nonlocal calls
        calls += 1
        await gate.wait()
        return "token"

    waiters = [asyncio.ensure_future(flights.run("k", fetch)) for _ in range(100)]
    await asyncio.sleep(0)
    gate.set()
    assert await asyncio.gather(*waiters) == ["token"] * 100
    assert calls == 1
    assert "k" not in flights


async def test_cancelled_waiter_does_not_cancel_the_fetch() -> None:
    flights: SingleFlight[str, str] = SingleFlight()
    gate = asyncio.Event()
    finished = False

    async def fetch() -> str:
        nonlocal finished
        await gate.wait()
        finished = True
        return "token"

    first = asyncio.ensure_future(flights.run("k", fetch))
    second = asyncio.ensure_future(flights.run("k", fetch))
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.sleep(0)
    gate.set()
    assert await second == "token"
    assert finished
    assert first.cancelled()


async def test_every_waiter_gets_the_same_exception() -> None:
    flights: SingleFlight[str, str] = SingleFlight()
    gate = asyncio.Event()
    error = IdpUnavailable("down")

    async def fetch() -> str:
        await gate.wait()
        raise error

    waiters = [asyncio.ensure_future(flights.run("k", fetch)) for _ in range(10)]
    await asyncio.sleep(0)
    gate.set()
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert all(result is error for result in results)


async def test_fetch_whose_waiters_all_left_is_not_reported_lost(caplog) -> None:
    flights: SingleFlight[str, str] = SingleFlight()

    async def fetch() -> str:
        await asyncio.sleep(0)
        raise IdpUnavailable("down")

    waiter = asyncio.ensure_future(flights.run("k", fetch))
    await asyncio.sleep(0)
    waiter.cancel()
    for _ in range(5):
        await asyncio.sleep(0)
    assert "never retrieved" not in caplog.text
