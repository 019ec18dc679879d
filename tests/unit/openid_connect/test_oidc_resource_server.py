"""Callers' own tokens over fakes: bearer (JWKS), introspection, caching by the token's hash,
who is blamed for what, consumer headers, anonymous, the preflight rule and token sources."""

from __future__ import annotations

import pytest
from oidc_fakes import (
    INTROSPECTION_ENDPOINT,
    JWKS_URI,
    FakeClock,
    FakeHttp,
    FakeIdp,
    claims,
    ec_key,
    forwarded_body,
    make_full_plugin,
    request_context,
    response_header,
    run_access,
    status_of,
)

from fastgw.config.consumers import Consumer, Consumers
from fastgw.http.client import ConnectError
from fastgw.http.exchange import Exchange
from fastgw.plugins.api import Authenticated, Credential

OWN_CLIENT = {
    "client_id": ["client-1"],
    "client_secret": ["secret-1"],
    "client_auth": ["client_secret_post"],
}
CONSUMERS = Consumers(
    (
        Consumer("5b1a3f0e-6c2d-4e8f-9a7b-1c2d3e4f5a6b", "alice", "alice-7"),
        Consumer("9e8d7c6b-5a4f-4e3d-8c2b-1a0f9e8d7c6b", "guest", None),
    )
)


@pytest.fixture
def idp() -> FakeIdp:
    return FakeIdp(FakeHttp(), FakeClock())


def bearer(token: str, **options) -> Exchange:
    headers = [(b"authorization", b"Bearer " + token.encode()), *options.pop("headers", [])]
    return request_context(headers, **options)


def challenge_of(ctx: Exchange) -> bytes | None:
    return response_header(ctx, b"www-authenticate")


# -- bearer ---------------------------------------------------------------------------------------


async def test_a_valid_jwt_passes_unchanged_and_the_second_time_synchronously(
    idp: FakeIdp,
) -> None:
    plugin = await make_full_plugin(idp, auth_methods=["bearer"])
    token = idp.key.mint(claims(idp.clock()))
    first = bearer(token)
    assert await run_access(plugin, first) is False  # verified (keys fetched) off the hot path
    assert first.get_header(b"authorization") == b"Bearer " + token.encode()
    again = bearer(token)
    assert plugin.access(again) is None  # cached by the token's hash: no await
    assert not again.responded
    assert idp.http.count(JWKS_URI) == 1


async def test_the_same_token_from_the_query_finds_the_same_cache_entry(idp: FakeIdp) -> None:
    plugin = await make_full_plugin(idp, auth_methods=["bearer"])
    token = idp.key.mint(claims(idp.clock()))
    await run_access(plugin, bearer(token))
    ctx = request_context(query=b"a=1&access_token=" + token.encode())
    assert plugin.access(ctx) is None
    assert ctx.query == b"a=1"  # hidden (hide_credentials)
    assert ctx.get_header(b"authorization") == b"Bearer " + token.encode()


@pytest.mark.parametrize(
    ("claim_overrides", "status"),
    [
        ({"exp": (1_700_000_000 - 10)}, 401),  # expired
        ({"iss": "https://other.example"}, 401),  # another issuer
        ({"scope": "openid"}, 403),  # lacks the required scope
    ],
)
async def test_refused_tokens_answer_with_kongs_codes(
    idp: FakeIdp, claim_overrides: dict, status: int
) -> None:
    plugin = await make_full_plugin(idp, auth_methods=["bearer"], scopes_required=["read"])
    ctx = bearer(idp.key.mint(claims(idp.clock(), **claim_overrides)))
    await run_access(plugin, ctx)
    assert status_of(ctx) == status
    code = b"invalid_token" if status == 401 else b"insufficient_scope"
    assert challenge_of(ctx) == b'Bearer realm="api.example.test", error="' + code + b'"'


async def test_a_refused_token_is_remembered_for_cache_ttl_neg(idp: FakeIdp) -> None:
    plugin = await make_full_plugin(idp, auth_methods=["bearer"], cache_ttl_neg=30)
    forged = ec_key("ec-forged").mint(claims(idp.clock()))  # unknown kid: one throttled re-fetch
    await run_access(plugin, bearer(forged))
    fetches = idp.http.count(JWKS_URI)
    ctx = bearer(forged)
    assert plugin.access(ctx) is None and status_of(ctx) == 401  # answered from memory
    assert idp.http.count(JWKS_URI) == fetches


async def test_the_idp_unreachable_is_502_never_401(idp: FakeIdp) -> None:
    plugin = await make_full_plugin(idp, auth_methods=["bearer"])
    idp.http.route(JWKS_URI, ConnectError("refused"))
    ctx = bearer(idp.key.mint(claims(idp.clock())))
    await run_access(plugin, ctx)
    assert status_of(ctx) == 502 and challenge_of(ctx) is None


async def test_groups_roles_and_forbidden_claims(idp: FakeIdp) -> None:
    plugin = await make_full_plugin(
        idp, auth_methods=["bearer"], groups_required=["ops admins"], claims_forbidden=["act"]
    )
    allowed = bearer(idp.key.mint(claims(idp.clock(), groups=["ops", "admins", "x"])))
    await run_access(plugin, allowed)
    assert not allowed.responded
    for extra in ({"groups": ["ops"]}, {"groups": ["ops", "admins"], "act": {"sub": "x"}}):
        ctx = bearer(idp.key.mint(claims(idp.clock(), **extra)))
        await run_access(plugin, ctx)
        assert status_of(ctx) == 403


# -- introspection --------------------------------------------------------------------------------


async def test_an_opaque_token_is_introspected_by_the_plugins_own_client(idp: FakeIdp) -> None:
    plugin = await make_full_plugin(idp, auth_methods=["introspection"], **OWN_CLIENT)
    token = idp.issue_opaque("opaque-token-1")
    ctx = bearer(token)
    await run_access(plugin, ctx)
    assert not ctx.responded and ctx.get_header(b"authorization") == b"Bearer opaque-token-1"
    (call,) = [c for c in idp.http.calls if c.url == INTROSPECTION_ENDPOINT]
    assert call.form == {
        "token": "opaque-token-1",
        "token_type_hint": "access_token",
        "client_id": "client-1",
        "client_secret": "secret-1",
    }
    assert plugin.access(bearer(token)) is None  # cached (cache_introspection)
    assert idp.introspection_calls == 1


async def test_inactive_is_401_and_an_introspection_failure_is_502(idp: FakeIdp) -> None:
    plugin = await make_full_plugin(
        idp, auth_methods=["introspection"], cache_ttl_neg=0, **OWN_CLIENT
    )
    inactive = bearer("nobody-knows-this")
    await run_access(plugin, inactive)
    assert status_of(inactive) == 401
    idp.introspection_status = 503
    down = bearer(idp.issue_opaque("opaque-token-2"))
    await run_access(plugin, down)
    assert status_of(down) == 502 and challenge_of(down) is None
    idp.introspection_status = 200
    idp.clients["client-1"] = (
        "rotated"  # the plugin's own client is refused: not the caller's fault
    )
    refused = bearer(idp.issue_opaque("opaque-token-3"))
    await run_access(plugin, refused)
    assert status_of(refused) == 502


async def test_without_cache_introspection_every_request_asks(idp: FakeIdp) -> None:
    plugin = await make_full_plugin(
        idp, auth_methods=["introspection"], cache_introspection=False, **OWN_CLIENT
    )
    token = idp.issue_opaque("opaque-token-4")
    for _ in range(3):
        await run_access(plugin, bearer(token))
    assert idp.introspection_calls == 3
    idp.opaque[token]["active"] = False  # revoked
    ctx = bearer(token)
    await run_access(plugin, ctx)
    assert status_of(ctx) == 401


async def test_bearer_with_introspect_jwt_tokens_catches_a_revoked_jwt(idp: FakeIdp) -> None:
    plugin = await make_full_plugin(
        idp,
        auth_methods=["bearer", "introspection"],
        introspect_jwt_tokens=True,
        cache_ttl_neg=0,
        **OWN_CLIENT,
    )
    token = idp.key.mint(claims(idp.clock()))
    ctx = bearer(token)
    await run_access(plugin, ctx)
    assert status_of(ctx) == 401  # the IdP does not know it as active
    idp.opaque[token] = {"active": True}
    ok = bearer(token)
    await run_access(plugin, ok)
    assert not ok.responded


# -- consumers and anonymous ----------------------------------------------------------------------


async def test_consumer_headers_are_set_and_spoofed_ones_removed(idp: FakeIdp) -> None:
    plugin = await make_full_plugin(
        idp, CONSUMERS, auth_methods=["bearer"], consumer_claims=[["preferred_username"]]
    )
    spoofed = [(b"x-consumer-username", b"root"), (b"x-anonymous-consumer", b"true")]
    ctx = bearer(idp.key.mint(claims(idp.clock(), preferred_username="alice")), headers=spoofed)
    await run_access(plugin, ctx)
    assert ctx.get_header(b"x-consumer-username") == b"alice"
    assert ctx.get_header(b"x-consumer-custom-id") == b"alice-7"
    assert ctx.get_header(b"x-consumer-id") == CONSUMERS.all[0].id.encode()
    assert ctx.get_header(b"x-credential-identifier") == b"client-1"
    assert ctx.get_header(b"x-anonymous-consumer") is None


async def test_no_consumer_is_403_unless_optional(idp: FakeIdp) -> None:
    token = idp.key.mint(claims(idp.clock(), preferred_username="mallory"))
    strict = await make_full_plugin(
        idp, CONSUMERS, auth_methods=["bearer"], consumer_claims=[["preferred_username"]]
    )
    ctx = bearer(token)
    await run_access(strict, ctx)
    assert status_of(ctx) == 403
    optional = await make_full_plugin(
        idp,
        CONSUMERS,
        auth_methods=["bearer"],
        consumer_claims=[["preferred_username"]],
        consumer_optional=True,
    )
    ctx = bearer(token, headers=[(b"x-consumer-id", b"spoofed")])
    await run_access(optional, ctx)
    assert not ctx.responded
    assert ctx.get_header(b"x-consumer-id") is None
    assert ctx.get_header(b"x-credential-identifier") == b"client-1"


async def test_consumer_by_custom_id_and_case_insensitive_usernames(idp: FakeIdp) -> None:
    plugin = await make_full_plugin(
        idp,
        CONSUMERS,
        auth_methods=["bearer"],
        consumer_claims=[["missing"], ["user", "name"]],
        consumer_by=["custom_id", "username"],
        by_username_ignore_case=True,
    )
    for name in ("alice-7", "ALICE"):
        ctx = bearer(idp.key.mint(claims(idp.clock(), user={"name": name})))
        await run_access(plugin, ctx)
        assert ctx.get_header(b"x-consumer-username") == b"alice", name


async def test_the_token_authenticates_the_request_for_the_later_plugins(idp: FakeIdp) -> None:
    """Kong's kong.client.authenticate: the mapped consumer, the virtual credential (the
    credential_claim) and the groups of authenticated_groups_claim (for acl)."""
    plugin = await make_full_plugin(
        idp,
        CONSUMERS,
        auth_methods=["bearer"],
        consumer_claims=[["preferred_username"]],
        authenticated_groups_claim=["realm", "groups"],
    )
    token = claims(idp.clock(), preferred_username="alice", realm={"groups": ["staff", "dev"]})
    ctx = bearer(idp.key.mint(token), headers=[(b"x-authenticated-groups", b"root")])
    await run_access(plugin, ctx)
    who = ctx.principal
    assert isinstance(who, Authenticated)
    assert who.consumer is CONSUMERS.all[0]
    assert who.credential is not None and who.credential.id == "client-1"
    assert who.credential.consumer_id == CONSUMERS.all[0].id
    assert who.groups == ("staff", "dev")
    assert ctx.get_header(b"x-authenticated-groups") == b"staff, dev"
    # the cached token gives the same identity, without the IdP
    again = bearer(idp.key.mint(token))
    await run_access(plugin, again)
    assert again.principal is not None and again.principal.groups == ("staff", "dev")
    without = bearer(idp.key.mint(claims(idp.clock(), preferred_username="alice", jti="2")))
    await run_access(plugin, without)
    assert without.principal.groups is None  # type: ignore[union-attr]
    assert without.get_header(b"x-authenticated-groups") is None


async def test_with_anonymous_an_earlier_credential_is_enough(idp: FakeIdp) -> None:
    """Kong's logical OR: with `anonymous`, a request an earlier plugin authenticated with a
    credential is left alone."""
    plugin = await make_full_plugin(idp, CONSUMERS, auth_methods=["bearer"], anonymous="guest")
    ctx = request_context()
    ctx.principal = Authenticated(CONSUMERS.all[0], Credential("keyauth_credentials", "k"))
    assert plugin.access(ctx) is None and not ctx.responded
    assert ctx.get_header(b"x-anonymous-consumer") is None


async def test_anonymous_serves_failures_as_the_anonymous_consumer(idp: FakeIdp) -> None:
    plugin = await make_full_plugin(idp, CONSUMERS, auth_methods=["bearer"], anonymous="guest")
    for ctx in (request_context(), bearer("garbage.garbage.garbage")):
        await run_access(plugin, ctx)
        assert not ctx.responded
        assert ctx.get_header(b"x-anonymous-consumer") == b"true"
        assert ctx.get_header(b"x-consumer-username") == b"guest"
        assert ctx.get_header(b"authorization") is None
    idp.http.route(JWKS_URI, ConnectError("refused"))
    down = bearer(idp.key.mint(claims(idp.clock(), jti="new")))
    await run_access(plugin, down)
    assert status_of(down) == 502  # an IdP failure is not let through as anonymous


# -- the preflight rule and token sources ---------------------------------------------------------


async def test_run_on_preflight_false_skips_options_only(idp: FakeIdp) -> None:
    plugin = await make_full_plugin(idp, auth_methods=["bearer"], run_on_preflight=False)
    preflight = request_context(method=b"OPTIONS")
    assert plugin.access(preflight) is None and not preflight.responded
    get = request_context()
    await run_access(plugin, get)
    assert status_of(get) == 401


async def test_token_sources_follow_bearer_token_param_type(idp: FakeIdp) -> None:
    token = idp.key.mint(claims(idp.clock()))
    cookie_only = await make_full_plugin(
        idp,
        auth_methods=["bearer"],
        bearer_token_param_type=["cookie"],
        bearer_token_cookie_name="at",
    )
    ctx = request_context([(b"cookie", b"a=1; at=" + token.encode() + b"; b=2")])
    await run_access(cookie_only, ctx)
    assert not ctx.responded and ctx.get_header(b"cookie") == b"a=1; b=2"
    header = bearer(token)
    await run_access(cookie_only, header)
    assert status_of(header) == 401
    custom = await make_full_plugin(
        idp, auth_methods=["bearer"], bearer_token_header_name="X-Api-Token"
    )
    ctx = request_context([(b"x-api-token", token.encode())])
    await run_access(custom, ctx)
    assert not ctx.responded and ctx.get_header(b"x-api-token") is None
    assert ctx.get_header(b"authorization") == b"Bearer " + token.encode()


async def test_a_body_token_is_read_and_removed(idp: FakeIdp) -> None:
    plugin = await make_full_plugin(idp, auth_methods=["bearer"])
    token = idp.key.mint(claims(idp.clock()))
    ctx = request_context(
        [(b"content-type", b"application/x-www-form-urlencoded")],
        body=b"q=1&access_token=" + token.encode(),
    )
    await run_access(plugin, ctx)
    assert not ctx.responded and forwarded_body(ctx) == b"q=1"


async def test_basic_then_bearer_on_one_route(idp: FakeIdp) -> None:
    from oidc_fakes import basic

    plugin = await make_full_plugin(
        idp, auth_methods=["client_credentials", "bearer"], client_auth=["client_secret_post"]
    )
    granted = request_context([(b"authorization", basic("client-1", "secret-1"))])
    await run_access(plugin, granted)
    swapped = granted.get_header(b"authorization")
    assert swapped is not None and swapped.startswith(b"Bearer ey")
    assert idp.token_calls == 1
    own = idp.key.mint(claims(idp.clock(), jti="own"))
    ctx = bearer(own)
    await run_access(plugin, ctx)
    assert ctx.get_header(b"authorization") == b"Bearer " + own.encode()
    assert idp.token_calls == 1


async def test_a_body_the_plugin_read_loses_every_credential_it_recognises(idp: FakeIdp) -> None:
    """hide_credentials: whichever source authenticated, a body the plugin read leaves without
    the client credentials and the bearer token it could have read there."""
    plugin = await make_full_plugin(
        idp, auth_methods=["client_credentials", "bearer"], client_auth=["client_secret_post"]
    )
    token = idp.key.mint(claims(idp.clock()))
    body = f"q=1&access_token={token}&client_id=client-1&client_secret=secret-1".encode()
    ctx = request_context([(b"content-type", b"application/x-www-form-urlencoded")], body=body)
    await run_access(plugin, ctx)
    assert not ctx.responded and forwarded_body(ctx) == b"q=1"
    assert ctx.get_header(b"authorization") == b"Bearer " + token.encode()


async def test_tokens_that_were_active_go_ahead_of_never_seen_ones(idp: FakeIdp) -> None:
    plugin = await make_full_plugin(
        idp, auth_methods=["introspection"], cache_introspection=False, **OWN_CLIENT
    )
    assert plugin.bearer is not None
    known = idp.issue_opaque("opaque-known")
    await run_access(plugin, bearer(known))
    assert plugin.bearer.key(known) in plugin.bearer.known
    inactive = bearer("made-up-opaque")
    await run_access(plugin, inactive)
    assert status_of(inactive) == 401
    assert plugin.bearer.key("made-up-opaque") not in plugin.bearer.known
    idp.opaque[known]["active"] = False  # revoked: no longer known-good
    revoked = bearer(known)
    await run_access(plugin, revoked)
    assert status_of(revoked) == 401 and plugin.bearer.key(known) not in plugin.bearer.known
