"""openid-connect when the IdP changes under the gateway: key rotation, an outage, short tokens.

Each test owns its IdP (it restarts or stops it, or needs a short token lifetime) and a gateway
for it; the echo upstream is shared. IdP calls are counted on the IdP's side.
"""

from __future__ import annotations

import asyncio
import time

import jwt
import pytest

from tests.integration.oidc_support import (  # noqa: F401  fixtures, used by name  # the fixtures are used by name
    SECRETS,
    EmbeddedGateway,
    LogCollector,
    assert_no_secrets_in,
    basic,
    echo_port,
    fastgw_logs,
    gateway_config,
    no_secrets_in_caplog,
    oidc,
    request,
    running_gateway,
    verify_token,
)
from tests.integration.oidc_support import Echo as Echoed
from tests.support.idp import BASIC_CLIENT, JWT_CLIENT, POST_CLIENT, TestIdP

pytestmark = pytest.mark.integration

for _id, _secret in (BASIC_CLIENT, POST_CLIENT, JWT_CLIENT):
    SECRETS.add_client(_id, _secret)

# Short-lived tokens: long enough that a refresh window (10% of the lifetime) outlasts the
# injected IdP delay, short enough that the test sees more than one lifetime in a few seconds.
SHORT_TTL = 4  # seconds, as issued by the IdP
IDP_DELAY_MS = 120  # during the steady phase: any request that waited for the IdP would show it


def one_route(idp: TestIdP, echo_port: int, **config: object) -> str:
    return gateway_config(echo_port, {"/api": oidc(idp, **config)})


async def bearer_for(
    gateway: EmbeddedGateway, client: tuple[str, str], path: str = "/api/x"
) -> str:
    response = await request(gateway.port, "GET", path, headers=[("Authorization", basic(*client))])
    return Echoed.of(response).bearer


# -- key rotation ---------------------------------------------------------------------------------


async def test_idp_restarted_with_new_signing_keys(echo_port: int) -> None:
    with TestIdP(alg="RS256") as idp:
        config = one_route(
            idp, echo_port, client_auth=["client_secret_post"], rediscovery_lifetime=0
        )
        with running_gateway(config) as gateway:
            first = await bearer_for(gateway, BASIC_CLIENT)
            old_kid = jwt.get_unverified_header(first)["kid"]
            verify_token(idp, first)

            await asyncio.to_thread(idp.restart)  # same port and issuer, new keys
            new_kids = {key["kid"] for key in idp.jwks()["keys"]}
            assert old_kid not in new_kids

            # the cached client keeps its (still valid) token without asking the IdP
            assert await bearer_for(gateway, BASIC_CLIENT) == first
            # a new client gets a token signed with a kid the gateway has never seen
            fresh = await bearer_for(gateway, POST_CLIENT)
            assert jwt.get_unverified_header(fresh)["kid"] in new_kids
            assert verify_token(idp, fresh)["client_id"] == POST_CLIENT[0]
            stats = idp.stats()  # a new process: counts since the restart
            assert stats["token_success"] == 1
            assert stats["jwks_requests"] >= 1  # the unknown kid made the gateway re-fetch


# -- an IdP outage --------------------------------------------------------------------------------


async def test_idp_stopped_cached_clients_keep_working_new_clients_get_502(
    echo_port: int,
) -> None:
    with TestIdP(alg="ES256") as idp:
        config = one_route(idp, echo_port, client_auth=["client_secret_post"], timeout=2000)
        with running_gateway(config) as gateway:
            cached = await bearer_for(gateway, BASIC_CLIENT)
            verify_token(idp, cached)
            await asyncio.to_thread(idp.stop)

            for path in ("/api/a", "/api/b"):
                assert await bearer_for(gateway, BASIC_CLIENT, path) == cached

            for client in (POST_CLIENT, JWT_CLIENT):
                response = await request(
                    gateway.port, "GET", "/api/new", headers=[("Authorization", basic(*client))]
                )
                assert response.status in (502, 504), (response.status, response.body)
                assert response.headers_named("www-authenticate") == []
                message = response.json()["message"]
                assert "identity provider" in message, message
                assert response.elapsed < 2.5  # within the configured IdP timeout


# -- refresh ahead of expiry ----------------------------------------------------------------------


async def test_short_lived_tokens_are_refreshed_ahead_without_a_request_waiting(
    echo_port: int,
) -> None:
    with TestIdP(alg="RS256", access_token_ttl=SHORT_TTL) as idp:
        config = one_route(idp, echo_port, client_auth=["client_secret_basic"])
        with running_gateway(config) as gateway:
            first = await bearer_for(gateway, BASIC_CLIENT)  # the only request allowed to wait
            assert verify_token(idp, first)["exp"] - time.time() <= SHORT_TTL
            token_calls = idp.stats()["token_requests"]
            (plugin,) = gateway.gateway.plugins
            waited = plugin.authenticator.waited_for_token
            assert waited == 1
            idp.set_delay(IDP_DELAY_MS)

            header = [("Authorization", basic(*BASIC_CLIENT))]
            served: list[tuple[float, str]] = []
            deadline = time.monotonic() + SHORT_TTL * 1.4
            while time.monotonic() < deadline:
                sent_at = time.time()
                response = await request(gateway.port, "GET", "/api/steady", headers=header)
                served.append((sent_at, Echoed.of(response).bearer))
                await asyncio.sleep(0.02)

            # Counted, not timed (the gateway shares this process: a GC pause here could make
            # any request slow): every request was served from the cache, none waited for the
            # IdP, although the token rolled over and the IdP answered 120 ms late.
            assert plugin.authenticator.waited_for_token == waited, "a request waited for a token"
            tokens = {token for _, token in served}
            assert len(tokens) >= 2, "the token served upstream never changed"
            assert idp.stats()["token_requests"] > token_calls
            for sent_at, token in served:  # never a token past its expiry
                assert sent_at < jwt.decode(token, options={"verify_signature": False})["exp"]
            verify_token(idp, served[-1][1])


# -- logs -----------------------------------------------------------------------------------------


def test_no_secret_or_token_in_the_logs(fastgw_logs: LogCollector) -> None:
    assert_no_secrets_in(fastgw_logs.text(), "the fastgw log")
