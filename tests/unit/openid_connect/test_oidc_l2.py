"""The shared token cache without Redis: sealing, the breaker, the fleet lock and the
authenticator's use of them, over aiocache's SimpleMemoryCache and a store that always fails."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import pytest
from aiocache import SimpleMemoryCache
from oidc_fakes import FakeClock, FakeHttp, FakeIdp, basic, config, eventually

from fastgw.plugins.openid_connect import ClientCredentialsAuthenticator, InvalidCredentials
from fastgw.plugins.openid_connect.l2 import (
    BREAKER_FAILURES,
    BREAKER_RETRY_SECONDS,
    AiocacheStore,
    Breaker,
    SharedRejection,
    SharedStore,
    SharedToken,
    SharedTokenCache,
)
from fastgw.plugins.openid_connect.schema import from_mapping
from fastgw.plugins.openid_connect.sealing import Sealer

SECRET = "a-secret-of-the-fleet"
SHARED = {"cluster_cache_strategy": "redis", "cluster_cache_secret": SECRET}
GOOD = basic("client-1", "secret-1")


class FailingStore:
    """A SharedStore whose every call fails, as a Redis that refuses connections."""

    def __init__(self) -> None:
        self.calls = 0

    async def get_many(self, keys: Sequence[str]) -> Sequence[bytes | None]:
        self.calls += 1
        raise ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        self.calls += 1
        raise ConnectionError("refused")

    async def put_new(self, key: str, value: bytes, ttl: float) -> bool:
        self.calls += 1
        raise ConnectionError("refused")

    async def delete_if(self, key: str, value: bytes) -> None:
        self.calls += 1
        raise ConnectionError("refused")

    async def close(self) -> None:
        pass


class CountingStore(AiocacheStore):
    """The in-memory store, counting reads: a waiter for the lock polls with reads."""

    def __init__(self) -> None:
        super().__init__(SimpleMemoryCache())
        self.reads = 0

    async def get_many(self, keys: Sequence[str]) -> Sequence[bytes | None]:
        self.reads += 1
        return await super().get_many(keys)


def memory() -> CountingStore:
    return CountingStore()


def cache(store: SharedStore, clock: FakeClock | None = None) -> SharedTokenCache:
    return SharedTokenCache(
        store, Sealer(SECRET), timeout=0.5, lock_lease=2.0, monotonic=clock or FakeClock()
    )


# -- sealing --------------------------------------------------------------------------------------


def test_a_sealed_value_opens_only_under_its_key_and_secret() -> None:
    sealer = Sealer(SECRET)
    slot, other = sealer.slot("client-a"), sealer.slot("client-b")
    sealed = sealer.seal(slot, b"the token")
    assert b"the token" not in sealed
    assert sealer.open(slot, sealed) == b"the token"
    assert sealer.open(other, sealed) is None  # moved to another client's key
    assert Sealer("another-secret-entirely").open(slot, sealed) is None
    flipped = sealed[:-1] + bytes([sealed[-1] ^ 1])
    assert sealer.open(slot, flipped) is None
    assert sealer.open(slot, b"\x02" + sealed[1:]) is None  # an unknown format
    assert sealer.open(slot, sealed[:20]) is None
    assert sealer.seal(slot, b"x") != sealer.seal(slot, b"x")  # a fresh nonce each time


def test_slots_are_keyed_hashes() -> None:
    first, second = Sealer(SECRET), Sealer("another-secret-entirely")
    assert first.slot("material") == Sealer(SECRET).slot("material")
    assert first.slot("material") != second.slot("material")
    assert "material" not in first.slot("material")


# -- the breaker ----------------------------------------------------------------------------------


def test_breaker_opens_after_failures_in_a_row_and_probes_once_per_interval() -> None:
    breaker = Breaker()
    for _ in range(BREAKER_FAILURES - 1):
        breaker.failed(0.0)
    assert breaker.allow(0.0) and not breaker.open
    breaker.failed(0.0)
    assert breaker.open and not breaker.allow(0.1)
    assert breaker.allow(BREAKER_RETRY_SECONDS)  # the probe
    assert not breaker.allow(BREAKER_RETRY_SECONDS + 0.1)  # only one per interval
    assert breaker.succeeded() is True and not breaker.open and breaker.allow(0.0)


async def test_a_failing_store_is_a_miss_counted_logged_once_then_skipped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="fastgw.oidc")
    store, clock = FailingStore(), FakeClock(0.0)
    shared = cache(store, clock)
    slot = shared.slot("k")
    for _ in range(10):
        assert await shared.load(slot) is None
        assert (await shared.claim(slot)).lease is None
    assert shared.stats.errors == BREAKER_FAILURES
    assert store.calls == BREAKER_FAILURES  # then the breaker skips Redis altogether
    assert shared.stats.skipped == 20 - BREAKER_FAILURES
    lines = [r for r in caplog.records if "token cache redis unavailable" in r.getMessage()]
    assert len(lines) == 1 and "Connection refused" in lines[0].getMessage()
    clock.advance(BREAKER_RETRY_SECONDS)
    assert await shared.load(slot) is None
    assert store.calls == BREAKER_FAILURES + 1  # the probe


# -- values and the lock --------------------------------------------------------------------------


async def test_values_round_trip_and_garbage_is_rejected() -> None:
    store = memory()
    shared = cache(store)
    slot = shared.slot("k")
    await shared.save_token(slot, SharedToken("tok", 100.0, 60.0), ttl=30)
    assert await shared.load(slot) == SharedToken("tok", 100.0, 60.0)
    await shared.save_rejection(slot, SharedRejection("invalid_client"), ttl=30)
    assert await shared.load(slot) == SharedRejection("invalid_client")
    await store.put(f"fastgw:oidc:{{{slot}}}", b"forged", 30)
    assert await shared.load(slot) is None
    assert shared.stats.rejected == 1 and shared.stats.hits == 2 and shared.stats.misses == 1
    await shared.save_token(slot, SharedToken("tok", 100.0, None), ttl=0)  # nothing left to keep
    assert shared.stats.writes == 2


async def test_the_lock_makes_others_wait_for_the_holders_entry() -> None:
    store = memory()
    holder, waiter = cache(store), cache(store)
    slot = holder.slot("k")
    claim = await holder.claim(slot)
    assert claim.lease is not None
    waiting = asyncio.ensure_future(waiter.claim(slot))
    await eventually(lambda: waiter.stats.lock_waits == 1)  # it found the lock taken
    polled = store.reads
    await eventually(lambda: store.reads > polled)  # and looked again, in vain
    assert not waiting.done()
    await holder.save_token(slot, SharedToken("tok", 1.0, 60.0), ttl=30)
    await holder.release(slot, claim.lease)
    assert (await waiting).found == SharedToken("tok", 1.0, 60.0)
    assert waiter.stats.lock_waits == 1


async def test_a_holder_that_fails_hands_the_lock_to_a_waiter() -> None:
    store = memory()
    holder, waiter = cache(store), cache(store)
    slot = holder.slot("k")
    claim = await holder.claim(slot)
    assert claim.lease is not None
    waiting = asyncio.ensure_future(waiter.claim(slot))
    await eventually(lambda: waiter.stats.lock_waits == 1)
    await waiter.release(slot, b"not the lease")  # only the holder's lease releases it
    polled = store.reads
    await eventually(lambda: store.reads > polled)  # the waiter looked again: still locked
    assert not waiting.done()
    await holder.release(slot, claim.lease)
    assert (await waiting).lease is not None


async def test_an_entry_written_just_before_the_lock_is_found_by_the_new_holder() -> None:
    store = memory()
    writer, late = cache(store), cache(store)
    slot = writer.slot("k")
    await writer.save_token(slot, SharedToken("tok", 1.0, 60.0), ttl=30)
    claim = await late.claim(slot)  # as if its miss came before the write
    assert claim.lease is None and claim.found == SharedToken("tok", 1.0, 60.0)
    assert (await late.claim(slot)).found is not None  # and the lock was not kept


# -- the authenticator ----------------------------------------------------------------------------


def lock_waits(members: list[ClientCredentialsAuthenticator]) -> int:
    return sum(member.shared.stats.lock_waits for member in members if member.shared)


def fleet(idp: FakeIdp, store: SharedStore, size: int) -> list[ClientCredentialsAuthenticator]:
    parsed = from_mapping(config(**SHARED))
    return [
        ClientCredentialsAuthenticator(
            parsed, idp.http, shared_store=store, clock=idp.clock, monotonic=idp.clock
        )
        for _ in range(size)
    ]


@pytest.fixture
def idp() -> FakeIdp:
    return FakeIdp(FakeHttp(), FakeClock())


async def test_concurrent_misses_in_several_processes_make_one_token_call(idp: FakeIdp) -> None:
    members = fleet(idp, memory(), 3)
    idp.gate = asyncio.Event()
    waiting = [asyncio.ensure_future(member.authenticate(GOOD)) for member in members]
    # one holds the lock and waits for the IdP, the other two wait for its entry
    await eventually(lambda: idp.token_calls == 1 and lock_waits(members) == 2)
    idp.gate.set()
    tokens = await asyncio.gather(*waiting)
    assert len({token.access_token for token in tokens}) == 1
    assert idp.counter == 1


async def test_a_rejection_is_shared(idp: FakeIdp) -> None:
    first, second = fleet(idp, memory(), 2)
    wrong = basic("client-1", "wrong")
    for member in (first, second):
        with pytest.raises(InvalidCredentials):
            await member.authenticate(wrong)
    assert idp.token_calls == 1


async def test_a_shared_token_failing_verification_is_not_used(idp: FakeIdp) -> None:
    from oidc_fakes import rsa_key

    store = memory()
    first, second = fleet(idp, store, 2)
    await first.authenticate(GOOD)
    rotated = rsa_key("rotated-kid")  # the IdP forgot the key that signed the shared token
    idp.key, idp.keys = rotated, [rotated]
    token = await second.authenticate(GOOD)
    assert idp.token_calls == 2 and token.claims["sub"] == "client-1"
    assert second.shared is not None and second.shared.stats.rejected == 1


async def test_without_a_secret_nothing_is_shared(idp: FakeIdp) -> None:
    parsed = from_mapping(config())
    auth = ClientCredentialsAuthenticator(parsed, idp.http, shared_store=memory())
    assert auth.shared is None
    names = {family.name for family in auth.metrics()}
    assert "fastgw_oidc_token_cache_lookups_total" in names
    assert not any(name.startswith("fastgw_oidc_token_cache_l2") for name in names)


async def test_refresh_ahead_takes_the_lock_so_one_process_refreshes_for_the_fleet(
    idp: FakeIdp,
) -> None:
    members = fleet(idp, memory(), 3)
    first = await members[0].authenticate(GOOD)
    for member in members[1:]:
        assert (await member.authenticate(GOOD)) == first  # from the shared cache
    assert idp.counter == 1
    idp.clock.advance(3600 - 30)  # inside the refresh margin everywhere at once
    idp.gate = asyncio.Event()
    for member in members:
        assert member.authenticate_cached(GOOD) == first  # serving while refreshing
    # one member's refresh holds the lock and waits for the IdP, the other two wait for it
    await eventually(lambda: idp.token_calls == 2 and lock_waits(members) == 2)
    idp.gate.set()

    def token_of(member: ClientCredentialsAuthenticator) -> str:
        token = member.authenticate_cached(GOOD)
        assert token is not None
        return token.access_token

    await eventually(lambda: all(token_of(member) != first.access_token for member in members))
    refreshed = {token_of(member) for member in members}
    assert len(refreshed) == 1 and first.access_token not in refreshed
    assert idp.counter == 2
    assert sum(member.shared.stats.lock_waits for member in members if member.shared) == 2


async def test_a_burst_of_calls_waits_for_a_connection_instead_of_failing() -> None:
    class SlowStore(FailingStore):
        """Answers every read after a moment, counting how many are in flight at once."""

        def __init__(self) -> None:
            super().__init__()
            self.in_flight = self.most = 0

        async def get_many(self, keys: Sequence[str]) -> Sequence[bytes | None]:
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
            await asyncio.sleep(0.01)
            self.in_flight -= 1
            return [None] * len(keys)

    store = SlowStore()
    shared = SharedTokenCache(store, Sealer(SECRET), timeout=1.0, lock_lease=2.0, max_connections=4)
    await asyncio.gather(*(shared.load(shared.slot(str(i))) for i in range(40)))
    assert store.most == 4 and shared.stats.misses == 40 and shared.stats.errors == 0
