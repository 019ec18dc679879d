"""Kong's documentation examples (tests/kong_examples/, copied as files) load and behave as the
docs describe, a decK dump with `_info`, tags and a vault secret loads and serves, and
`fastgw check` reports an issuer the config does not accept, naming both values.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.oidc_support import (  # noqa: F401  fixtures, used by name
    FORBIDDEN_CHALLENGE,
    SECRETS,
    UNAUTHORIZED_CHALLENGE,
    Echo,
    EmbeddedGateway,
    Response,
    basic,
    collect_fastgw_logs,
    echo_port,
    fastgw_logs,
    no_secrets_in_caplog,
    request,
    running_gateway,
    wait_until,
)
from tests.support.idp import BASIC_CLIENT, POST_CLIENT, IdpClient, TestIdP, default_clients

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "tests" / "kong_examples"
ALEX = ("alex-app", "alex-app-secret")  # tokens say preferred_username: alex
NOBODY = ("nobody-app", "nobody-app-secret")
VAULT_SECRET = "BILLING_IDP_CLIENT_SECRET"
FORM = ("Content-Type", "application/x-www-form-urlencoded")
for _id, _secret in (BASIC_CLIENT, POST_CLIENT, ALEX, NOBODY):
    SECRETS.add_client(_id, _secret)


@pytest.fixture(scope="module")
def idp() -> Iterator[TestIdP]:
    clients = [
        *default_clients(),
        IdpClient(*ALEX, "client_secret_post"),
        IdpClient(*NOBODY, "client_secret_post"),
    ]
    claims = {ALEX[0]: {"preferred_username": "alex"}, NOBODY[0]: {"preferred_username": "nobody"}}
    with TestIdP(clients=clients, token_claims=claims) as server:
        yield server


def deck_env(idp: TestIdP, echo_port: int) -> dict[str, str]:
    """The DECK_* variables Kong's examples name, pointing at the test IdP and upstream."""
    return {
        "DECK_ISSUER": idp.issuer,
        "DECK_CLIENT_ID": POST_CLIENT[0],
        "DECK_CLIENT_SECRET": POST_CLIENT[1],
        "DECK_UPSTREAM_URL": f"http://127.0.0.1:{echo_port}",
        "DECK_TOKEN_SALT": "example-salt",
        VAULT_SECRET: POST_CLIENT[1],
    }


@pytest.fixture(scope="module")
def example(idp: TestIdP, echo_port: int) -> Iterator[dict[str, EmbeddedGateway]]:
    gateways: dict[str, EmbeddedGateway] = {}
    stack = []
    try:
        for name in (
            "client-credentials",
            "jwt-access-token",
            "introspection-auth",
            "consumer-auth",
        ):
            text = (EXAMPLES / f"{name}.yaml").read_text()
            context = running_gateway(text, deck_env(idp, echo_port))
            gateways[name] = context.__enter__()
            stack.append(context)
        yield gateways
    finally:
        for context in reversed(stack):
            context.__exit__(None, None, None)


def token(idp: TestIdP, client: tuple[str, str] = BASIC_CLIENT) -> str:
    value = idp.token(*client)["access_token"]
    SECRETS.add_token(value)
    return str(value)


def assert_refused(response: Response, status: int = 401) -> None:
    assert response.status == status, (response.status, response.body)
    challenge = UNAUTHORIZED_CHALLENGE if status == 401 else FORBIDDEN_CHALLENGE
    assert response.headers_named("www-authenticate") == [challenge]


# -- "Client credentials grant in header" ---------------------------------------------------------


async def test_client_credentials_example_takes_them_from_a_header_only(
    example: dict[str, EmbeddedGateway], idp: TestIdP
) -> None:
    port = example["client-credentials"].port
    header = ("Authorization", basic(*BASIC_CLIENT))
    echo = Echo.of(await request(port, "GET", "/anything", headers=[header]))
    assert echo.bearer and BASIC_CLIENT[1] not in echo.text()
    body = f"client_id={BASIC_CLIENT[0]}&client_secret={BASIC_CLIENT[1]}".encode()
    assert_refused(await request(port, "POST", "/anything", headers=[FORM], body=body))
    assert_refused(await request(port, "GET", f"/anything?{body.decode()}"))


# -- "JWT access token authentication" ------------------------------------------------------------


async def test_jwt_example_takes_a_bearer_token_from_the_query_only(
    example: dict[str, EmbeddedGateway], idp: TestIdP
) -> None:
    port = example["jwt-access-token"].port
    jwt = token(idp)
    echo = Echo.of(await request(port, "GET", f"/anything?access_token={jwt}"))
    assert echo.bearer == jwt
    assert_refused(
        await request(port, "GET", "/anything", headers=[("Authorization", f"Bearer {jwt}")])
    )


# -- "Introspection authentication" ---------------------------------------------------------------


async def test_introspection_example_takes_a_header_token_and_asks_the_idp(
    example: dict[str, EmbeddedGateway], idp: TestIdP
) -> None:
    port = example["introspection-auth"].port
    opaque = idp.opaque_token(BASIC_CLIENT[0])
    SECRETS.add_token(opaque)
    before = idp.stats()["introspection_requests"]
    echo = Echo.of(
        await request(port, "GET", "/anything", headers=[("Authorization", f"Bearer {opaque}")])
    )
    assert echo.bearer == opaque
    assert idp.stats()["introspection_requests"] == before + 1
    assert_refused(await request(port, "GET", f"/anything?access_token={opaque}"))
    revoked = idp.opaque_token(BASIC_CLIENT[0])
    SECRETS.add_token(revoked)
    idp.revoke(revoked, BASIC_CLIENT[0])
    assert_refused(
        await request(port, "GET", "/anything", headers=[("Authorization", f"Bearer {revoked}")])
    )


# -- "Consumer authorization" ---------------------------------------------------------------------


async def test_consumer_example_maps_alex_and_refuses_who_has_no_consumer(
    example: dict[str, EmbeddedGateway],
) -> None:
    port = example["consumer-auth"].port
    echo = Echo.of(
        await request(port, "GET", "/anything", headers=[("Authorization", basic(*ALEX))])
    )
    assert echo.header_values("x-consumer-username") == ["alex"]
    assert len(echo.header_values("x-consumer-id")[0]) == 36
    assert echo.bearer
    assert_refused(
        await request(port, "GET", "/anything", headers=[("Authorization", basic(*NOBODY))]), 403
    )


# -- a decK dump ----------------------------------------------------------------------------------


def dump_text(echo_port: int) -> str:
    return (EXAMPLES / "deck-dump.yaml").read_text().replace("port: 54321", f"port: {echo_port}")


async def test_a_deck_dump_with_info_tags_and_a_vault_secret_loads_and_serves(
    idp: TestIdP, echo_port: int
) -> None:
    env = deck_env(idp, echo_port)
    with running_gateway(dump_text(echo_port), env) as gateway:
        (plugin,) = gateway.gateway.plugins
        assert plugin.authenticator.config.clients[0].client_secret == POST_CLIENT[1]  # type: ignore[attr-defined]
        header = ("Authorization", basic(*POST_CLIENT))
        assert Echo.of(await request(gateway.port, "GET", "/billing/x", headers=[header])).bearer
        # Kong's default auth_methods (all of them) enable the supported ones: a JWT passes too
        jwt = token(idp)
        bearer = ("Authorization", f"Bearer {jwt}")
        assert (
            Echo.of(await request(gateway.port, "GET", "/billing", headers=[bearer])).bearer == jwt
        )


def check(path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fastgw", "check", "-c", str(path)],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_fastgw_check_accepts_the_dump_and_the_examples(
    idp: TestIdP, echo_port: int, tmp_path: Path
) -> None:
    env = deck_env(idp, echo_port)
    dump = tmp_path / "kong.yaml"
    dump.write_text(dump_text(echo_port))
    result = check(dump, env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{dump}: ok (1 services, 1 routes, 1 plugins, 1 consumers)"
    for name in ("client-credentials", "jwt-access-token", "introspection-auth", "consumer-auth"):
        result = check(EXAMPLES / f"{name}.yaml", env)
        assert result.returncode == 0, (name, result.stdout, result.stderr)


def test_a_missing_vault_secret_is_an_error_naming_the_key(
    idp: TestIdP, echo_port: int, tmp_path: Path
) -> None:
    env = deck_env(idp, echo_port)
    del env[VAULT_SECRET]
    dump = tmp_path / "kong.yaml"
    dump.write_text(dump_text(echo_port))
    result = check(dump, env)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f'plugins[0].config.client_secret[0]: environment variable "{VAULT_SECRET}" is not set',
        f"{dump}: 1 error(s)",
    ]


# -- the IdP reached by an internal name ----------------------------------------------------------

PUBLIC_ISSUER = "https://login.example.com/realms/main"


@pytest.fixture(scope="module")
def internal_idp() -> Iterator[TestIdP]:
    """An IdP that announces a public issuer while the gateway reaches it on 127.0.0.1 (the
    container setup: `http://keycloak:8080` inside, the public name in tokens)."""
    with TestIdP(public_issuer=PUBLIC_ISSUER) as server:
        yield server


def internal_config(idp: TestIdP, echo_port: int, *, allowed: bool) -> str:
    config: dict[str, object] = {"issuer": idp.url, "auth_methods": ["bearer"], "timeout": 3000}
    if allowed:
        config["issuers_allowed"] = [PUBLIC_ISSUER]
    return json.dumps(
        {
            "_format_version": "3.0",
            "_fastgw": {"admin_listen": None},
            "services": [
                {
                    "name": "s",
                    "url": f"http://127.0.0.1:{echo_port}",
                    "routes": [{"paths": ["/"]}],
                    "plugins": [{"name": "openid-connect", "config": config}],
                }
            ],
        }
    )


def test_fastgw_check_names_both_issuers_when_they_differ(
    internal_idp: TestIdP, echo_port: int, tmp_path: Path
) -> None:
    path = tmp_path / "kong.json"
    path.write_text(internal_config(internal_idp, echo_port, allowed=False))
    result = check(path, {})
    assert result.returncode == 1, result.stdout
    discovery = f"{internal_idp.url}/.well-known/openid-configuration"
    assert result.stderr.splitlines() == [
        f"services[0].plugins[0].config.issuer: discovery document at {discovery} names the "
        f'issuer "{PUBLIC_ISSUER}", not the configured "{internal_idp.url}"; if the IdP is '
        f'reached by another name, add "{PUBLIC_ISSUER}" to issuers_allowed',
        f"{path}: 1 error(s)",
    ]
    path.write_text(internal_config(internal_idp, echo_port, allowed=True))
    result = check(path, {})
    assert result.returncode == 0, result.stderr


def test_an_unreachable_idp_is_only_a_note(tmp_path: Path, closed_port: int) -> None:
    document = {
        "_format_version": "3.0",
        "services": [
            {
                "url": "http://127.0.0.1:9",
                "routes": [{"paths": ["/"]}],
                "plugins": [
                    {
                        "name": "openid-connect",
                        "config": {"issuer": f"http://127.0.0.1:{closed_port}"},
                    }
                ],
            }
        ],
    }
    path = tmp_path / "kong.json"
    path.write_text(json.dumps(document))
    result = check(path, {})
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].startswith(
        "services[0].plugins[0].config.issuer: note: not checked: discovery unreachable"
    )


async def test_the_mismatch_is_reported_at_start_and_issuers_allowed_serves(
    internal_idp: TestIdP, echo_port: int
) -> None:
    refused = internal_config(internal_idp, echo_port, allowed=False)
    with collect_fastgw_logs() as logs, running_gateway(refused) as gateway:
        assert wait_until(lambda: "names the issuer" in logs.text())
        jwt = internal_idp.token(*BASIC_CLIENT)["access_token"]
        SECRETS.add_token(jwt)
        response = await request(
            gateway.port, "GET", "/", headers=[("Authorization", f"Bearer {jwt}")]
        )
        assert response.status == 502, response.body  # the IdP's document is refused
    line = next(line for line in logs.lines if "names the issuer" in line)
    assert line.startswith("ERROR fastgw.oidc")
    assert PUBLIC_ISSUER in line and internal_idp.url in line
    with running_gateway(internal_config(internal_idp, echo_port, allowed=True)) as gateway:
        response = await request(
            gateway.port, "GET", "/", headers=[("Authorization", f"Bearer {jwt}")]
        )
        assert Echo.of(response).bearer == jwt
