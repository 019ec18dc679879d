"""The openid-connect access step over real exchanges: upstream headers and answers."""

from __future__ import annotations

import asyncio
import time

import jwt
import orjson
import pytest
from oidc_fakes import (
    TOKEN_ENDPOINT,
    Connection,
    FakeClock,
    FakeHttp,
    FakeIdp,
    answer_json,
    basic,
    config,
    forwarded_body,
    make_full_plugin,
    make_plugin,
    request_context,
    response_header,
    run_access,
    status_of,
    until,
)

from fastgw.config.schema import Reader
from fastgw.http.client import ConnectError, RequestTimeout
from fastgw.http.exchange import Exchange
from fastgw.plugins.building import PluginRuntime
from fastgw.plugins.openid_connect import SPEC, OpenIdConnect
from fastgw.plugins.openid_connect.admission import Admission
from fastgw.plugins.openid_connect.answers import TOO_MANY_WAITING_MESSAGE

GOOD = basic("client-1", "secret-1")
JSON_TYPE = b"application/json; charset=utf-8"


@pytest.fixture
def idp() -> FakeIdp:
    return FakeIdp(FakeHttp(), FakeClock())


def request(authorization: bytes | None = GOOD, **options) -> Exchange:
    headers = [(b"authorization", authorization)] if authorization is not None else []
    headers += options.pop("headers", [])
    return request_context(headers, **options)


async def test_miss_then_synchronous_hit(idp: FakeIdp) -> None:
    plugin, _, _ = await make_plugin(idp)
    first = request()
    assert await run_access(plugin, first) is False  # a miss goes async
    bearer = first.get_header(b"authorization")
    assert bearer is not None and bearer.startswith(b"Bearer ey")
    hit = request()
    assert plugin.access(hit) is None  # a hit returns synchronously
    assert hit.get_header(b"authorization") == bearer
    assert not hit.responded
    assert [name for name, _ in hit.headers].count(b"authorization") == 1
    assert idp.token_calls == 1


async def test_secret_never_reaches_the_upstream_with_another_token_header(idp: FakeIdp) -> None:
    plugin, _, _ = await make_plugin(idp, upstream_access_token_header="x-access-token")
    for _ in range(2):  # miss, then hit
        ctx = request()
        await run_access(plugin, ctx)
        assert ctx.get_header(b"authorization") is None
        token = ctx.get_header(b"x-access-token")
        assert token is not None and token.startswith(b"ey")


async def test_claims_to_upstream_headers_and_spoofing_removed(idp: FakeIdp) -> None:
    idp.extra_claims = {"groups": ["a", "b"]}
    plugin, _, _ = await make_plugin(
        idp,
        upstream_headers_claims=["sub", "groups", "missing"],
        upstream_headers_names=["X-Client", "X-Groups", "X-Missing"],
    )
    for _ in range(2):
        ctx = request(headers=[(b"x-missing", b"spoofed"), (b"x-client", b"spoofed")])
        await run_access(plugin, ctx)
        assert ctx.get_header(b"x-client") == b"client-1"
        assert ctx.get_header(b"x-groups") == b"a, b"
        assert ctx.get_header(b"x-missing") is None


async def test_no_credentials_is_401_with_a_challenge(idp: FakeIdp) -> None:
    plugin, _, _ = await make_plugin(idp)
    ctx = request(None)
    assert plugin.access(ctx) is None
    assert status_of(ctx) == 401
    assert answer_json(ctx) == {"message": "Unauthorized"}
    assert response_header(ctx, b"content-type") == JSON_TYPE
    assert response_header(ctx, b"www-authenticate") == (
        b'Bearer realm="api.example.test", error="invalid_token"'
    )
    assert idp.token_calls == 0


async def test_malformed_basic_is_401(idp: FakeIdp) -> None:
    plugin, _, _ = await make_plugin(idp)
    ctx = request(b"Basic %%%")
    await run_access(plugin, ctx)
    assert status_of(ctx) == 401 and answer_json(ctx) == {"message": "Unauthorized"}


async def test_wrong_secret_is_401_then_answered_synchronously(idp: FakeIdp) -> None:
    plugin, _, _ = await make_plugin(idp)
    wrong = basic("client-1", "nope")
    first = request(wrong)
    await run_access(plugin, first)
    assert status_of(first) == 401
    again = request(wrong)
    assert plugin.access(again) is None  # negative cache: no await, no IdP call
    assert status_of(again) == 401
    assert idp.token_calls == 1


async def test_display_errors_appends_the_reason(idp: FakeIdp) -> None:
    plugin, _, _ = await make_plugin(idp, display_errors=True)
    ctx = request(basic("client-1", "nope"))
    await run_access(plugin, ctx)
    assert answer_json(ctx) == {
        "message": "Unauthorized (identity provider rejected the client (invalid_client))"
    }
    challenge = response_header(ctx, b"www-authenticate")
    assert challenge.startswith(b'Bearer realm="api.example.test", error="invalid_token"')
    assert (
        b'error_description="identity provider rejected the client (invalid_client)"' in challenge
    )
    assert b"nope" not in ctx.local_body and b"nope" not in challenge


async def test_expose_error_code_off_and_custom_message(idp: FakeIdp) -> None:
    plugin, _, _ = await make_plugin(
        idp, expose_error_code=False, unauthorized_error_message="Go away"
    )
    ctx = request(None, host=b"[::1]:8000")
    plugin.access(ctx)
    assert answer_json(ctx) == {"message": "Go away"}
    assert response_header(ctx, b"www-authenticate") == b'Bearer realm="[::1]"'


async def test_insufficient_scope_is_403(idp: FakeIdp) -> None:
    plugin, _, _ = await make_plugin(idp, scopes_required=["admin"], display_errors=False)
    ctx = request()
    await run_access(plugin, ctx)
    assert status_of(ctx) == 403
    assert answer_json(ctx) == {"message": "Forbidden"}
    assert response_header(ctx, b"www-authenticate") == (
        b'Bearer realm="api.example.test", error="insufficient_scope"'
    )


@pytest.mark.parametrize(
    ("failure", "status", "message"),
    [
        (ConnectError("refused"), 502, "identity provider unavailable"),
        (RequestTimeout("slow"), 504, "identity provider timed out"),
    ],
)
async def test_idp_failure_blames_the_idp(idp: FakeIdp, failure, status, message) -> None:
    idp.http.route(TOKEN_ENDPOINT, failure)
    plugin, _, _ = await make_plugin(idp)
    ctx = request()
    await run_access(plugin, ctx)
    assert status_of(ctx) == status
    assert answer_json(ctx) == {"message": message}
    assert response_header(ctx, b"www-authenticate") is None


async def test_idp_5xx_is_502(idp: FakeIdp) -> None:
    idp.token_status = 503
    plugin, _, _ = await make_plugin(idp)
    ctx = request()
    await run_access(plugin, ctx)
    assert status_of(ctx) == 502


async def test_refresh_window_hit_is_synchronous_and_refreshes_once(idp: FakeIdp) -> None:
    plugin, _, spawner = await make_plugin(idp)
    await run_access(plugin, request())
    idp.clock.advance(3590)
    contexts = [request() for _ in range(5)]
    for ctx in contexts:
        assert plugin.access(ctx) is None
        assert ctx.get_header(b"authorization").startswith(b"Bearer ")
    assert len(spawner.tasks) == 1
    await spawner.drain()
    assert idp.token_calls == 2


async def test_query_credentials_hidden(idp: FakeIdp) -> None:
    plugin, _, _ = await make_plugin(idp, hide_credentials=True)
    for _ in range(2):  # the second one is a synchronous hit
        ctx = request(None, query=b"a=1&client_id=client-1&client_secret=secret-1&b=2")
        await run_access(plugin, ctx)
        assert ctx.get_header(b"authorization").startswith(b"Bearer ")
        assert ctx.query == b"a=1&b=2"
    assert idp.token_calls == 1


async def test_query_credentials_hidden_by_default(idp: FakeIdp) -> None:
    plugin, _, _ = await make_plugin(idp)
    ctx = request(None, query=b"a=1&client_id=client-1&client_secret=secret-1")
    await run_access(plugin, ctx)
    assert ctx.query == b"a=1" and not ctx.responded


async def test_query_credentials_kept_when_asked(idp: FakeIdp) -> None:
    plugin, _, _ = await make_plugin(idp, hide_credentials=False)
    query = b"client_id=client-1&client_secret=secret-1"
    ctx = request(None, query=query)
    await run_access(plugin, ctx)
    assert ctx.query == query and not ctx.responded


@pytest.mark.parametrize(
    ("content_type", "body", "stripped"),
    [
        (
            b"application/x-www-form-urlencoded",
            b"client_id=client-1&client_secret=secret-1&x=1",
            b"x=1",
        ),
        (
            b"application/json",
            orjson.dumps({"client_id": "client-1", "client_secret": "secret-1", "x": 1}),
            b'{"x":1}',
        ),
    ],
)
async def test_body_credentials(idp: FakeIdp, content_type, body, stripped) -> None:
    for hide in (False, True):
        plugin, _, _ = await make_plugin(idp, hide_credentials=hide)
        ctx = request(None, body=body, headers=[(b"content-type", content_type)])
        await run_access(plugin, ctx)
        assert not ctx.responded
        assert ctx.get_header(b"authorization").startswith(b"Bearer ")
        assert forwarded_body(ctx) == (stripped if hide else body)


async def test_body_too_large_for_credentials_is_413_not_401(idp: FakeIdp) -> None:
    from fastgw.plugins.openid_connect.schema import DEFAULT_CREDENTIALS_MAX_BODY_SIZE

    plugin, _, _ = await make_plugin(idp, display_errors=True)
    body = b"client_id=client-1&client_secret=secret-1&pad="
    form = [(b"content-type", b"application/x-www-form-urlencoded")]
    ctx = request(None, body=body + b"x" * DEFAULT_CREDENTIALS_MAX_BODY_SIZE, headers=form)
    await run_access(plugin, ctx)
    assert status_of(ctx) == 413
    assert answer_json(ctx)["message"] == (
        "Request body too large to read credentials (body larger than credentials_max_body_size)"
    )
    assert response_header(ctx, b"www-authenticate") is None
    assert idp.token_calls == 0


async def test_credentials_max_body_size_is_configurable(idp: FakeIdp) -> None:
    plugin, _, _ = await make_plugin(idp, credentials_max_body_size=1024 * 1024)
    body = b"client_id=client-1&client_secret=secret-1&pad=" + b"x" * 100_000
    ctx = request(
        None, body=body, headers=[(b"content-type", b"application/x-www-form-urlencoded")]
    )
    await run_access(plugin, ctx)
    token = ctx.get_header(b"authorization")
    assert not ctx.responded and token is not None and token.startswith(b"Bearer ")


async def test_param_type_header_only_ignores_query(idp: FakeIdp) -> None:
    plugin, _, _ = await make_plugin(idp, client_credentials_param_type=["header"])
    query = b"client_id=client-1&client_secret=secret-1"
    ctx = request(None, query=query)
    assert plugin.access(ctx) is None  # answered at once: nothing to fetch
    assert status_of(ctx) == 401
    assert idp.token_calls == 0 and idp.http.calls == []  # the query was never a credential
    assert ctx.query == query  # nor read to be hidden


async def test_param_type_query_only_ignores_basic(idp: FakeIdp) -> None:
    plugin, _, _ = await make_plugin(idp, client_credentials_param_type=["query"])
    ctx = request(GOOD)
    assert plugin.access(ctx) is None
    assert status_of(ctx) == 401
    assert idp.token_calls == 0 and idp.http.calls == []
    # Basic for client-1 beside query credentials for client-2: the token is client-2's
    ctx = request(GOOD, query=b"client_id=client-2&client_secret=secret-2")
    await run_access(plugin, ctx)
    assert not ctx.responded
    token = ctx.get_header(b"authorization").removeprefix(b"Bearer ").decode()
    assert jwt.decode(token, options={"verify_signature": False})["sub"] == "client-2"
    assert idp.token_calls == 1
    (call,) = [call for call in idp.http.calls if call.url == TOKEN_ENDPOINT]
    assert idp.credentials_of(call) == ("client-2", "secret-2")


async def test_bearer_header_falls_through_to_other_sources(idp: FakeIdp) -> None:
    plugin, _, _ = await make_plugin(idp)
    ctx = request(b"Bearer something", query=b"client_id=client-1&client_secret=secret-1")
    await run_access(plugin, ctx)
    assert not ctx.responded
    assert ctx.get_header(b"authorization").startswith(b"Bearer ey")


async def test_unexpected_error_is_500_and_logged(idp: FakeIdp, caplog) -> None:
    plugin, authenticator, _ = await make_plugin(idp)

    async def broken(*args, **kwargs):
        raise RuntimeError("bug")

    authenticator.obtain = broken  # type: ignore[method-assign]
    ctx = request()
    await run_access(plugin, ctx)
    assert status_of(ctx) == 500 and response_header(ctx, b"www-authenticate") is None
    assert "unexpected error" in caplog.text
    assert "secret-1" not in caplog.text


async def test_logs_never_hold_secrets_or_tokens(idp: FakeIdp, caplog) -> None:
    caplog.set_level("DEBUG")
    plugin, _, _ = await make_plugin(idp, display_errors=True)
    ctx = request()
    await run_access(plugin, ctx)
    token = ctx.get_header(b"authorization")[7:].decode()
    idp.token_status = 500
    idp.clock.advance(4000)
    await run_access(plugin, request())
    for secret in ("secret-1", token, GOOD.decode()):
        assert secret not in caplog.text


async def test_spec_builds_a_plugin_over_the_runtime() -> None:
    idp = FakeIdp(FakeHttp(), FakeClock(time.time()))  # the built plugin runs on the wall clock
    problems: list[tuple[str, str]] = []
    parsed = SPEC.parse_config(Reader(config(), "plugins[0].config", problems))
    assert problems == []
    made: list[tuple[bool, bool]] = []

    def http_client(verify: bool, keepalive: bool) -> FakeHttp:
        made.append((verify, keepalive))
        return idp.http

    spawned: list[object] = []

    def spawn(awaitable: object) -> None:
        spawned.append(asyncio.ensure_future(awaitable))

    plugin = SPEC.build(parsed, PluginRuntime(http_client=http_client, spawn=spawn))
    assert isinstance(plugin, OpenIdConnect)
    assert plugin.name == "openid-connect" and plugin.priority == 1050
    assert made == [(True, True)]
    await plugin.start()
    ctx = request()
    await run_access(plugin, ctx)
    assert not ctx.responded
    await plugin.stop()
    assert idp.http.closed is False


async def test_one_connection_with_another_authorization_gets_its_own_token(idp: FakeIdp) -> None:
    """The per-connection memo of the header's digest never serves one client's token for
    another client's header on the same connection."""
    plugin, _, _ = await make_plugin(idp)
    connection = Connection()
    first = request(connection=connection)
    await run_access(plugin, first)
    first_token = first.get_header(b"authorization")
    other = request(basic("client-2", "secret-2"), connection=connection)
    await run_access(plugin, other)
    other_token = other.get_header(b"authorization")
    assert other_token is not None and other_token != first_token
    assert jwt.decode(other_token[7:], options={"verify_signature": False})["sub"] == "client-2"
    wrong = request(basic("client-1", "not-the-secret"), connection=connection)
    await run_access(plugin, wrong)
    assert status_of(wrong) == 401
    again = request(connection=connection)
    assert plugin.access(again) is None  # the first client's token, cached: a hit
    assert again.get_header(b"authorization") == first_token
    assert idp.token_calls == 3


# -- hide_credentials beyond the source used ------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        b"a=1&client_id=client-1&client_secret=stray&b=2",
        b"a=1&client%5Fsecret=stray&b=2",  # the same name, escaped
    ],
)
async def test_query_credentials_beside_a_basic_header_are_hidden(idp: FakeIdp, query) -> None:
    plugin, _, _ = await make_plugin(idp)
    for attempt in ("miss", "hit"):
        ctx = request(query=query)
        synchronous = await run_access(plugin, ctx)
        assert synchronous is (attempt == "hit")
        assert ctx.query == b"a=1&b=2" and not ctx.responded
        assert ctx.get_header(b"authorization").startswith(b"Bearer ey")


async def test_query_without_credentials_is_forwarded_as_it_came(idp: FakeIdp) -> None:
    plugin, _, _ = await make_plugin(idp)
    for _ in range(2):
        ctx = request(query=b"client=1&secret_santa=2&&x=%41")
        await run_access(plugin, ctx)
        assert ctx.query == b"client=1&secret_santa=2&&x=%41"


@pytest.mark.parametrize(
    "options",
    [{"hide_credentials": False}, {"client_credentials_param_type": ["header"]}],
    ids=["asked-to-forward", "query-not-a-source"],
)
async def test_query_credentials_are_kept_when_not_the_plugins_to_hide(
    idp: FakeIdp, options
) -> None:
    plugin, _, _ = await make_plugin(idp, **options)
    query = b"client_id=client-2&client_secret=secret-2"
    for _ in range(2):
        ctx = request(query=query)
        await run_access(plugin, ctx)
        assert ctx.query == query and not ctx.responded


# -- what loggers redact --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"auth_methods": ["client_credentials"]}, {b"authorization"}),
        (
            {"auth_methods": ["client_credentials"], "upstream_access_token_header": "x-token"},
            {b"x-token"},
        ),
        ({"auth_methods": ["bearer"]}, {b"authorization", b"access-token", b"x-access-token"}),
        (
            {"auth_methods": ["bearer"], "bearer_token_header_name": "X-Api-Token"},
            {b"authorization", b"x-api-token"},
        ),
    ],
)
async def test_sensitive_headers_name_every_header_the_plugin_reads_tokens_from(
    idp: FakeIdp, options, expected
) -> None:
    plugin = await make_full_plugin(idp, **options)
    assert plugin.sensitive_headers == expected


# -- a busy IdP -----------------------------------------------------------------------------------


def started(plugin: OpenIdConnect, ctx: Exchange) -> asyncio.Future[None]:
    pending = plugin.access(ctx)
    assert pending is not None  # a miss
    return asyncio.ensure_future(pending)


async def test_full_queues_answer_at_once_503_or_429_with_retry_after(idp: FakeIdp) -> None:
    admission = Admission(slots=2, queue_limit=2, source_limit=1)  # one slot for unknown ids
    plugin, _, _ = await make_plugin(idp, admission)
    idp.gate = asyncio.Event()
    flooder = "198.51.100.7"
    calling = request(basic("a", "1"), client_ip=flooder)
    waiting = request(basic("b", "2"), client_ip=flooder)
    pending = [started(plugin, calling), started(plugin, waiting)]
    await until(lambda: admission.in_flight == 1 and admission.status()["waiting"]["unknown"] == 1)
    limited = request(basic("c", "3"), client_ip=flooder)
    await run_access(plugin, limited)
    assert status_of(limited) == 429
    assert answer_json(limited) == {"message": TOO_MANY_WAITING_MESSAGE}
    assert response_header(limited, b"retry-after") == b"1"
    assert response_header(limited, b"www-authenticate") is None
    other = request(basic("d", "4"), client_ip="203.0.113.8")  # fills the class's queue
    pending.append(started(plugin, other))
    await until(lambda: admission.status()["waiting"]["unknown"] == 2)
    busy = request(basic("e", "5"), client_ip="203.0.113.9")
    await run_access(plugin, busy)
    assert status_of(busy) == 503 and answer_json(busy) == {"message": "identity provider busy"}
    assert response_header(busy, b"retry-after") == b"1"
    idp.gate.set()
    await asyncio.gather(*pending)
    assert [status_of(ctx) for ctx in (calling, waiting, other)] == [401, 401, 401]


async def test_status_reports_every_store_with_its_capacity(idp: FakeIdp) -> None:
    plugin = await make_full_plugin(idp, auth_methods=["client_credentials", "bearer"])
    await run_access(plugin, request())
    status = plugin.status()
    assert status["cached_clients"] == 1 and status["cache_capacity"] == 100_000
    assert status["known_clients"] == 1 and status["known_clients_capacity"] == 100_000
    assert status["cached_tokens"] == 0 and status["known_tokens_capacity"] == 100_000
    admission = status["idp_admission"]
    assert isinstance(admission, dict) and admission["slots"] == 16
    names = {family.name for family in plugin.metrics()}
    assert {"fastgw_oidc_idp_admissions_total", "fastgw_oidc_known_good_tokens"} <= names


async def test_stores_report_every_bounded_store_against_its_bound(idp: FakeIdp) -> None:
    plugin = await make_full_plugin(idp, auth_methods=["client_credentials", "bearer"])
    plugin.instance_name = "services[0].plugins[0]"
    await run_access(plugin, request())
    await run_access(plugin, request(basic("client-1", "wrong")))
    stores = {store.name: store for store in plugin.stores()}
    where = "(services[0].plugins[0])"
    assert set(stores) == {
        f"openid-connect {what} {where}"
        for what in (
            "token cache",
            "rejections",
            "known-good clients",
            "IdP admission queues",
            "bearer token cache",
            "rejected tokens",
            "known-good tokens",
        )
    }
    tokens = stores[f"openid-connect token cache {where}"]
    assert (tokens.entries, tokens.capacity_entries) == (1, 100_000)
    assert 0 < tokens.used_bytes < tokens.capacity_bytes
    assert stores[f"openid-connect rejections {where}"].entries == 2  # by key: header, Kong's
    assert stores[f"openid-connect known-good clients {where}"].entries == 1
    queues = stores[f"openid-connect IdP admission queues {where}"]
    assert (queues.entries, queues.capacity_entries) == (0, 3 * 1024)
