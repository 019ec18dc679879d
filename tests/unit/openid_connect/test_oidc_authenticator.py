"""The embedding API and cache policy end to end, against a fake IdP and a fake clock."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiocache import SimpleMemoryCache
from oidc_fakes import (
    ISSUER,
    TOKEN_ENDPOINT,
    FakeClock,
    FakeHttp,
    FakeIdp,
    FakeResponse,
    basic,
    config,
    json_response,
    make_authenticator,
    until,
)

from fastgw.errors import ConfigError
from fastgw.http.client import ConnectError, RequestTimeout
from fastgw.plugins.openid_connect import (
    ClientCredentialsAuthenticator,
    IdpTimeout,
    IdpUnavailable,
    InsufficientScope,
    InvalidCredentials,
    Token,
)
from fastgw.plugins.openid_connect.admission import Admission
from fastgw.plugins.openid_connect.credentials import ClientCredentials
from fastgw.plugins.openid_connect.l2 import AiocacheStore
from fastgw.plugins.openid_connect.schema import from_mapping

GOOD = basic("client-1", "secret-1")
WRONG = basic("client-1", "wrong")


@pytest.fixture
def idp() -> FakeIdp:
    return FakeIdp(FakeHttp(), FakeClock())


async def test_first_call_fetches_then_l1_serves(idp: FakeIdp) -> None:
    auth, _ = await make_authenticator(idp)
    assert auth.authenticate_cached(GOOD) is None
    token = await auth.authenticate(GOOD)
    assert isinstance(token, Token)
    assert token.claims["sub"] == "client-1"
    assert token.expires_at == idp.clock() + 3600
    assert auth.authenticate_cached(GOOD.decode()) == token
    assert await auth.authenticate(GOOD) == token
    assert idp.token_calls == 1


async def test_same_credentials_another_way_share_the_token(idp: FakeIdp) -> None:
    auth, _ = await make_authenticator(idp)
    by_header = await auth.authenticate(GOOD)
    by_pair = await auth.authenticate_client("client-1", "secret-1")
    lower_scheme = await auth.authenticate(b"basic " + GOOD[6:])
    assert by_header == by_pair == lower_scheme
    assert idp.token_calls == 1


async def test_no_secret_in_any_cache_key(idp: FakeIdp) -> None:
    auth, _ = await make_authenticator(idp)
    await auth.authenticate(GOOD)
    with pytest.raises(InvalidCredentials):
        await auth.authenticate(WRONG)
    for key in (*auth.cache.entries, *auth.cache.rejections):
        text = key if isinstance(key, str) else key.hex()
        assert "secret-1" not in text and "wrong" not in text
        assert GOOD not in (key if isinstance(key, bytes) else key.encode())


async def test_refresh_ahead_starts_exactly_one_refresh(idp: FakeIdp) -> None:
    auth, spawner = await make_authenticator(idp)
    first = await auth.authenticate(GOOD)
    idp.clock.advance(3600 - 30)  # inside the 60 s refresh margin
    for _ in range(10):
        assert auth.authenticate_cached(GOOD) == first  # keeps serving meanwhile
    assert len(spawner.tasks) == 1
    await spawner.drain()
    assert idp.token_calls == 2
    refreshed = auth.authenticate_cached(GOOD)
    assert refreshed is not None and refreshed.access_token != first.access_token
    assert refreshed.expires_at == idp.clock() + 3600


async def test_refresh_updates_every_alias(idp: FakeIdp) -> None:
    auth, spawner = await make_authenticator(idp)
    await auth.authenticate(GOOD)
    idp.clock.advance(3590)
    auth.authenticate_cached(GOOD)
    await spawner.drain()
    by_pair = await auth.authenticate_client("client-1", "secret-1")
    assert by_pair == auth.authenticate_cached(GOOD)
    assert idp.token_calls == 2


async def test_expired_entry_is_fetched_in_the_foreground(idp: FakeIdp) -> None:
    auth, spawner = await make_authenticator(idp)
    first = await auth.authenticate(GOOD)
    idp.clock.advance(3601)
    assert auth.authenticate_cached(GOOD) is None
    second = await auth.authenticate(GOOD)
    assert second.access_token != first.access_token
    assert spawner.tasks == []


async def test_negative_cache(idp: FakeIdp) -> None:
    auth, _ = await make_authenticator(idp)
    with pytest.raises(InvalidCredentials, match="invalid_client"):
        await auth.authenticate(WRONG)
    with pytest.raises(InvalidCredentials, match="invalid_client"):
        await auth.authenticate(WRONG)
    assert idp.token_calls == 1
    assert (await auth.authenticate(GOOD)).claims["sub"] == "client-1"  # other secret unaffected
    idp.clock.advance(5)
    with pytest.raises(InvalidCredentials):
        await auth.authenticate(WRONG)
    assert idp.token_calls == 3


async def test_negative_cache_off(idp: FakeIdp) -> None:
    auth, _ = await make_authenticator(idp, cache_ttl_neg=0)
    for _ in range(3):
        with pytest.raises(InvalidCredentials):
            await auth.authenticate(WRONG)
    assert idp.token_calls == 3


async def test_malformed_header_never_reaches_the_idp(idp: FakeIdp) -> None:
    auth, _ = await make_authenticator(idp)
    with pytest.raises(InvalidCredentials, match="bad base64"):
        await auth.authenticate("Basic %%%")
    assert idp.token_calls == 0


async def test_stale_while_refresh_fails_then_recovers(idp: FakeIdp) -> None:
    auth, spawner = await make_authenticator(idp)
    first = await auth.authenticate(GOOD)
    idp.token_status = 503
    idp.clock.advance(3560)
    assert auth.authenticate_cached(GOOD) == first
    await spawner.drain()
    assert auth.authenticate_cached(GOOD) == first  # refresh failed: still served
    assert spawner.tasks == []  # and not retried on every request
    idp.clock.advance(6)
    auth.authenticate_cached(GOOD)
    assert len(spawner.tasks) == 1  # retried after REFRESH_RETRY_SECONDS
    idp.token_status = 200
    await spawner.drain()
    assert auth.authenticate_cached(GOOD).access_token != first.access_token


async def test_idp_down_after_expiry_without_resurrect(idp: FakeIdp) -> None:
    auth, _ = await make_authenticator(idp)
    await auth.authenticate(GOOD)
    idp.clock.advance(3600)
    idp.http.route(TOKEN_ENDPOINT, ConnectError("refused"))
    with pytest.raises(IdpUnavailable, match="unreachable"):
        await auth.authenticate(GOOD)


async def test_resurrect_serves_a_still_valid_token_when_the_idp_is_down(idp: FakeIdp) -> None:
    auth, _ = await make_authenticator(idp, cache_ttl_max=600, cache_ttl_resurrect=300)
    first = await auth.authenticate(GOOD)
    idp.clock.advance(600)  # cache TTL over, token itself valid for 3000 s more
    idp.token_status = 502
    assert await auth.authenticate(GOOD) == first
    assert idp.token_calls == 2
    assert auth.authenticate_cached(GOOD) == first  # served synchronously again
    idp.clock.advance(301)  # beyond the resurrect window
    with pytest.raises(IdpUnavailable):
        await auth.authenticate(GOOD)


async def test_resurrect_never_serves_an_expired_token(idp: FakeIdp) -> None:
    auth, _ = await make_authenticator(idp, cache_ttl_resurrect=3600)
    await auth.authenticate(GOOD)
    idp.clock.advance(3600)
    idp.token_status = 500
    with pytest.raises(IdpUnavailable):
        await auth.authenticate(GOOD)


async def test_rejected_refresh_stops_serving(idp: FakeIdp) -> None:
    auth, spawner = await make_authenticator(idp)
    await auth.authenticate(GOOD)
    idp.clients["client-1"] = "rotated"
    idp.clock.advance(3590)
    assert auth.authenticate_cached(GOOD) is not None
    await spawner.drain()
    assert auth.authenticate_cached(GOOD) is None
    with pytest.raises(InvalidCredentials):
        await auth.authenticate(GOOD)
    assert idp.token_calls == 2  # negative-cached


async def test_idp_timeout(idp: FakeIdp) -> None:
    idp.http.route(TOKEN_ENDPOINT, RequestTimeout("slow"))
    auth, _ = await make_authenticator(idp)
    with pytest.raises(IdpTimeout):
        await auth.authenticate(GOOD)


@pytest.mark.parametrize(
    ("answer", "error", "reason"),
    [
        (FakeResponse(200, b"<html>"), IdpUnavailable, "without JSON"),
        (json_response({"token_type": "Bearer"}), IdpUnavailable, "without an access_token"),
        (json_response({"access_token": "a b"}), IdpUnavailable, "unfit"),
        (json_response({"error": "invalid_scope"}, 400), InsufficientScope, "invalid_scope"),
        (json_response({"error": "invalid_target"}, 400), InsufficientScope, "invalid_target"),
        (json_response({"error": "unauthorized_client"}, 400), InvalidCredentials, "unauth"),
        (json_response({"error": "invalid_request"}, 400), IdpUnavailable, "HTTP 400"),
        (FakeResponse(401, b""), InvalidCredentials, "HTTP 401"),
        (FakeResponse(404, b""), IdpUnavailable, "HTTP 404"),
        (json_response({"error": "temporarily_unavailable"}, 503), IdpUnavailable, "503"),
    ],
)
async def test_token_endpoint_answers(idp: FakeIdp, answer, error, reason) -> None:
    idp.http.route(TOKEN_ENDPOINT, answer)
    auth, _ = await make_authenticator(idp)
    with pytest.raises(error, match=reason):
        await auth.authenticate(GOOD)


async def test_opaque_token_uses_expires_in(idp: FakeIdp) -> None:
    idp.http.route(TOKEN_ENDPOINT, json_response({"access_token": "opaque-1", "expires_in": "120"}))
    auth, _ = await make_authenticator(idp)
    token = await auth.authenticate(GOOD)
    assert token.access_token == "opaque-1" and token.claims == {}
    assert token.expires_at == idp.clock() + 120


async def test_scopes_required_maps_to_insufficient_scope(idp: FakeIdp) -> None:
    auth, _ = await make_authenticator(idp, scopes_required=["admin"])
    with pytest.raises(InsufficientScope):
        await auth.authenticate(GOOD)
    with pytest.raises(InsufficientScope):
        await auth.authenticate(GOOD)
    assert idp.token_calls == 1


async def test_hundred_concurrent_misses_make_one_idp_call(idp: FakeIdp) -> None:
    idp.gate = asyncio.Event()
    auth, _ = await make_authenticator(idp)
    waiters = [asyncio.ensure_future(auth.authenticate(GOOD)) for _ in range(100)]
    await until(lambda: idp.token_calls == 1 and auth._flights.joins == 99)
    idp.gate.set()
    tokens = await asyncio.gather(*waiters)
    assert len({token.access_token for token in tokens}) == 1
    assert idp.token_calls == 1


async def test_cancelled_first_caller_does_not_cancel_the_fetch(idp: FakeIdp) -> None:
    idp.gate = asyncio.Event()
    auth, _ = await make_authenticator(idp)
    first = asyncio.ensure_future(auth.authenticate(GOOD))
    second = asyncio.ensure_future(auth.authenticate(GOOD))
    await until(lambda: idp.token_calls == 1 and auth._flights.joins == 1)
    first.cancel()
    idp.gate.set()
    token = await second
    assert first.cancelled()
    assert token.claims["sub"] == "client-1"
    assert idp.token_calls == 1


async def test_all_waiters_get_the_same_failure(idp: FakeIdp) -> None:
    idp.gate = asyncio.Event()
    idp.token_status = 500
    auth, _ = await make_authenticator(idp)
    waiters = [asyncio.ensure_future(auth.authenticate(GOOD)) for _ in range(10)]
    await until(lambda: idp.token_calls == 1 and auth._flights.joins == 9)
    idp.gate.set()
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert all(isinstance(result, IdpUnavailable) for result in results)
    assert len({id(result) for result in results}) == 1
    assert idp.token_calls == 1


async def test_idp_concurrency_is_bounded(idp: FakeIdp) -> None:
    """Never-seen clients hold at most half of the IdP slots; the rest wait their turn."""
    idp.gate = asyncio.Event()
    idp.clients.update({f"c{index}": "s" for index in range(6)})
    admission = Admission(slots=4)  # two for unknown clients
    auth, _ = await make_authenticator(idp, admission)
    waiters = [
        asyncio.ensure_future(auth.authenticate(basic(f"c{index}", "s"))) for index in range(6)
    ]
    await until(lambda: admission.status()["waiting"] == {"refresh": 0, "known": 0, "unknown": 4})
    assert idp.token_calls == 2 and admission.in_flight == 2
    idp.gate.set()
    await asyncio.gather(*waiters)
    assert idp.token_calls == 6 and admission.in_flight == 0


SHARED = {"cluster_cache_strategy": "redis", "cluster_cache_secret": "a-secret-of-the-fleet"}


def shared_store() -> AiocacheStore:
    return AiocacheStore(SimpleMemoryCache())


async def test_l2_shares_tokens_between_processes(idp: FakeIdp) -> None:
    store = shared_store()
    parsed = from_mapping(config(**SHARED))
    first, second = (
        ClientCredentialsAuthenticator(
            parsed, idp.http, shared_store=store, clock=idp.clock, monotonic=idp.clock
        )
        for _ in range(2)
    )
    token = await first.authenticate(GOOD)
    assert (await second.authenticate(GOOD)).access_token == token.access_token
    assert idp.token_calls == 1
    assert second.shared is not None and second.shared.stats.hits == 1


async def test_l2_token_due_for_refresh_is_not_taken(idp: FakeIdp) -> None:
    auth, spawner = await make_authenticator(idp, **SHARED)
    auth = ClientCredentialsAuthenticator(
        auth.config, idp.http, shared_store=shared_store(), spawn=spawner, clock=idp.clock
    )
    first = await auth.authenticate(GOOD)
    idp.clock.advance(3590)
    auth.authenticate_cached(GOOD)
    await spawner.drain()
    assert idp.token_calls == 2
    assert auth.authenticate_cached(GOOD).access_token != first.access_token


async def test_cache_tokens_off_asks_every_time(idp: FakeIdp) -> None:
    auth, _ = await make_authenticator(idp, cache_tokens=False)
    await auth.authenticate(GOOD)
    await auth.authenticate(GOOD)
    assert idp.token_calls == 2 and auth.cache.entries == {}


async def test_token_endpoint_override_skips_discovery_for_the_endpoint(idp: FakeIdp) -> None:
    other = f"{ISSUER}/other-token"
    idp.http.route(other, idp.token)
    auth, _ = await make_authenticator(idp, token_endpoint=other)
    await auth.authenticate(GOOD)
    assert idp.http.count(other) == 1 and idp.token_calls == 0


async def test_unknown_kid_refetches_keys(idp: FakeIdp) -> None:
    from oidc_fakes import rsa_key

    auth, _ = await make_authenticator(idp, rediscovery_lifetime=0)
    await auth.authenticate(GOOD)
    rotated = rsa_key("rotated-kid")
    idp.key, idp.keys = rotated, [rotated]
    token = await auth.authenticate(basic("client-2", "secret-2"))
    assert token.claims["sub"] == "client-2"


async def test_discovery_down_means_idp_unavailable_not_the_client(idp: FakeIdp) -> None:
    from oidc_fakes import DISCOVERY_URL

    idp.http.route(DISCOVERY_URL, ConnectError("refused"))
    auth, _ = await make_authenticator(idp)
    with pytest.raises(IdpUnavailable):
        await auth.authenticate(GOOD)


async def test_start_returns_even_when_the_idp_is_down(idp: FakeIdp) -> None:
    from oidc_fakes import DISCOVERY_URL

    idp.http.route(DISCOVERY_URL, ConnectError("refused"))
    auth, _ = await make_authenticator(idp)
    await asyncio.wait_for(auth.start(), 1)
    discovery = auth._discovery_task
    await until(lambda: idp.http.count(DISCOVERY_URL) == 1)
    # it tried, failed, and keeps trying in the background
    assert idp.http.count(DISCOVERY_URL) == 1
    assert discovery is not None and not discovery.done()
    # meanwhile a request is answered at once, blaming the IdP, without a token request
    with pytest.raises(IdpUnavailable):
        await asyncio.wait_for(auth.authenticate(GOOD), 1)
    assert idp.token_calls == 0
    await auth.close()
    await asyncio.sleep(0)
    assert discovery.cancelled()


async def test_from_config_validates_and_owns_its_client() -> None:
    with pytest.raises(ConfigError):
        ClientCredentialsAuthenticator.from_config({"issuer": "nope"})
    auth = ClientCredentialsAuthenticator.from_config(config())
    from fastgw.http.client import HttpClient

    assert isinstance(auth._http, HttpClient)
    await auth.close()
    with pytest.raises(ConnectError):
        await auth._http.request("GET", "http://127.0.0.1:9/")


async def test_from_config_accepts_parsed_config(idp: FakeIdp) -> None:
    parsed = from_mapping(config())
    auth = ClientCredentialsAuthenticator.from_config(parsed, idp.http)
    assert auth.config is parsed
    await auth.close()
    assert idp.http.closed is False  # a client it was given is not its to close


async def test_request_between_flight_end_and_waiter_resumption_fetches_nothing(
    idp: FakeIdp,
) -> None:
    """The flight's task completes in one loop pass; its waiters resume two passes later (the
    done callbacks run first, then the woken waiters). A request whose task first runs in
    between must find the flight's outcome in the L1, not start a second token request."""
    auth, _ = await make_authenticator(idp)
    await auth.authenticate(basic("client-2", "secret-2"))  # discovery and keys are ready
    loop = asyncio.get_running_loop()
    idp.gate = asyncio.Event()
    first = asyncio.ensure_future(auth.authenticate(GOOD))
    while auth.credentials_key(ClientCredentials("client-1", "secret-1")) not in auth._flights:
        await asyncio.sleep(0)
    (flight,) = auth._flights._tasks.values()
    late: list[asyncio.Task[Token]] = []

    def arrive() -> None:
        # runs in the pass where the flight completed, right after its last step: the task
        # created here takes its first step together with the flight's done callbacks,
        # before the first caller has resumed
        assert flight.done()
        late.append(loop.create_task(auth.authenticate(GOOD)))

    idp.gate.set()  # wakes the flight: its last step is queued before `arrive`
    loop.call_soon(arrive)
    token = await first
    assert late and (await late[0]) == token
    assert idp.counter == 2  # client-2 once, client-1 once


async def test_the_flight_publishes_rejections_and_stale_entries_before_it_ends(
    idp: FakeIdp,
) -> None:
    """What a waiter would have stored after resuming is in the L1 when the flight's task is
    done: the negative entry for a rejection, the stale entry when the IdP fails."""
    auth, _ = await make_authenticator(idp, cache_ttl_max=600, cache_ttl_resurrect=60)
    seen: list[tuple[bool, bool]] = []

    def watch(key: str) -> None:
        def on_done(_task: asyncio.Task[Any]) -> None:
            now = idp.clock()
            entry = auth.cache.entries.get(key)
            servable = entry is not None and now < entry.expires_at
            seen.append((auth.cache.rejection(key, now) is not None, servable))

        auth._flights._tasks[key].add_done_callback(on_done)

    wrong_key = auth.credentials_key(ClientCredentials("client-1", "wrong"))
    waiter = asyncio.ensure_future(auth.authenticate(WRONG))
    while wrong_key not in auth._flights:
        await asyncio.sleep(0)
    watch(wrong_key)
    with pytest.raises(InvalidCredentials):
        await waiter
    good_key = auth.credentials_key(ClientCredentials("client-1", "secret-1"))
    await auth.authenticate(GOOD)
    idp.clock.advance(610)  # past the cache TTL, inside cache_ttl_resurrect
    idp.token_status = 503
    waiter = asyncio.ensure_future(auth.authenticate(GOOD))
    while good_key not in auth._flights:
        await asyncio.sleep(0)
    watch(good_key)
    assert (await waiter).claims["sub"] == "client-1"
    assert seen == [(True, False), (False, True)]
