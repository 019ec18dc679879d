"""Admission to the IdP (admission.py): the bound, the classes of work in priority order, round
robin over caller addresses, bounded queues, the one deadline, the known-good set; then the same
through the authenticator (refreshes, known clients, addresses, the deadline of a miss)."""

from __future__ import annotations

import asyncio

import pytest
from oidc_fakes import (
    DISCOVERY_URL,
    TOKEN_ENDPOINT,
    FakeClock,
    FakeHttp,
    FakeIdp,
    basic,
    json_response,
    make_authenticator,
    until,
)

from fastgw.plugins.openid_connect.admission import (
    KNOWN,
    NO_SOURCE,
    REFRESH,
    UNKNOWN,
    Admission,
    IdpCall,
    KnownGood,
    source_of,
)
from fastgw.plugins.openid_connect.credentials import ClientCredentials
from fastgw.plugins.openid_connect.errors import (
    IdpBusy,
    IdpTimeout,
    InvalidCredentials,
    TooManyWaiting,
)

LONG = 60.0  # a deadline no test reaches
GOOD = basic("client-1", "secret-1")


def call(kind: int, source: str = "192.0.2.1", timeout: float = LONG) -> IdpCall:
    return IdpCall.starting_now(kind, source, timeout)


class Grants:
    """Asks for slots in the background and records the order they are granted in."""

    def __init__(self, admission: Admission) -> None:
        self.admission = admission
        self.order: list[str] = []
        self.tasks: list[asyncio.Task[None]] = []

    def ask(self, name: str, kind: int, source: str = "192.0.2.1") -> asyncio.Task[None]:
        async def wait() -> None:
            await self.admission.acquire(call(kind, source))
            self.order.append(name)

        task = asyncio.ensure_future(wait())
        self.tasks.append(task)
        return task

    async def settle(self, waiting: int) -> None:
        """Until every asker is either granted or waiting (`waiting` of them)."""
        await until(lambda: self.admission.in_flight + waiting_count(self.admission) >= waiting)


def waiting_count(admission: Admission) -> int:
    waiting = admission.status()["waiting"]
    assert isinstance(waiting, dict)
    return sum(waiting.values())


def test_sources_are_addresses_and_ipv6_subscribers() -> None:
    assert source_of("203.0.113.7") == "203.0.113.7"
    assert source_of("::ffff:203.0.113.7") == "203.0.113.7"
    # one /64 is one caller, however many addresses it uses
    assert source_of("2001:db8:1:2::1") == source_of("2001:db8:1:2:ffff::9")
    assert source_of("2001:db8:1:2::1") != source_of("2001:db8:1:3::1")
    assert source_of("fe80::1%eth0") == source_of("fe80::2")
    assert source_of("") == "" and source_of("not an address:") == "not an address:"


async def test_unknown_work_holds_half_the_slots_known_three_quarters_refresh_all() -> None:
    admission = Admission(slots=8)
    for _ in range(4):
        await admission.acquire(call(UNKNOWN))
    grants = Grants(admission)
    grants.ask("unknown", UNKNOWN)
    await grants.settle(5)
    assert grants.order == [] and admission.in_flight == 4  # unknown's half is taken
    for _ in range(2):
        await admission.acquire(call(KNOWN))  # known + unknown up to three quarters
    grants.ask("known", KNOWN)
    await grants.settle(8)
    assert grants.order == [] and admission.in_flight == 6
    for _ in range(2):
        await admission.acquire(call(REFRESH, NO_SOURCE))  # refreshes take what is left
    assert admission.in_flight == 8
    admission.release(REFRESH)  # the last quarter is kept for refreshes: no one else takes it
    assert admission.in_flight == 7
    await admission.acquire(call(REFRESH, NO_SOURCE))
    admission.release(UNKNOWN)  # below three quarters again: known goes first
    await until(lambda: grants.order == ["known"])
    admission.release(KNOWN)  # unknown below its half, and the sum below three quarters
    await until(lambda: grants.order == ["known", "unknown"])
    assert admission.in_flight == 8


async def test_a_freed_slot_goes_to_refresh_then_known_then_unknown() -> None:
    admission = Admission(slots=4)
    for _ in range(2):
        await admission.acquire(call(UNKNOWN))
    for _ in range(2):
        await admission.acquire(call(REFRESH, NO_SOURCE))
    grants = Grants(admission)
    grants.ask("unknown", UNKNOWN)
    grants.ask("known", KNOWN)
    grants.ask("refresh", REFRESH, NO_SOURCE)
    await grants.settle(7)
    admission.release(REFRESH)
    await until(lambda: grants.order == ["refresh"])
    admission.release(REFRESH)
    await until(lambda: grants.order == ["refresh", "known"])
    admission.release(UNKNOWN)
    await until(lambda: grants.order == ["refresh", "known", "unknown"])


async def test_each_address_gets_its_turn_whatever_another_has_queued() -> None:
    admission = Admission(slots=2)  # one slot for unknown work
    await admission.acquire(call(UNKNOWN, "198.51.100.1"))
    grants = Grants(admission)
    for index in range(5):
        grants.ask(f"flood-{index}", UNKNOWN, "198.51.100.1")
    grants.ask("other", UNKNOWN, "203.0.113.9")
    await grants.settle(7)
    for expected in (["flood-0"], ["flood-0", "other"], ["flood-0", "other", "flood-1"]):
        admission.release(UNKNOWN)
        await until(lambda expected=expected: grants.order == expected)


async def test_full_queues_answer_at_once() -> None:
    admission = Admission(slots=4, queue_limit=4, source_limit=2)
    for _ in range(2):  # unknown work's half
        await admission.acquire(call(UNKNOWN, "198.51.100.1"))
    grants = Grants(admission)
    grants.ask("a1", UNKNOWN, "198.51.100.1")
    grants.ask("a2", UNKNOWN, "198.51.100.1")
    await grants.settle(4)
    with pytest.raises(TooManyWaiting) as limited:
        await admission.acquire(call(UNKNOWN, "198.51.100.1"))
    assert limited.value.status == 429
    grants.ask("b1", UNKNOWN, "203.0.113.1")
    grants.ask("c1", UNKNOWN, "203.0.113.2")
    await grants.settle(6)
    with pytest.raises(IdpBusy) as busy:
        await admission.acquire(call(UNKNOWN, "203.0.113.3"))
    assert busy.value.status == 503 and not isinstance(busy.value, TooManyWaiting)
    assert admission.stats.source_limited[UNKNOWN] == 1 and admission.stats.busy[UNKNOWN] == 1
    await admission.acquire(call(KNOWN))  # another class has its own queue (and a slot here)
    for task in grants.tasks:
        task.cancel()
    await asyncio.gather(*grants.tasks, return_exceptions=True)
    assert waiting_count(admission) == 0


async def test_a_waiter_gives_up_at_the_deadline_and_leaves_the_queue() -> None:
    admission = Admission(slots=2)
    await admission.acquire(call(UNKNOWN))
    with pytest.raises(IdpTimeout) as timed_out:
        await admission.acquire(call(UNKNOWN, timeout=0.01))
    assert timed_out.value.status == 504
    assert timed_out.value.reason == "no identity provider call slot free within 0.01 s"
    assert waiting_count(admission) == 0 and admission.stats.timed_out[UNKNOWN] == 1
    admission.release(UNKNOWN)
    await admission.acquire(call(UNKNOWN))  # the slot went nowhere else


async def test_a_slot_granted_to_a_waiter_that_left_goes_to_the_next() -> None:
    admission = Admission(slots=2)
    await admission.acquire(call(UNKNOWN))
    grants = Grants(admission)
    leaving = grants.ask("leaving", UNKNOWN)
    grants.ask("next", UNKNOWN, "203.0.113.5")
    await grants.settle(3)
    admission.release(UNKNOWN)  # granted to `leaving`, which is cancelled before it resumes
    leaving.cancel()
    await until(lambda: grants.order == ["next"])
    assert admission.in_flight == 1 and waiting_count(admission) == 0


async def test_cancelled_waiters_leave_their_queue() -> None:
    admission = Admission(slots=2)
    await admission.acquire(call(UNKNOWN))
    grants = Grants(admission)
    tasks = [grants.ask(f"w{index}", UNKNOWN) for index in range(3)]
    await grants.settle(4)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert waiting_count(admission) == 0 and admission.status()["addresses_waiting"] == 0


def test_known_good_is_bounded_and_forgets_the_oldest() -> None:
    known = KnownGood(capacity=3)
    for key in ("a", "b", "c"):
        known.add(key)
    known.add("a")  # accepted again: now the youngest
    known.add("d")
    assert "b" not in known and {"a", "c", "d"} == {key for key in "abcd" if key in known}
    assert len(known) == 3
    known.discard("c")
    known.discard("never-there")
    assert len(known) == 2


async def test_status_and_metrics_report_use_and_capacity() -> None:
    admission = Admission(slots=4, queue_limit=8)
    await admission.acquire(call(KNOWN))
    status = admission.status()
    assert status["slots"] == 4 and status["in_flight"] == 1
    assert status["queue_capacity"] == {"refresh": 8, "known": 8, "unknown": 8}
    families = {family.name: family for family in admission.metric_families("r1")}
    assert families["fastgw_oidc_idp_slots"].samples == {("r1",): 4}
    assert families["fastgw_oidc_idp_in_flight"].samples[("r1", "known")] == 1
    admitted = families["fastgw_oidc_idp_admissions_total"].samples
    assert admitted[("r1", "known", "admitted")] == 1
    assert admitted[("r1", "unknown", "busy")] == 0


async def test_a_waiter_whose_turn_comes_too_late_for_an_answer_gives_up() -> None:
    admission = Admission(slots=4)
    for _ in range(10):
        admission.answered(1.0)  # the IdP takes about a second
    with pytest.raises(IdpTimeout):
        await admission.acquire(call(UNKNOWN, timeout=0.5))  # it would only time out
    assert admission.in_flight == 0 and admission.stats.timed_out[UNKNOWN] == 1
    await admission.acquire(call(UNKNOWN, timeout=5.0))
    assert admission.in_flight == 1


# -- through the authenticator --------------------------------------------------------------------


@pytest.fixture
def idp() -> FakeIdp:
    return FakeIdp(FakeHttp(), FakeClock())


def made_up(index: int) -> bytes:
    return basic(f"made-up-{index}", "guessed")


def token_calls_of(idp: FakeIdp) -> list[str]:
    """The client ids of the token requests, in the order the IdP got them."""
    return [idp.credentials_of(c)[0] for c in idp.http.calls if c.url == TOKEN_ENDPOINT]


async def test_a_refresh_goes_ahead_of_every_waiting_unknown_id(idp: FakeIdp) -> None:
    admission = Admission(slots=4)  # two for unknown ids, one more for known clients
    auth, spawner = await make_authenticator(idp, admission)
    first = await auth.authenticate(GOOD)
    idp.gate = asyncio.Event()
    flood = [asyncio.ensure_future(auth.authenticate(made_up(i))) for i in range(10)]
    await until(lambda: waiting_count(admission) == 8 and admission.in_flight == 2)
    idp.clock.advance(3600 - 30)  # the cached token is due for refresh
    assert auth.authenticate_cached(GOOD) == first  # served, and one refresh started
    await until(lambda: len(token_calls_of(idp)) == 4)
    assert token_calls_of(idp)[-1] == "client-1"  # ahead of the 8 waiting
    assert waiting_count(admission) == 8
    idp.gate.set()
    await spawner.drain()
    refreshed = auth.authenticate_cached(GOOD)
    assert refreshed is not None and refreshed.access_token != first.access_token
    assert all(isinstance(r, InvalidCredentials) for r in await gather_quietly(flood))


async def test_known_credentials_go_ahead_of_never_seen_ones(idp: FakeIdp) -> None:
    admission = Admission(slots=4)
    auth, _ = await make_authenticator(idp, admission, cache_ttl_resurrect=0)
    await auth.authenticate(GOOD)
    key = auth.credentials_key(ClientCredentials("client-1", "secret-1"))
    assert key in auth.known
    idp.clock.advance(7200)  # its token is gone; the credentials are still known-good
    idp.gate = asyncio.Event()
    flood = [asyncio.ensure_future(auth.authenticate(made_up(i))) for i in range(6)]
    await until(lambda: waiting_count(admission) == 4)
    known = asyncio.ensure_future(auth.authenticate(GOOD))
    await until(lambda: token_calls_of(idp)[-1:] == ["client-1"])  # not behind the 4
    idp.gate.set()
    assert (await known).claims["sub"] == "client-1"
    assert all(isinstance(r, InvalidCredentials) for r in await gather_quietly(flood))
    assert len(auth.known) == 1  # rejected ids are never remembered as good


async def test_unknown_ids_take_turns_by_caller_address(idp: FakeIdp) -> None:
    admission = Admission(slots=2)  # one slot for unknown ids
    auth, _ = await make_authenticator(idp, admission)
    idp.gate = asyncio.Event()
    flood = [
        asyncio.ensure_future(auth.authenticate(made_up(i), client_address="198.51.100.7"))
        for i in range(5)
    ]
    await until(lambda: waiting_count(admission) == 4)
    other = asyncio.ensure_future(auth.authenticate(GOOD, client_address="203.0.113.20"))
    await until(lambda: waiting_count(admission) == 5)
    idp.gate.set()
    assert (await other).claims["sub"] == "client-1"
    await gather_quietly(flood)
    # the other address waited one turn of the flooding one, not for its whole queue
    assert token_calls_of(idp)[:4] == ["made-up-0", "made-up-1", "client-1", "made-up-2"]


async def test_the_call_gets_what_is_left_of_the_misss_deadline(idp: FakeIdp) -> None:
    admission = Admission(slots=2)
    auth, _ = await make_authenticator(idp, admission, timeout=2000)
    idp.gate = asyncio.Event()
    first = asyncio.ensure_future(auth.authenticate(GOOD))
    second = asyncio.ensure_future(auth.authenticate(basic("client-2", "secret-2")))
    await until(lambda: waiting_count(admission) == 1)
    idp.gate.set()
    await asyncio.gather(first, second)
    calls = [c for c in idp.http.calls if c.url == TOKEN_ENDPOINT]
    assert calls[0].timeout <= 2.0
    assert calls[1].timeout < calls[0].timeout  # it waited for its slot within the same 2 s


async def test_the_deadline_bounds_the_wait_for_discovery(idp: FakeIdp) -> None:
    gate = asyncio.Event()

    async def hanging(_call: object) -> object:
        await gate.wait()
        return json_response({})

    idp.http.route(DISCOVERY_URL, hanging)
    auth, _ = await make_authenticator(idp, timeout=50)
    with pytest.raises(IdpTimeout) as timed_out:
        await auth.authenticate(GOOD)
    assert timed_out.value.reason == "discovery did not answer within 0.05 s"
    gate.set()


async def gather_quietly(tasks: list[asyncio.Task[object]]) -> list[object]:
    return await asyncio.gather(*tasks, return_exceptions=True)
