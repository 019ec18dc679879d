"""openid-connect with the caller's own tokens (Kong's `bearer` and `introspection` methods),
consumers, `anonymous`, `run_on_preflight` and body credentials, against the real IdP.

Tokens are obtained from the IdP directly (JWTs of its API resource, opaque ones of its opaque
resource), as the clients of a resource server get them; introspection and revocation are
oidc-provider's own. Each route has its own plugin instance (own caches).
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.oidc_support import (  # noqa: F401  fixtures, used by name
    FORBIDDEN_CHALLENGE,
    SECRETS,
    UNAUTHORIZED_CHALLENGE,
    Echo,
    EmbeddedGateway,
    Response,
    basic,
    echo_port,
    fastgw_logs,
    no_secrets_in_caplog,
    request,
    running_gateway,
)
from tests.support.idp import BASIC_CLIENT, POST_CLIENT, IdpClient, TestIdP, default_clients

pytestmark = pytest.mark.integration

ALEX = ("alex-app", "alex-app-secret")  # its tokens say preferred_username: alex
NOBODY = ("nobody-app", "nobody-app-secret")  # preferred_username: nobody (no such consumer)
for _id, _secret in (BASIC_CLIENT, POST_CLIENT, ALEX, NOBODY):
    SECRETS.add_client(_id, _secret)
SHORT_TTL = 2  # seconds: the short-lived IdP's token lifetime


def idp_clients() -> list[IdpClient]:
    return [
        *default_clients(),
        IdpClient(*ALEX, "client_secret_post"),
        IdpClient(*NOBODY, "client_secret_post"),
    ]


@pytest.fixture(scope="module")
def idp() -> Iterator[TestIdP]:
    claims = {ALEX[0]: {"preferred_username": "alex"}, NOBODY[0]: {"preferred_username": "nobody"}}
    with TestIdP(alg="RS256", clients=idp_clients(), token_claims=claims) as server:
        yield server


@pytest.fixture(scope="module")
def other_idp() -> Iterator[TestIdP]:
    with TestIdP(alg="ES256") as server:
        yield server


@pytest.fixture(scope="module")
def short_idp() -> Iterator[TestIdP]:
    with TestIdP(alg="ES256", access_token_ttl=SHORT_TTL) as server:
        yield server


@pytest.fixture(autouse=True)
def _switches_off(idp: TestIdP) -> Iterator[None]:
    yield
    if idp.running:
        idp.set_introspection_fail(0)


def own_client(idp: TestIdP) -> dict[str, Any]:
    """The plugin's own client (it asks the introspection endpoint), as in Kong's examples."""
    return {
        "client_id": [POST_CLIENT[0]],
        "client_secret": [POST_CLIENT[1]],
        "client_auth": ["client_secret_post"],
    }


def plugin(idp: TestIdP, **config: Any) -> dict[str, Any]:
    return {"issuer": idp.issuer, "timeout": 3000, **config}


def document(echo_port: int, routes: dict[str, dict[str, Any]], **top: Any) -> str:
    return json.dumps(
        {
            "_format_version": "3.0",
            "_fastgw": {"admin_listen": None},
            "services": [
                {
                    "name": "echo",
                    "url": f"http://127.0.0.1:{echo_port}",
                    "retries": 0,
                    "routes": [
                        {
                            "name": path.strip("/") or "root",
                            "paths": [path],
                            "strip_path": False,
                            "plugins": [{"name": "openid-connect", "config": config}],
                        }
                        for path, config in routes.items()
                    ],
                }
            ],
            **top,
        }
    )


@pytest.fixture(scope="module")
def gw(
    idp: TestIdP, short_idp: TestIdP, echo_port: int, closed_port: int
) -> Iterator[EmbeddedGateway]:
    routes = {
        "/bearer": plugin(idp, auth_methods=["bearer"]),
        "/bearer-short": plugin(short_idp, auth_methods=["bearer"]),
        "/bearer-admin": plugin(idp, auth_methods=["bearer"], scopes_required=["admin"]),
        "/bearer-down": plugin(
            idp,
            issuer=f"http://127.0.0.1:{closed_port}",
            issuers_allowed=[idp.issuer],
            auth_methods=["bearer"],
        ),
        "/bearer-query": plugin(idp, auth_methods=["bearer"], bearer_token_param_type=["query"]),
        "/bearer-cookie": plugin(
            idp,
            auth_methods=["bearer"],
            bearer_token_param_type=["cookie"],
            bearer_token_cookie_name="at",
        ),
        "/introspect": plugin(idp, auth_methods=["introspection"], **own_client(idp)),
        "/introspect-fresh": plugin(
            idp, auth_methods=["introspection"], cache_introspection=False, **own_client(idp)
        ),
        "/mixed": plugin(
            idp, auth_methods=["client_credentials", "bearer"], client_auth=["client_secret_basic"]
        ),
        "/default-methods": plugin(idp, **own_client(idp)),
        "/consumers": plugin(
            idp,
            auth_methods=["bearer"],
            consumer_claims=[["preferred_username"]],
            consumer_by=["username"],
        ),
        "/anonymous": plugin(idp, auth_methods=["bearer"], anonymous="guest"),
        "/no-preflight": plugin(idp, auth_methods=["bearer"], run_on_preflight=False),
        "/body": plugin(
            idp,
            auth_methods=["client_credentials"],
            client_auth=["client_secret_post"],
            client_credentials_param_type=["body"],
            credentials_max_body_size=4096,
        ),
    }
    consumers = [{"username": "alex", "custom_id": "alex-42"}, {"username": "guest"}]
    with running_gateway(document(echo_port, routes, consumers=consumers)) as gateway:
        yield gateway


def bearer_cache(gw: EmbeddedGateway, path: str) -> dict[Any, Any]:
    """The bearer cache of the plugin on route `path` (to see that a token was cached)."""
    route_name = path.strip("/")
    for service in gw.gateway.config.services:
        for route in service.routes:
            if route.name == route_name:
                for plugin in gw.gateway.plugins:
                    if plugin.authenticator.config is route.plugins[0].config:  # type: ignore[attr-defined]
                        return plugin.bearer.cache.entries  # type: ignore[attr-defined, no-any-return]
    raise AssertionError(f"no openid-connect plugin on {path}")


def jwt_of(idp: TestIdP, client: tuple[str, str] = POST_CLIENT, scope: str | None = None) -> str:
    token = idp.token(client[0], client[1], scope)["access_token"]
    SECRETS.add_token(token)
    return token


def opaque_of(idp: TestIdP, client: tuple[str, str] = POST_CLIENT) -> str:
    token = idp.opaque_token(client[0])
    SECRETS.add_token(token)
    return token


async def bearer_call(gw: EmbeddedGateway, path: str, token: str, **options: Any) -> Response:
    headers = [("Authorization", f"Bearer {token}"), *options.pop("headers", [])]
    return await request(gw.port, options.pop("method", "GET"), path, headers=headers, **options)


def assert_challenged(response: Response, status: int) -> None:
    assert response.status == status, (response.status, response.body)
    challenge = UNAUTHORIZED_CHALLENGE if status == 401 else FORBIDDEN_CHALLENGE
    assert response.headers_named("www-authenticate") == [challenge]


# -- bearer: JWTs from the IdP --------------------------------------------------------------------


async def test_a_token_from_the_idp_goes_through_unchanged_and_is_cached(
    gw: EmbeddedGateway, idp: TestIdP
) -> None:
    token = jwt_of(idp)
    cache = bearer_cache(gw, "/bearer")
    first = Echo.of(await bearer_call(gw, "/bearer/x", token))
    assert first.bearer == token
    jwks_after_first = idp.stats()["jwks_requests"]
    cached = len(cache)
    second = Echo.of(await bearer_call(gw, "/bearer/y", token))
    assert second.bearer == token
    assert idp.stats()["jwks_requests"] == jwks_after_first
    assert len(cache) == cached >= 1  # verified once, then found by the token's hash
    assert idp.stats()["introspection_requests"] == 0


async def test_a_tampered_token_is_401(gw: EmbeddedGateway, idp: TestIdP) -> None:
    header, payload, signature = jwt_of(idp).split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["sub"] = "someone-else"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    assert_challenged(await bearer_call(gw, "/bearer", f"{header}.{forged}.{signature}"), 401)
    flipped = signature[:-4] + ("AAAA" if signature[-4:] != "AAAA" else "BBBB")
    assert_challenged(await bearer_call(gw, "/bearer", f"{header}.{payload}.{flipped}"), 401)


async def test_an_expired_token_is_401(gw: EmbeddedGateway, short_idp: TestIdP) -> None:
    token = jwt_of(short_idp)
    assert Echo.of(await bearer_call(gw, "/bearer-short", token)).bearer == token
    await asyncio.sleep(SHORT_TTL + 1.1)  # exp has whole seconds
    assert_challenged(await bearer_call(gw, "/bearer-short", token), 401)


async def test_a_token_of_another_issuer_is_401_after_one_throttled_jwks_refetch(
    gw: EmbeddedGateway, idp: TestIdP, other_idp: TestIdP
) -> None:
    foreign = jwt_of(other_idp)
    before = idp.stats()["jwks_requests"]
    assert_challenged(await bearer_call(gw, "/bearer", foreign), 401)
    assert_challenged(await bearer_call(gw, "/bearer", foreign), 401)
    assert idp.stats()["jwks_requests"] - before <= 1


async def test_a_token_without_the_required_scope_is_403(gw: EmbeddedGateway, idp: TestIdP) -> None:
    assert_challenged(await bearer_call(gw, "/bearer-admin", jwt_of(idp, scope="read")), 403)
    token = jwt_of(idp, scope="read admin")
    assert Echo.of(await bearer_call(gw, "/bearer-admin", token)).bearer == token


async def test_no_token_and_a_malformed_one_are_401(gw: EmbeddedGateway) -> None:
    assert_challenged(await request(gw.port, "GET", "/bearer"), 401)
    assert_challenged(await bearer_call(gw, "/bearer", "not a token"), 401)
    assert_challenged(await bearer_call(gw, "/bearer", "e30.e30.e30x.y"), 401)


async def test_the_idp_down_is_502_never_401(gw: EmbeddedGateway, idp: TestIdP) -> None:
    response = await bearer_call(gw, "/bearer-down", jwt_of(idp))
    assert response.status == 502, (response.status, response.body)
    assert response.headers_named("www-authenticate") == []


async def test_bearer_token_from_the_query_and_a_cookie(gw: EmbeddedGateway, idp: TestIdP) -> None:
    token = jwt_of(idp)
    echo = Echo.of(await request(gw.port, "GET", f"/bearer-query?a=1&access_token={token}"))
    assert echo.bearer == token and echo.path == "/bearer-query?a=1"  # hidden from the query
    assert_challenged(await bearer_call(gw, "/bearer-query", token), 401)  # header not allowed
    cookie = ("Cookie", f"theme=dark; at={token}")
    echo = Echo.of(await request(gw.port, "GET", "/bearer-cookie", headers=[cookie]))
    assert echo.bearer == token and echo.header_values("cookie") == ["theme=dark"]


# -- introspection: opaque tokens -----------------------------------------------------------------


async def test_an_opaque_token_is_introspected_once_then_cached(
    gw: EmbeddedGateway, idp: TestIdP
) -> None:
    token = opaque_of(idp)
    before = idp.stats()["introspection_requests"]
    for _ in range(3):
        assert Echo.of(await bearer_call(gw, "/introspect", token)).bearer == token
    assert idp.stats()["introspection_requests"] - before == 1


async def test_a_revoked_opaque_token_is_401(gw: EmbeddedGateway, idp: TestIdP) -> None:
    revoked = opaque_of(idp)
    idp.revoke(revoked, POST_CLIENT[0])
    assert_challenged(await bearer_call(gw, "/introspect", revoked), 401)
    # without cache_introspection, a token revoked after use is refused at once
    token = opaque_of(idp)
    assert Echo.of(await bearer_call(gw, "/introspect-fresh", token)).bearer == token
    idp.revoke(token, POST_CLIENT[0])
    assert_challenged(await bearer_call(gw, "/introspect-fresh", token), 401)


async def test_a_failing_introspection_endpoint_is_5xx_not_401(
    gw: EmbeddedGateway, idp: TestIdP
) -> None:
    idp.set_introspection_fail(503)
    response = await bearer_call(gw, "/introspect-fresh", opaque_of(idp))
    assert response.status == 502, (response.status, response.body)
    assert response.headers_named("www-authenticate") == []
    idp.set_introspection_fail(0)
    token = opaque_of(idp)
    assert Echo.of(await bearer_call(gw, "/introspect-fresh", token)).bearer == token


async def test_jwt_only_route_refuses_opaque_and_introspection_route_refuses_garbage(
    gw: EmbeddedGateway, idp: TestIdP
) -> None:
    assert_challenged(await bearer_call(gw, "/bearer", opaque_of(idp)), 401)
    assert_challenged(await bearer_call(gw, "/introspect", "no-such-token-0123456789"), 401)


# -- methods mixed on one route -------------------------------------------------------------------


async def test_client_credentials_and_bearer_on_one_route(
    gw: EmbeddedGateway, idp: TestIdP
) -> None:
    basic_header = ("Authorization", basic(*BASIC_CLIENT))
    swapped = Echo.of(await request(gw.port, "GET", "/mixed", headers=[basic_header]))
    assert swapped.bearer != "" and BASIC_CLIENT[1] not in swapped.text()
    own = jwt_of(idp)
    assert Echo.of(await bearer_call(gw, "/mixed", own)).bearer == own


async def test_kong_default_methods_take_basic_jwt_and_opaque(
    gw: EmbeddedGateway, idp: TestIdP
) -> None:
    header = ("Authorization", basic(*POST_CLIENT))
    assert Echo.of(await request(gw.port, "GET", "/default-methods", headers=[header])).bearer
    jwt = jwt_of(idp)
    assert Echo.of(await bearer_call(gw, "/default-methods", jwt)).bearer == jwt
    opaque = opaque_of(idp)
    assert Echo.of(await bearer_call(gw, "/default-methods", opaque)).bearer == opaque


# -- consumers and anonymous ----------------------------------------------------------------------


async def test_a_token_maps_to_its_consumer_and_spoofed_headers_are_dropped(
    gw: EmbeddedGateway, idp: TestIdP
) -> None:
    spoof = [("X-Consumer-Username", "admin"), ("X-Anonymous-Consumer", "true")]
    echo = Echo.of(await bearer_call(gw, "/consumers", jwt_of(idp, ALEX), headers=spoof))
    assert echo.header_values("x-consumer-username") == ["alex"]
    assert echo.header_values("x-consumer-custom-id") == ["alex-42"]
    assert len(echo.header_values("x-consumer-id")[0]) == 36
    assert echo.header_values("x-credential-identifier") == [ALEX[0]]  # credential_claim: sub
    assert echo.header_values("x-anonymous-consumer") == []


async def test_a_token_mapping_to_no_consumer_is_403(gw: EmbeddedGateway, idp: TestIdP) -> None:
    assert_challenged(await bearer_call(gw, "/consumers", jwt_of(idp, NOBODY)), 403)
    assert_challenged(await bearer_call(gw, "/consumers", jwt_of(idp, POST_CLIENT)), 403)


async def test_anonymous_lets_failed_requests_through_without_credentials(
    gw: EmbeddedGateway, idp: TestIdP
) -> None:
    for headers in ([], [("Authorization", "Bearer garbage.garbage.garbage")]):
        echo = Echo.of(await request(gw.port, "GET", "/anonymous", headers=headers))
        assert echo.header_values("x-anonymous-consumer") == ["true"]
        assert echo.header_values("x-consumer-username") == ["guest"]
        assert echo.header_values("authorization") == []
    token = jwt_of(idp)
    echo = Echo.of(await bearer_call(gw, "/anonymous", token))
    assert echo.bearer == token and echo.header_values("x-anonymous-consumer") == []


# -- preflight and bodies -------------------------------------------------------------------------


async def test_run_on_preflight_false_passes_options_through(gw: EmbeddedGateway) -> None:
    preflight = [("Origin", "https://app.example"), ("Access-Control-Request-Method", "GET")]
    response = await request(gw.port, "OPTIONS", "/no-preflight", headers=preflight)
    assert Echo.of(response).method == "OPTIONS"
    assert_challenged(await request(gw.port, "GET", "/no-preflight"), 401)
    assert_challenged(await request(gw.port, "OPTIONS", "/bearer"), 401)  # the default runs


async def test_multipart_body_credentials_are_read_and_hidden(gw: EmbeddedGateway) -> None:
    boundary = "fastgw-test-boundary"
    parts = [("client_id", POST_CLIENT[0]), ("client_secret", POST_CLIENT[1]), ("note", "kept")]
    body = (
        "".join(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
            for name, value in parts
        )
        + f"--{boundary}--\r\n"
    )
    content_type = ("Content-Type", f"multipart/form-data; boundary={boundary}")
    echo = Echo.of(
        await request(gw.port, "POST", "/body", headers=[content_type], body=body.encode())
    )
    assert echo.bearer
    assert POST_CLIENT[1] not in echo.body and 'name="note"\r\n\r\nkept' in echo.body


async def test_a_body_over_the_limit_is_413(gw: EmbeddedGateway) -> None:
    form = ("Content-Type", "application/x-www-form-urlencoded")
    body = f"client_id={POST_CLIENT[0]}&client_secret={POST_CLIENT[1]}&pad=".encode()
    response = await request(gw.port, "POST", "/body", headers=[form], body=body + b"x" * 5000)
    assert response.status == 413, (response.status, response.body)
    assert response.json() == {"message": "Request body too large to read credentials"}
