"""Test doubles for the openid-connect unit tests: a fake clock, IdP and HTTP client, and real
requests (the wire's Exchange on a real ServerConnection over a recording transport).

No sockets: the fake HTTP client answers from a dict of handlers and counts every call.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import jwt
import orjson
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from fastgw.config import Limits
from fastgw.config.consumers import Consumers
from fastgw.http.client import RequestTimeout
from fastgw.http.exchange import BODY_LENGTH, Exchange
from fastgw.http.server import Server
from fastgw.http.timers import Ticker
from fastgw.plugins.building import HttpClient
from fastgw.plugins.openid_connect import ClientCredentialsAuthenticator, OpenIdConnect
from fastgw.plugins.openid_connect.admission import Admission
from fastgw.plugins.openid_connect.answers import Answers
from fastgw.plugins.openid_connect.schema import from_mapping
from tests.support.wire import FakeTransport

ISSUER = "https://idp.example.test"
TOKEN_ENDPOINT = f"{ISSUER}/token"
INTROSPECTION_ENDPOINT = f"{ISSUER}/token/introspection"
JWKS_URI = f"{ISSUER}/jwks"
DISCOVERY_URL = f"{ISSUER}/.well-known/openid-configuration"
NOW = 1_700_000_000.0


class FakeClock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class FakeResponse:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


def json_response(document: Any, status: int = 200) -> FakeResponse:
    return FakeResponse(status, orjson.dumps(document), {"content-type": "application/json"})


@dataclass
class Call:
    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes
    timeout: float = 10.0  # what the caller gave the whole exchange

    @property
    def form(self) -> dict[str, str]:
        return dict(parse_qsl(self.body.decode()))


Handler = Callable[[Call], Awaitable[FakeResponse] | FakeResponse]


class FakeHttp(HttpClient):
    """Routes by URL to a handler (a FakeResponse, an exception to raise, or a callable); an
    implementation of the plugins' HttpClient protocol, checked against it by mypy. Like the
    gateway's client, an answer later than `timeout` is a RequestTimeout."""

    def __init__(self) -> None:
        self.routes: dict[str, Any] = {}
        self.calls: list[Call] = []
        self.closed = False

    def route(self, url: str, answer: Any) -> None:
        self.routes[url] = answer

    def count(self, url: str) -> int:
        return sum(1 for call in self.calls if call.url == url)

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
        timeout: float = 10.0,
        max_body: int = 1 << 20,
    ) -> FakeResponse:
        call = Call(method, url, dict(headers or {}), body, timeout)
        self.calls.append(call)
        answer = self.routes.get(url)
        if answer is None:
            return FakeResponse(404, b"")
        if isinstance(answer, BaseException):
            raise answer
        if callable(answer):
            answer = answer(call)
            if asyncio.iscoroutine(answer):
                try:
                    async with asyncio.timeout(timeout):
                        answer = await answer
                except TimeoutError:
                    raise RequestTimeout(f"{method} {url} took longer than {timeout:g} s") from None
            if isinstance(answer, BaseException):
                raise answer
        return answer

    async def close(self) -> None:
        self.closed = True


# -- keys and tokens ------------------------------------------------------------------------------


class SigningKey:
    def __init__(self, private_key: Any, alg: str, kid: str | None) -> None:
        self.private_key = private_key
        self.alg = alg
        self.kid = kid

    def public_jwk(self, *, with_alg: bool = True) -> dict[str, Any]:
        algorithm = jwt.algorithms.get_default_algorithms()[self.alg]
        document = orjson.loads(algorithm.to_jwk(self.private_key.public_key()))
        if self.kid is not None:
            document["kid"] = self.kid
        if with_alg:
            document["alg"] = self.alg
        document["use"] = "sig"
        return document

    def private_jwk(self) -> dict[str, Any]:
        algorithm = jwt.algorithms.get_default_algorithms()[self.alg]
        document = orjson.loads(algorithm.to_jwk(self.private_key))
        if self.kid is not None:
            document["kid"] = self.kid
        return document

    def mint(self, claims: Mapping[str, Any], *, headers: Mapping[str, Any] | None = None) -> str:
        extra = dict(headers or {})
        if self.kid is not None:
            extra.setdefault("kid", self.kid)
        return jwt.encode(dict(claims), self.private_key, algorithm=self.alg, headers=extra)


_RSA_KEYS: dict[str, Any] = {}


def rsa_key(kid: str | None = "rsa-1", alg: str = "RS256") -> SigningKey:
    # RSA generation is slow (tens of ms): one key per kid, shared by the tests
    private_key = _RSA_KEYS.get(kid or "")
    if private_key is None:
        private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        _RSA_KEYS[kid or ""] = private_key
    return SigningKey(private_key, alg, kid)


def ec_key(kid: str | None = "ec-1") -> SigningKey:
    return SigningKey(ec.generate_private_key(ec.SECP256R1()), "ES256", kid)


def claims(now: float = NOW, lifetime: float = 3600, **extra: Any) -> dict[str, Any]:
    document = {
        "iss": ISSUER,
        "sub": "client-1",
        "aud": "urn:api",
        "iat": int(now),
        "exp": int(now + lifetime),
        "scope": "openid read",
        "client_id": "client-1",
    }
    document.update(extra)
    return {name: value for name, value in document.items() if value is not None}


def basic(client_id: str, secret: str) -> bytes:
    return b"Basic " + base64.b64encode(f"{client_id}:{secret}".encode())


# -- an IdP behind the fake HTTP client -----------------------------------------------------------


class FakeIdp:
    """Discovery, JWKS and a token endpoint with a table of valid clients."""

    def __init__(self, http: FakeHttp, clock: FakeClock, key: SigningKey | None = None) -> None:
        self.http = http
        self.clock = clock
        self.key = key or rsa_key()
        self.keys = [self.key]
        self.clients: dict[str, str] = {"client-1": "secret-1", "client-2": "secret-2"}
        self.lifetime = 3600
        self.token_status = 200
        self.counter = 0
        self.gate: asyncio.Event | None = None  # set: token answers wait for it
        self.extra_claims: dict[str, Any] = {}
        # opaque tokens the introspection endpoint knows: token -> its answer
        self.opaque: dict[str, dict[str, Any]] = {}
        self.introspection_status = 200
        http.route(
            DISCOVERY_URL,
            lambda call: json_response(
                {
                    "issuer": ISSUER,
                    "token_endpoint": TOKEN_ENDPOINT,
                    "jwks_uri": JWKS_URI,
                    "introspection_endpoint": INTROSPECTION_ENDPOINT,
                }
            ),
        )
        http.route(INTROSPECTION_ENDPOINT, self.introspect)
        http.route(
            JWKS_URI, lambda call: json_response({"keys": [k.public_jwk() for k in self.keys]})
        )
        http.route(TOKEN_ENDPOINT, self.token)

    def credentials_of(self, call: Call) -> tuple[str, str]:
        authorization = call.headers.get("Authorization")
        if authorization:
            decoded = base64.b64decode(authorization.split(" ", 1)[1]).decode()
            client_id, _, secret = decoded.partition(":")
            return client_id, secret
        form = call.form
        return form.get("client_id", ""), form.get("client_secret", "")

    async def token(self, call: Call) -> FakeResponse:
        if self.gate is not None:
            await self.gate.wait()
        if self.token_status != 200:
            return json_response({"error": "server_error"}, self.token_status)
        client_id, secret = self.credentials_of(call)
        if self.clients.get(client_id) != secret:
            return json_response(
                {"error": "invalid_client", "error_description": "client authentication failed"},
                401,
            )
        self.counter += 1
        token = self.key.mint(
            claims(
                self.clock(),
                self.lifetime,
                sub=client_id,
                client_id=client_id,
                jti=str(self.counter),
                **self.extra_claims,
            )
        )
        return json_response(
            {"access_token": token, "token_type": "Bearer", "expires_in": self.lifetime}
        )

    def introspect(self, call: Call) -> FakeResponse:
        if self.introspection_status != 200:
            return json_response({"error": "server_error"}, self.introspection_status)
        client_id, secret = self.credentials_of(call)
        if self.clients.get(client_id) != secret:
            return json_response({"error": "invalid_client"}, 401)
        answer = self.opaque.get(call.form.get("token", ""))
        return json_response(answer if answer is not None else {"active": False})

    def issue_opaque(self, token: str, **extra: Any) -> str:
        self.opaque[token] = {"active": True, **claims(self.clock(), self.lifetime, **extra)}
        return token

    @property
    def token_calls(self) -> int:
        return self.http.count(TOKEN_ENDPOINT)

    @property
    def introspection_calls(self) -> int:
        return self.http.count(INTROSPECTION_ENDPOINT)


def config(**overrides: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "issuer": ISSUER,
        "client_credentials_param_type": ["header", "query", "body"],
        "cache_tokens_salt": "pepper",
    }
    document.update(overrides)
    return document


class Spawner:
    """Collects background work so that tests decide when it runs."""

    def __init__(self) -> None:
        self.tasks: list[asyncio.Task[Any]] = []

    def __call__(self, awaitable: Awaitable[Any]) -> None:
        self.tasks.append(asyncio.ensure_future(awaitable))

    async def drain(self) -> None:
        while self.tasks:
            pending, self.tasks = self.tasks, []
            await asyncio.gather(*pending, return_exceptions=True)


async def make_authenticator(
    idp: FakeIdp, admission: Admission | None = None, **overrides: Any
) -> tuple[ClientCredentialsAuthenticator, Spawner]:
    spawner = Spawner()
    authenticator = ClientCredentialsAuthenticator(
        from_mapping(config(**overrides)),
        idp.http,
        spawn=spawner,
        clock=idp.clock,
        monotonic=idp.clock,
        admission=admission,
    )
    return authenticator, spawner


# -- requests: real exchanges ---------------------------------------------------------------------


class PeerTransport(FakeTransport):
    """The wire harness's recording transport, from a client address of the test's choosing."""

    def __init__(self, client_ip: str) -> None:
        super().__init__()
        self.client_ip = client_ip

    def get_extra_info(self, name: str, default: object = None) -> object:
        if name == "peername":
            return (self.client_ip, 40000)
        return super().get_extra_info(name, default)


class Connection:
    """A real client connection (the wire's ServerConnection over a recording transport): the
    client of the exchanges it makes, with their address and their per-connection memo."""

    def __init__(self, client_ip: str = "192.0.2.1") -> None:
        server = Server(lambda exchange: None, Limits(), Ticker())
        self.conn = server.protocol_factory()
        self.conn.connection_made(PeerTransport(client_ip))  # type: ignore[arg-type]

    def request(
        self,
        headers: Sequence[tuple[bytes, bytes]] = (),
        *,
        query: bytes = b"",
        body: bytes | None = None,
        host: bytes = b"api.example.test:8443",
        method: bytes | None = None,
    ) -> Exchange:
        """An exchange as the wire hands it to plugins; a body has arrived whole already."""
        if method is None:
            method = b"POST" if body is not None else b"GET"
        exchange = Exchange(self.conn, method, b"/resource", query, host, list(headers), True)
        if body:
            exchange.expect_body(BODY_LENGTH, False)
            exchange.content_length = len(body)
            exchange.on_request_body(body)
            exchange.on_request_complete()
        return exchange


def request_context(
    headers: Sequence[tuple[bytes, bytes]] = (),
    *,
    connection: Connection | None = None,
    client_ip: str = "192.0.2.1",
    **options: Any,
) -> Exchange:
    """A request on `connection` (requests on one connection share its memo), else on a new
    connection from `client_ip`."""
    return (connection or Connection(client_ip)).request(headers, **options)


# What the plugin did to an exchange: its answer (if it made one) and what goes upstream.


def status_of(exchange: Exchange) -> int | None:
    return exchange.local_status if exchange.responded else None


def answer_json(exchange: Exchange) -> Any:
    assert exchange.responded
    return orjson.loads(exchange.local_body)


def response_header(exchange: Exchange, name: bytes) -> bytes | None:
    assert exchange.responded
    for key, value in exchange.local_headers:
        if key == name:
            return value
    return None


def forwarded_body(exchange: Exchange) -> bytes:
    return b"".join(exchange.body_chunks)


async def run_access(plugin: OpenIdConnect, ctx: Exchange) -> bool:
    """Runs access(); True when it finished synchronously."""
    pending = plugin.access(ctx)
    if pending is None:
        return True
    await pending
    return False


async def make_full_plugin(
    idp: FakeIdp, consumers: Consumers | None = None, **overrides: Any
) -> OpenIdConnect:
    """The plugin as SPEC builds it (bearer authenticator, preflight rule, linked consumers)."""
    from fastgw.config.loader import Entities
    from fastgw.plugins.openid_connect import SPEC
    from fastgw.plugins.openid_connect.plugin import OpenIdConnectSkippingPreflight
    from fastgw.plugins.openid_connect.resource_server import BearerAuthenticator

    consumers = consumers or Consumers()
    problems: list[tuple[str, str]] = []
    parsed = SPEC.link(from_mapping(config(**overrides)), Entities(consumers), "p", problems)
    assert problems == []
    authenticator = ClientCredentialsAuthenticator(
        parsed, idp.http, spawn=Spawner(), clock=idp.clock, monotonic=idp.clock, consumers=consumers
    )
    bearer = None
    if parsed.bearer_enabled or parsed.introspection_enabled:
        bearer = BearerAuthenticator(
            parsed,
            idp.http,
            authenticator.discovery,
            authenticator.identity,
            authenticator.token_prefix,
            keys=authenticator.cache.keys,
            admission=authenticator.admission,
            clock=idp.clock,
            monotonic=idp.clock,
        )
    kind = OpenIdConnect if parsed.run_on_preflight else OpenIdConnectSkippingPreflight
    return kind(parsed, authenticator, bearer)


async def make_plugin(
    idp: FakeIdp, admission: Admission | None = None, **overrides: Any
) -> tuple[OpenIdConnect, ClientCredentialsAuthenticator, Spawner]:
    authenticator, spawner = await make_authenticator(idp, admission, **overrides)
    parsed = authenticator.config
    plugin = OpenIdConnect(parsed, authenticator)
    assert isinstance(plugin.answers, Answers)
    return plugin, authenticator, spawner


async def until(predicate: Callable[[], bool], turns: int = 1000) -> None:
    """Let the loop run until `predicate` holds (a state, not a time); fails if it never does."""
    for _ in range(turns):
        if predicate():
            return
        await asyncio.sleep(0)
    assert predicate(), "the state was never reached"


async def eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait until `predicate` holds, for work that waits on real timers (lock polling): checked
    every millisecond, failing after a generous `timeout`."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.001)
