"""A protected hosts-only route must win over a catch-all path route (Kong's PLAIN_HOST_ONLY).

Before the fix, `GET /admin/users` with `Host: admin.example.com` went to the catch-all route:
no credentials, a wrong secret and a valid Basic header all reached the upstream, the last with
the caller's secret in it. Real IdP, real upstream, the gateway embedded.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.integration.oidc_support import (  # noqa: F401  fixtures, used by name
    SECRETS,
    Echo,
    EmbeddedGateway,
    basic,
    echo_port,
    fastgw_logs,
    no_secrets_in_caplog,
    oidc,
    request,
    running_gateway,
)
from tests.support.idp import BASIC_CLIENT, TestIdP, default_clients

pytestmark = pytest.mark.integration

ADMIN_HOST = "admin.example.com"


@pytest.fixture(scope="module")
def idp() -> Iterator[TestIdP]:
    with TestIdP(alg="RS256", clients=default_clients()) as server:
        SECRETS.add_client(*BASIC_CLIENT)
        yield server


@pytest.fixture(scope="module")
def gw(idp: TestIdP, echo_port: int) -> Iterator[EmbeddedGateway]:
    document = {
        "_format_version": "3.0",
        "services": [
            {
                "name": "admin-app",
                "url": f"http://127.0.0.1:{echo_port}",
                "routes": [
                    {
                        "name": "admin-host",
                        "hosts": [ADMIN_HOST],
                        "plugins": [{"name": "openid-connect", "config": oidc(idp)}],
                    }
                ],
            },
            {
                "name": "public-site",
                "url": f"http://127.0.0.1:{echo_port}",
                "routes": [{"name": "public-catch-all", "paths": ["/"]}],
            },
        ],
    }
    with running_gateway(json.dumps(document)) as gateway:
        yield gateway


async def test_the_hosts_route_authenticates_whatever_the_path(gw: EmbeddedGateway) -> None:
    for target in ("/admin/users", "/", "/a/much/longer/path/than/the/catch-all"):
        anonymous = await request(gw.port, target=target, host=ADMIN_HOST)
        assert anonymous.status == 401, (target, anonymous.body)
        wrong = await request(
            gw.port,
            target=target,
            host=ADMIN_HOST,
            headers=[("Authorization", basic(BASIC_CLIENT[0], "not-the-secret"))],
        )
        assert wrong.status == 401, (target, wrong.body)


async def test_valid_credentials_reach_the_upstream_as_a_bearer_token(
    gw: EmbeddedGateway,
) -> None:
    response = await request(
        gw.port,
        target="/admin/users",
        host=ADMIN_HOST,
        headers=[("Authorization", basic(*BASIC_CLIENT))],
    )
    echo = Echo.of(response)
    assert echo.bearer
    assert BASIC_CLIENT[1] not in echo.text()


async def test_other_hosts_still_take_the_catch_all(gw: EmbeddedGateway) -> None:
    response = await request(gw.port, target="/admin/users", host="www.example.com")
    assert Echo.of(response).header_values("authorization") == []
