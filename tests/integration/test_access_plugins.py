"""key-auth, basic-auth, jwt and acl with real parts: curl as the client, the real echo upstream
reporting what reached it, the gateway on real sockets. Configs in Kong's declarative shapes
(credentials nested under consumers), statuses and bodies as Kong's plugins answer."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.conftest import (
    PYTHON,
    ROOT,
    EchoUpstream,
    LineReader,
    free_port,
    stop_process,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("curl") is None, reason="curl is missing"),
]

ALICE_KEY = "alice-key-7f3c9a"
BOB_KEY = "bob-key-2d81e4"
ALICE_PASSWORD = "alice-pass:with-colon"
JWT_SECRET = "alice-jwt-secret-5be1"


@dataclass
class Answer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def get(self, name: str) -> str | None:
        return next((value for field, value in self.headers if field == name), None)

    def json(self) -> dict:
        return json.loads(self.body)

    def upstream(self, name: str) -> list[str]:
        """The values of request header `name` the echo upstream received."""
        assert self.status == 200, (self.status, self.body)
        return [value for key, value in self.json()["headers"] if key == name]


def curl(port: int, target: str, *args: str) -> Answer:
    """One request with curl; its response head and body."""
    result = subprocess.run(
        ["curl", "-sS", "--max-time", "5", "-D", "-", f"http://127.0.0.1:{port}{target}", *args],
        capture_output=True,
        timeout=10,
    )
    assert result.returncode == 0, result.stderr
    head, _, body = result.stdout.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.append((name.strip().lower(), value.strip()))
    return Answer(int(lines[0].split()[1]), headers, body)


def message(answer: Answer) -> str:
    return answer.json()["message"]


CONSUMERS = f"""
consumers:
  - username: alice
    custom_id: alice-42
    keyauth_credentials: [{{id: 5f35b796-ced6-4c00-9b2a-90eef745f4f9, key: {ALICE_KEY}}}]
    basicauth_credentials: [{{username: alice, password: "{ALICE_PASSWORD}"}}]
    jwt_secrets: [{{key: alice-iss, secret: {JWT_SECRET}}}]
    acls: [{{group: gold}}]
  - username: bob
    keyauth_credentials: [{{key: {BOB_KEY}}}]
    acls: [{{group: bronze}}]
"""


def document(echo_port: int, routes: str, extra: str = "") -> str:
    return f"""
_format_version: "3.0"
_fastgw: {{admin_listen: null}}
{CONSUMERS}
{extra}
services:
  - name: example-service
    url: http://127.0.0.1:{echo_port}
    routes:
{routes}
"""


ROUTES = """
      - name: keys
        paths: [/keys]
        strip_path: false
        plugins:
          - name: key-auth
            config: {key_names: [apikey], hide_credentials: true}
      - name: passwords
        paths: [/passwords]
        strip_path: false
        plugins:
          - name: basic-auth
            config: {hide_credentials: true}
      - name: tokens
        paths: [/tokens]
        strip_path: false
        plugins:
          - name: jwt
            config: {claims_to_verify: [exp]}
      - name: gold
        paths: [/gold]
        strip_path: false
        plugins:
          - name: key-auth
          - name: acl
            config: {allow: [gold]}
      - name: not-bronze
        paths: [/not-bronze]
        strip_path: false
        plugins:
          - name: key-auth
          - name: acl
            config: {deny: [bronze], hide_groups_header: true}
      - name: open
        paths: [/open]
        strip_path: false
"""


@pytest.fixture(scope="module")
def port(echo: EchoUpstream) -> Iterator[int]:
    from tests.integration.oidc_support import running_gateway

    with running_gateway(document(echo.port, ROUTES)) as gateway:
        yield gateway.port


# -- key-auth ---------------------------------------------------------------------------------


def test_key_auth_denies_without_a_key_and_with_a_wrong_one(port: int) -> None:
    missing = curl(port, "/keys")
    assert (missing.status, message(missing)) == (401, "No API key found in request")
    assert missing.get("www-authenticate") == "Key"
    wrong = curl(port, "/keys", "-H", "apikey: not-a-key")
    assert (wrong.status, message(wrong)) == (401, "Unauthorized")
    assert wrong.get("www-authenticate") == "Key"


def test_key_auth_allows_a_known_key_and_hides_it(port: int) -> None:
    by_header = curl(port, "/keys", "-H", f"apikey: {ALICE_KEY}")
    assert by_header.upstream("x-consumer-username") == ["alice"]
    assert by_header.upstream("x-consumer-custom-id") == ["alice-42"]
    assert by_header.upstream("x-credential-identifier") == ["5f35b796-ced6-4c00-9b2a-90eef745f4f9"]
    assert by_header.upstream("apikey") == []
    assert ALICE_KEY not in by_header.body.decode()

    by_query = curl(port, f"/keys?apikey={ALICE_KEY}&page=2")
    assert by_query.upstream("x-consumer-username") == ["alice"]
    assert by_query.json()["path"] == "/keys?page=2"


# -- basic-auth -------------------------------------------------------------------------------


def test_basic_auth_denies_with_kongs_challenge(port: int) -> None:
    missing = curl(port, "/passwords")
    assert (missing.status, message(missing)) == (401, "Unauthorized")
    assert missing.get("www-authenticate") == 'Basic realm="service"'
    wrong = curl(port, "/passwords", "-u", "alice:wrong")
    assert (wrong.status, message(wrong)) == (401, "Unauthorized")
    assert wrong.get("www-authenticate") == 'Basic realm="service"'


def test_basic_auth_allows_the_password_and_hides_it(port: int) -> None:
    allowed = curl(port, "/passwords", "-u", f"alice:{ALICE_PASSWORD}")
    assert allowed.upstream("x-consumer-username") == ["alice"]
    assert allowed.upstream("authorization") == []
    assert ALICE_PASSWORD not in allowed.body.decode()


# -- jwt --------------------------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256(claims: dict, secret: str) -> str:
    head = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = _b64url(json.dumps(claims).encode())
    signature = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64url(signature)}"


def test_jwt_allows_a_token_signed_with_the_consumers_secret(port: int) -> None:
    token = hs256({"iss": "alice-iss", "exp": int(time.time()) + 300}, JWT_SECRET)
    allowed = curl(port, "/tokens", "-H", f"Authorization: Bearer {token}")
    assert allowed.upstream("x-consumer-username") == ["alice"]
    by_param = curl(port, f"/tokens?jwt={token}")
    assert by_param.upstream("x-consumer-username") == ["alice"]


def test_jwt_denies_with_kongs_messages(port: int) -> None:
    missing = curl(port, "/tokens")
    assert (missing.status, message(missing)) == (401, "Unauthorized")
    assert missing.get("www-authenticate") == "Bearer"
    forged = hs256({"iss": "alice-iss", "exp": int(time.time()) + 300}, "not-the-secret")
    bad = curl(port, "/tokens", "-H", f"Authorization: Bearer {forged}")
    assert (bad.status, message(bad)) == (401, "Invalid signature")
    assert bad.get("www-authenticate") == 'Bearer error="invalid_token"'
    stranger = hs256({"iss": "nobody-iss"}, JWT_SECRET)
    unknown = curl(port, "/tokens", "-H", f"Authorization: Bearer {stranger}")
    assert (unknown.status, message(unknown)) == (401, "No credentials found for given 'iss'")
    no_iss = curl(port, "/tokens", "-H", f"Authorization: Bearer {hs256({}, JWT_SECRET)}")
    assert (no_iss.status, message(no_iss)) == (401, "No mandatory 'iss' in claims")
    expired = hs256({"iss": "alice-iss", "exp": int(time.time()) - 10}, JWT_SECRET)
    late = curl(port, "/tokens", "-H", f"Authorization: Bearer {expired}")
    assert late.status == 401 and late.json() == {"exp": "token expired"}


# -- acl --------------------------------------------------------------------------------------


def test_acl_allow_admits_the_group_and_forbids_the_others(port: int) -> None:
    alice = curl(port, "/gold", "-H", f"apikey: {ALICE_KEY}")
    assert alice.upstream("x-consumer-groups") == ["gold"]
    bob = curl(port, "/gold", "-H", f"apikey: {BOB_KEY}")
    assert (bob.status, message(bob)) == (403, "You cannot consume this service")


def test_acl_deny_forbids_the_group_and_can_hide_the_groups_header(port: int) -> None:
    alice = curl(port, "/not-bronze", "-H", f"apikey: {ALICE_KEY}")
    assert alice.upstream("x-consumer-groups") == []
    assert alice.upstream("x-consumer-username") == ["alice"]
    bob = curl(port, "/not-bronze", "-H", f"apikey: {BOB_KEY}")
    assert (bob.status, message(bob)) == (403, "You cannot consume this service")


# -- identity headers the client forges -------------------------------------------------------


FORGED = (
    "X-Consumer-Username: admin",
    "X-Consumer-ID: 00000000-0000-0000-0000-000000000000",
    "X-Consumer-Custom-ID: root",
    "X-Credential-Identifier: forged",
    "X-Anonymous-Consumer: false",
    "X-Consumer-Groups: gold",
    "X_Consumer_Username: admin-alias",
)


def forged_headers() -> list[str]:
    return [arg for header in FORGED for arg in ("-H", header)]


def test_a_forged_identity_never_reaches_the_upstream(port: int) -> None:
    unauthenticated = curl(port, "/open", *forged_headers())
    for name in (
        "x-consumer-username",
        "x-consumer-id",
        "x-consumer-custom-id",
        "x-credential-identifier",
        "x-anonymous-consumer",
        "x-consumer-groups",
        "x_consumer_username",
    ):
        assert unauthenticated.upstream(name) == [], name

    authenticated = curl(port, "/keys", "-H", f"apikey: {BOB_KEY}", *forged_headers())
    assert authenticated.upstream("x-consumer-username") == ["bob"]
    assert authenticated.upstream("x-consumer-custom-id") == []
    assert authenticated.upstream("x-credential-identifier") != ["forged"]
    assert authenticated.upstream("x-consumer-groups") == []
    assert authenticated.upstream("x_consumer_username") == []


# -- consumer-scoped plugins ------------------------------------------------------------------


def test_a_plugin_on_the_consumer_beats_the_same_plugin_on_the_route(echo: EchoUpstream) -> None:
    from tests.integration.oidc_support import running_gateway

    routes = """
      - name: scoped
        paths: [/scoped]
        plugins:
          - name: key-auth
          - name: request-termination
            config: {status_code: 403, message: route says no}
"""
    extra = """
plugins:
  - name: request-termination
    consumer: alice
    config: {status_code: 418, message: alice is a teapot}
"""
    with running_gateway(document(echo.port, routes, extra)) as gateway:
        alice = curl(gateway.port, "/scoped", "-H", f"apikey: {ALICE_KEY}")
        assert (alice.status, message(alice)) == (418, "alice is a teapot")
        bob = curl(gateway.port, "/scoped", "-H", f"apikey: {BOB_KEY}")
        assert (bob.status, message(bob)) == (403, "route says no")
        nobody = curl(gateway.port, "/scoped")
        assert (nobody.status, message(nobody)) == (401, "No API key found in request")


# -- hash_on: consumer ------------------------------------------------------------------------


@pytest.fixture
def named_echoes(tmp_path: Path) -> Iterator[list[int]]:
    """Three echo upstreams that name themselves in X-Upstream-Name; their ports."""
    started: list[subprocess.Popen[str]] = []
    ports = []
    for name in "abc":
        ports.append(free_port())
        proc = subprocess.Popen(
            [PYTHON, "-m", "tests.support.echo", "--port", str(ports[-1]), "--name", name],
            cwd=ROOT, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        started.append(proc)
        LineReader(proc.stdout).wait_for(r"READY")
    yield ports
    for proc in started:
        stop_process(proc)


def test_hash_on_consumer_keeps_each_consumer_on_one_target(named_echoes: list[int]) -> None:
    from tests.integration.oidc_support import running_gateway

    names = [f"user{index}" for index in range(24)]
    consumers = "".join(
        f"  - username: {name}\n    keyauth_credentials: [{{key: key-of-{name}}}]\n"
        for name in names
    )
    targets = "".join(f"      - target: 127.0.0.1:{p}\n" for p in named_echoes)
    text = f"""
_format_version: "3.0"
_fastgw: {{admin_listen: null}}
consumers:
{consumers}upstreams:
  - name: backend
    hash_on: consumer
    targets:
{targets}services:
  - name: api
    host: backend
    routes: [{{paths: [/], plugins: [{{name: key-auth}}]}}]
"""
    with running_gateway(text) as gateway:
        placed = {}
        for name in names:
            seen = {
                curl(gateway.port, "/", "-H", f"apikey: key-of-{name}").get("x-upstream-name")
                for _ in range(3)
            }
            assert len(seen) == 1, (name, seen)
            placed[name] = seen.pop()
    assert set(placed.values()) == {"a", "b", "c"}  # the consumers spread over every target


# -- file-log ---------------------------------------------------------------------------------


def test_file_log_writes_the_consumer_and_the_authenticated_entity(
    echo: EchoUpstream, tmp_path: Path
) -> None:
    from tests.integration.oidc_support import running_gateway, wait_until

    log = tmp_path / "access.log"
    extra = f"""
plugins:
  - name: file-log
    config: {{path: {log}}}
"""
    with running_gateway(document(echo.port, ROUTES, extra)) as gateway:
        assert curl(gateway.port, "/keys", "-H", f"apikey: {ALICE_KEY}").status == 200
        assert curl(gateway.port, "/open").status == 200
        assert wait_until(lambda: log.exists() and len(log.read_text().splitlines()) >= 2)
    first, second = (json.loads(line) for line in log.read_text().splitlines()[:2])
    assert first["consumer"]["username"] == "alice"
    assert first["consumer"]["custom_id"] == "alice-42"
    assert first["authenticated_entity"] == {
        "id": "5f35b796-ced6-4c00-9b2a-90eef745f4f9",
        "consumer_id": first["consumer"]["id"],
    }
    assert ALICE_KEY not in log.read_text()
    assert "consumer" not in second and "authenticated_entity" not in second


# -- acl by openid-connect's groups (the real IdP) --------------------------------------------


BRONZE_APP = ("bronze-app", "bronze-app-secret")


def test_acl_by_the_groups_openid_connect_authenticated(echo: EchoUpstream) -> None:
    from tests.integration.oidc_support import SECRETS, basic, running_gateway
    from tests.support.idp import BASIC_CLIENT, IdpClient, TestIdP, default_clients

    SECRETS.add_client(*BRONZE_APP)
    claims = {BASIC_CLIENT[0]: {"groups": ["gold", "staff"]}, BRONZE_APP[0]: {"groups": ["bronze"]}}
    clients = [*default_clients(), IdpClient(*BRONZE_APP, "client_secret_basic")]
    with TestIdP(clients=clients, token_claims=claims) as idp:
        oidc = {
            "issuer": idp.issuer,
            "auth_methods": ["client_credentials"],
            "client_auth": ["client_secret_basic"],
            "authenticated_groups_claim": ["groups"],
            "timeout": 3000,
        }
        routes = f"""
      - name: staff
        paths: [/staff]
        strip_path: false
        plugins:
          - {{name: openid-connect, config: {json.dumps(oidc)}}}
          - {{name: acl, config: {{allow: [gold]}}}}
"""
        with running_gateway(document(echo.port, routes)) as gateway:
            gold = curl(gateway.port, "/staff", "-H", f"Authorization: {basic(*BASIC_CLIENT)}")
            assert gold.upstream("x-authenticated-groups") == ["gold, staff"]
            assert gold.upstream("x-consumer-username") == []
            bronze = curl(gateway.port, "/staff", "-H", f"Authorization: {basic(*BRONZE_APP)}")
            assert (bronze.status, message(bronze)) == (403, "You cannot consume this service")
            forged = curl(
                gateway.port, "/staff",
                "-H", f"Authorization: {basic(*BRONZE_APP)}",
                "-H", "X-Authenticated-Groups: gold",
            )  # fmt: skip
            assert forged.status == 403


def test_an_anonymous_naming_no_consumer_answers_kongs_500(echo: EchoUpstream) -> None:
    """Kong's docs example `anonymous-consumer`: the file loads, a failed request is a 500."""
    from tests.integration.oidc_support import running_gateway

    routes = """
      - name: guarded
        paths: [/guarded]
        plugins: [{name: basic-auth, config: {anonymous: anonymous}}]
"""
    with running_gateway(document(echo.port, routes)) as gateway:
        failed = curl(gateway.port, "/guarded", "-u", "alice:wrong")
        assert failed.status == 500
        assert message(failed) == "anonymous consumer anonymous is configured but doesn't exist"
        allowed = curl(gateway.port, "/guarded", "-u", f"alice:{ALICE_PASSWORD}")
        assert allowed.upstream("x-consumer-username") == ["alice"]
