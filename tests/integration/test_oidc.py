"""openid-connect against a real OpenID provider (oidc-provider), a real upstream and the gateway.

One RS256 IdP and one ES256 IdP for the module; one gateway whose routes each carry their own
plugin instance (own cache), so tests do not share cached tokens. IdP calls are counted on the
IdP's side (`/_test/stats`). Tests that stop or restart an IdP, or wait for tokens to expire, are
in test_oidc_resilience.py.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest

from tests.integration.oidc_support import (  # noqa: F401  fixtures, used by name  # the fixtures are used by name
    FORBIDDEN_CHALLENGE,
    SECRETS,
    UNAUTHORIZED_CHALLENGE,
    Echo,
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
from tests.support.idp import (
    BASIC_CLIENT,
    JWT_CLIENT,
    ODD_CLIENT,
    PKJWT_CLIENT_ID,
    POST_CLIENT,
    IdpClient,
    TestIdP,
    default_clients,
)

pytestmark = pytest.mark.integration

# A client whose secret holds what RFC 7617 allows after the first colon: more colons, `%`, `+`,
# `/` (the gateway must form-encode it for client_secret_basic at the IdP, RFC 6749 §2.3.1).
PCT_CLIENT = ("pct-client", "p%25ss:w0rd/+x%")
# The gateway-side secret private_key_jwt callers present (the IdP never sees it).
PKJWT_GATEWAY_SECRET = "pkjwt-gateway-side-secret-4f1c"
WRONG_SECRET = "definitely-not-the-secret-9a7e"
COUNTERS = (
    "token_requests",
    "token_success",
    "token_errors",
    "jwks_requests",
    "discovery_requests",
)

FORM = ("Content-Type", "application/x-www-form-urlencoded")
JSON_TYPE = ("Content-Type", "application/json")
ODD_FORM = "client_id=odd%3Aclient&client_secret=s3cr%25t%3Awith%2Fcolon%2Bplus"

for _id, _secret in (BASIC_CLIENT, POST_CLIENT, JWT_CLIENT, ODD_CLIENT, PCT_CLIENT):
    SECRETS.add_client(_id, _secret)
SECRETS.add_client(PKJWT_CLIENT_ID, PKJWT_GATEWAY_SECRET)
SECRETS.add_client(BASIC_CLIENT[0], WRONG_SECRET)
SECRETS.add_client(PKJWT_CLIENT_ID, WRONG_SECRET)


def counters(idp: TestIdP) -> dict[str, int]:
    stats = idp.stats()
    return {name: stats[name] for name in COUNTERS}


# -- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def idp() -> Iterator[TestIdP]:
    clients = [*default_clients(), IdpClient(*PCT_CLIENT, "client_secret_basic")]
    with TestIdP(alg="RS256", clients=clients) as server:
        private_jwk = server.clients[PKJWT_CLIENT_ID].private_jwk
        assert private_jwk is not None
        SECRETS.add(private_jwk["d"])
        yield server


@pytest.fixture(scope="module")
def idp_es256() -> Iterator[TestIdP]:
    with TestIdP(alg="ES256") as server:
        yield server


@pytest.fixture(autouse=True)
def _idp_switches_off(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    for name in ("idp", "idp_es256"):
        if name in request.fixturenames:
            server = request.getfixturevalue(name)
            if server.running:
                server.set_delay(0)
                server.set_fail(0)


@pytest.fixture(scope="module")
def gw(idp: TestIdP, echo_port: int) -> Iterator[EmbeddedGateway]:
    jwk = idp.clients[PKJWT_CLIENT_ID].private_jwk
    all_sources = ["header", "body", "query"]
    routes = {
        "/basic": oidc(idp, client_auth=["client_secret_basic"]),
        "/post": oidc(idp, client_auth=["client_secret_post"]),
        "/jwt": oidc(idp, client_auth=["client_secret_jwt"]),
        "/pkjwt": oidc(
            idp,
            client_id=[PKJWT_CLIENT_ID],
            client_secret=[PKJWT_GATEWAY_SECRET],
            client_auth=["private_key_jwt"],
            client_jwk=[jwk],
        ),
        "/sources": oidc(
            idp,
            client_auth=["client_secret_post"],
            client_credentials_param_type=all_sources,
            hide_credentials=False,
        ),
        "/hide": oidc(
            idp,
            client_auth=["client_secret_post"],
            client_credentials_param_type=all_sources,
            hide_credentials=True,
        ),
        "/header-only": oidc(
            idp, client_auth=["client_secret_post"], client_credentials_param_type=["header"]
        ),
        "/neg": oidc(idp, client_auth=["client_secret_basic"], cache_ttl_neg=30),
        "/display": oidc(idp, client_auth=["client_secret_basic"], display_errors=True),
        "/single": oidc(idp, client_auth=["client_secret_basic"]),
        "/unavailable": oidc(idp, client_auth=["client_secret_basic"]),
        "/scope-has": oidc(idp, scopes=["read"], scopes_required=["read"]),
        "/scope-any": oidc(idp, scopes=["read"], scopes_required=["write admin", "read"]),
        "/scope-lacks": oidc(idp, scopes=["read"], scopes_required=["write"]),
    }
    with running_gateway(gateway_config(echo_port, routes)) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def gw_es256(idp_es256: TestIdP, echo_port: int) -> Iterator[EmbeddedGateway]:
    routes = {"/es": oidc(idp_es256, client_auth=["client_secret_post"])}
    with running_gateway(gateway_config(echo_port, routes)) as gateway:
        yield gateway


def assert_clean_upstream(echo: Echo, *secrets: str) -> None:
    """The caller's credentials did not reach the upstream: no Basic, no secret anywhere."""
    text = echo.text()
    for secret in secrets:
        assert secret not in text, f"upstream saw the secret {secret[:4]}..."
    for value in echo.header_values("authorization"):
        assert not value.lower().startswith("basic"), value


def assert_unauthorized(response) -> None:
    assert response.status == 401, (response.status, response.body)
    assert response.headers_named("www-authenticate") == [UNAUTHORIZED_CHALLENGE]
    assert response.json() == {"message": "Unauthorized"}


# -- each client auth method ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "client_id", "client_secret", "how"),
    [
        ("/basic", *BASIC_CLIENT, "header"),
        ("/basic", *PCT_CLIENT, "header"),  # colons and % in the secret
        # an id holding ":" cannot travel in RFC 7617 Basic: the caller sends it in a form body,
        # the gateway still authenticates at the IdP with client_secret_basic
        ("/basic", *ODD_CLIENT, "form"),
        ("/post", *POST_CLIENT, "header"),
        ("/post", *ODD_CLIENT, "form"),
        ("/jwt", *JWT_CLIENT, "header"),
        ("/pkjwt", PKJWT_CLIENT_ID, PKJWT_GATEWAY_SECRET, "header"),
    ],
    ids=["basic", "basic-pct-secret", "basic-odd", "post", "post-odd", "secret-jwt", "pk-jwt"],
)
async def test_client_auth_method_gets_a_verified_token_upstream(
    gw: EmbeddedGateway, idp: TestIdP, path: str, client_id: str, client_secret: str, how: str
) -> None:
    async def call(target: str) -> Echo:
        if how == "header":
            header = ("Authorization", basic(client_id, client_secret))
            return Echo.of(await request(gw.port, "GET", target, headers=[header]))
        assert client_id == ODD_CLIENT[0]
        body = ODD_FORM.encode()
        return Echo.of(await request(gw.port, "POST", target, headers=[FORM], body=body))

    before = counters(idp)
    echo = await call(f"{path}/x")
    claims = verify_token(idp, echo.bearer)
    assert claims["client_id"] == client_id
    assert claims["sub"] == client_id
    after = counters(idp)
    assert after["token_success"] - before["token_success"] == 1
    assert after["token_errors"] == before["token_errors"]
    if how == "header":
        assert_clean_upstream(echo, client_secret)

    # the second request is a cache hit: same token, no IdP call
    assert (await call(f"{path}/y")).bearer == echo.bearer
    assert counters(idp)["token_requests"] == after["token_requests"]


async def test_private_key_jwt_wrong_gateway_secret_never_reaches_the_idp(
    gw: EmbeddedGateway, idp: TestIdP
) -> None:
    before = counters(idp)
    response = await request(
        gw.port,
        "GET",
        "/pkjwt/x",
        headers=[("Authorization", basic(PKJWT_CLIENT_ID, WRONG_SECRET))],
    )
    assert_unauthorized(response)
    assert counters(idp) == before


async def test_es256_tokens(gw_es256: EmbeddedGateway, idp_es256: TestIdP) -> None:
    response = await request(
        gw_es256.port, "GET", "/es/x", headers=[("Authorization", basic(*POST_CLIENT))]
    )
    echo = Echo.of(response)
    claims = verify_token(idp_es256, echo.bearer)  # checks the header says ES256 too
    assert claims["client_id"] == POST_CLIENT[0]
    assert_clean_upstream(echo, POST_CLIENT[1])


# -- where the credentials come from, and hide_credentials ----------------------------------------


async def test_header_credentials_are_replaced_by_the_bearer_token(
    gw: EmbeddedGateway, idp: TestIdP
) -> None:
    for path in ("/sources", "/hide"):
        response = await request(
            gw.port,
            "GET",
            f"{path}/h?keep=1",
            headers=[("Authorization", basic(*POST_CLIENT)), ("X-Other", "stays")],
        )
        echo = Echo.of(response)
        verify_token(idp, echo.bearer)
        assert echo.path == f"{path}/h?keep=1"
        assert echo.header_values("x-other") == ["stays"]
        assert_clean_upstream(echo, POST_CLIENT[1])


FORM_BODY = b"a=1&client_id=post-client&note=two%20words&client_secret=post-secret&z="
JSON_BODY = b'{"client_id": "post-client", "keep": {"n": 1}, "client_secret": "post-secret"}'


@pytest.mark.parametrize("hide", [False, True], ids=["forwarded", "hidden"])
async def test_form_body_credentials(gw: EmbeddedGateway, idp: TestIdP, hide: bool) -> None:
    path = "/hide" if hide else "/sources"
    response = await request(gw.port, "POST", f"{path}/f", headers=[FORM], body=FORM_BODY)
    echo = Echo.of(response)
    verify_token(idp, echo.bearer)
    if hide:
        assert echo.body == "a=1&note=two%20words&z="  # the rest keeps its exact bytes
        assert echo.header_values("content-length") == [str(len(echo.body))]
        assert_clean_upstream(echo, POST_CLIENT[1])
    else:
        assert echo.body == FORM_BODY.decode()  # forwarded intact
        assert echo.header_values("content-length") == [str(len(FORM_BODY))]


@pytest.mark.parametrize("hide", [False, True], ids=["forwarded", "hidden"])
async def test_json_body_credentials(gw: EmbeddedGateway, idp: TestIdP, hide: bool) -> None:
    path = "/hide" if hide else "/sources"
    response = await request(gw.port, "POST", f"{path}/j", headers=[JSON_TYPE], body=JSON_BODY)
    echo = Echo.of(response)
    verify_token(idp, echo.bearer)
    if hide:
        assert json.loads(echo.body) == {"keep": {"n": 1}}
        assert echo.header_values("content-length") == [str(len(echo.body))]
        assert_clean_upstream(echo, POST_CLIENT[1])
    else:
        assert echo.body == JSON_BODY.decode()


@pytest.mark.parametrize("hide", [False, True], ids=["forwarded", "hidden"])
async def test_query_credentials(gw: EmbeddedGateway, idp: TestIdP, hide: bool) -> None:
    path = "/hide" if hide else "/sources"
    query = "x=1&client_id=post-client&client_secret=post-secret&y=%2F"
    echo = Echo.of(await request(gw.port, "GET", f"{path}/q?{query}"))
    verify_token(idp, echo.bearer)
    if hide:
        assert echo.path == f"{path}/q?x=1&y=%2F"
        assert_clean_upstream(echo, POST_CLIENT[1])
    else:
        assert echo.path == f"{path}/q?{query}"


async def test_sources_not_allowed_by_param_type_are_ignored(
    gw: EmbeddedGateway, idp: TestIdP
) -> None:
    before = counters(idp)
    body = b"client_id=post-client&client_secret=post-secret"
    from_body = await request(gw.port, "POST", "/header-only/b", headers=[FORM], body=body)
    from_query = await request(gw.port, "GET", "/header-only/q?" + body.decode())
    no_credentials = await request(gw.port, "GET", "/header-only/n")
    for response in (from_body, from_query, no_credentials):
        assert_unauthorized(response)
    assert counters(idp) == before
    header = await request(
        gw.port, "GET", "/header-only/h", headers=[("Authorization", basic(*POST_CLIENT))]
    )
    verify_token(idp, Echo.of(header).bearer)


# -- rejections and the negative cache ------------------------------------------------------------


async def test_wrong_secret_is_401_and_a_retry_within_cache_ttl_neg_stays_off_the_idp(
    gw: EmbeddedGateway, idp: TestIdP
) -> None:
    wrong = basic(BASIC_CLIENT[0], WRONG_SECRET)
    before = counters(idp)
    assert_unauthorized(await request(gw.port, "GET", "/neg/x", headers=[("Authorization", wrong)]))
    after_first = counters(idp)
    assert after_first["token_requests"] - before["token_requests"] == 1
    assert after_first["token_errors"] - before["token_errors"] == 1

    # the same wrong credentials again: from the header, and from a form body (another cache key)
    assert_unauthorized(await request(gw.port, "GET", "/neg/y", headers=[("Authorization", wrong)]))
    form = f"client_id={BASIC_CLIENT[0]}&client_secret={WRONG_SECRET}".encode()
    assert_unauthorized(await request(gw.port, "POST", "/neg/z", headers=[FORM], body=form))
    assert counters(idp) == after_first

    # the right secret for the same client is not affected by the remembered rejection
    good = await request(
        gw.port, "GET", "/neg/ok", headers=[("Authorization", basic(*BASIC_CLIENT))]
    )
    verify_token(idp, Echo.of(good).bearer)


async def test_display_errors_gives_a_reason_but_no_secret(gw: EmbeddedGateway) -> None:
    wrong = basic(BASIC_CLIENT[0], WRONG_SECRET)
    response = await request(gw.port, "GET", "/display/x", headers=[("Authorization", wrong)])
    assert response.status == 401, (response.status, response.body)
    message = response.json()["message"]
    assert message.startswith("Unauthorized (") and len(message) > len("Unauthorized ()")
    challenge = response.header("www-authenticate") or ""
    assert challenge.startswith(UNAUTHORIZED_CHALLENGE + ', error_description="'), challenge
    assert_no_secrets_in(f"{response.headers}\n{response.body!r}", "the 401 answer")


@pytest.mark.parametrize(
    "authorization",
    ["Basic !!!notbase64", "Basic " + "bm9jb2xvbg==", "Basic " + "OnNlY3JldA==", "Bearer abc"],
    ids=["bad-base64", "no-colon", "empty-id", "not-basic"],
)
async def test_malformed_credentials_are_401(
    gw: EmbeddedGateway, idp: TestIdP, authorization: str
) -> None:
    before = counters(idp)
    response = await request(gw.port, "GET", "/basic/x", headers=[("Authorization", authorization)])
    assert_unauthorized(response)
    assert counters(idp) == before


# -- single-flight --------------------------------------------------------------------------------


async def test_100_concurrent_first_requests_make_one_token_call(
    gw: EmbeddedGateway, idp: TestIdP
) -> None:
    idp.set_delay(300)
    before = counters(idp)
    header = [("Authorization", basic(*BASIC_CLIENT))]
    responses = await asyncio.gather(
        *(request(gw.port, "GET", f"/single/{i}", headers=header) for i in range(100))
    )
    tokens = {Echo.of(response).bearer for response in responses}
    after = counters(idp)
    assert after["token_requests"] - before["token_requests"] == 1
    assert len(tokens) == 1
    verify_token(idp, tokens.pop())


# -- scopes ---------------------------------------------------------------------------------------


async def test_scopes_required(gw: EmbeddedGateway, idp: TestIdP) -> None:
    header = [("Authorization", basic(*POST_CLIENT))]
    for path in ("/scope-has", "/scope-any"):
        echo = Echo.of(await request(gw.port, "GET", f"{path}/x", headers=header))
        assert "read" in verify_token(idp, echo.bearer)["scope"].split()

    lacking = await request(gw.port, "GET", "/scope-lacks/x", headers=header)
    assert lacking.status == 403, (lacking.status, lacking.body)
    assert lacking.headers_named("www-authenticate") == [FORBIDDEN_CHALLENGE]
    assert lacking.json() == {"message": "Forbidden"}


# -- the IdP failing ------------------------------------------------------------------------------


async def test_idp_503_with_nothing_cached_is_502_without_a_challenge(
    gw: EmbeddedGateway, idp: TestIdP
) -> None:
    header = [("Authorization", basic(*POST_CLIENT))]
    idp.set_fail(503)
    before = counters(idp)
    response = await request(gw.port, "GET", "/unavailable/x", headers=header)
    assert response.status == 502, (response.status, response.body)
    assert response.headers_named("www-authenticate") == []
    assert "identity provider" in response.json()["message"]
    assert counters(idp)["token_requests"] - before["token_requests"] == 1

    # an IdP outage is not remembered as a rejection: the client gets in once the IdP is back
    idp.set_fail(0)
    echo = Echo.of(await request(gw.port, "GET", "/unavailable/y", headers=header))
    verify_token(idp, echo.bearer)


# -- logs (last: checks everything the module logged so far) --------------------------------------


def test_no_secret_or_token_in_the_logs(fastgw_logs: LogCollector) -> None:
    assert any(value.count(".") == 2 for value in SECRETS.values), "no token was recorded"
    assert_no_secrets_in(fastgw_logs.text(), "the fastgw log")
