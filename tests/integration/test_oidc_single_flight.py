"""One token request per client however many first requests arrive at once: 200 concurrent
first requests for one client against a fresh gateway, ten gateways in a row, a real IdP."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from tests.integration.oidc_support import (  # noqa: F401  fixtures, used by name
    SECRETS,
    basic,
    echo_port,
    fastgw_logs,
    gateway_config,
    no_secrets_in_caplog,
    oidc,
    request,
    running_gateway,
)
from tests.support.idp import BASIC_CLIENT, TestIdP

pytestmark = pytest.mark.integration

GATEWAY_RUNS = 10
CONCURRENT_FIRST_REQUESTS = 200

SECRETS.add_client(*BASIC_CLIENT)


@pytest.fixture(scope="module")
def idp() -> Iterator[TestIdP]:
    with TestIdP(alg="RS256") as server:
        yield server


async def test_concurrent_first_requests_make_one_token_call(idp: TestIdP, echo_port: int) -> None:
    config = gateway_config(echo_port, {"/api": oidc(idp, client_auth=["client_secret_basic"])})
    authorization = basic(*BASIC_CLIENT)
    calls = []
    for _ in range(GATEWAY_RUNS):
        idp.reset_stats()
        with running_gateway(config) as gw:
            responses = await asyncio.gather(
                *(
                    request(gw.port, target="/api/x", headers=[("Authorization", authorization)])
                    for _ in range(CONCURRENT_FIRST_REQUESTS)
                )
            )
        assert [r.status for r in responses] == [200] * CONCURRENT_FIRST_REQUESTS
        calls.append(idp.stats()["token_requests"])
    assert calls == [1] * GATEWAY_RUNS
