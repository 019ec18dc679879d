"""A scripted OpenID provider for the hardening tests: real HTTP/1.1 on 127.0.0.1, asyncio only.

It serves discovery, a JWKS and a token endpoint. By default it behaves: known clients (secret by
client_secret_basic or _post, or any client_assertion) get an RS256 JWT access token signed with
the key its JWKS publishes; others get 401 invalid_client. Each test scripts the answers it needs:

    with MisbehavingIdP(clients={"c": "s"}) as idp:
        idp.script_token("c", lambda request: token_reply(idp.sign(idp.claims("c"), alg="none")))
        idp.discovery = lambda request: json_reply({**idp.metadata(), "issuer": "http://evil"})
        idp.token_delay = 0.005  # every token answer waits this long (in-flight counting)

Answers are `Reply` objects: a plain body, or bytes written in hostile ways (a huge body, a body
dripped slowly, a header line that never ends). The server counts what the gateway did to it:
requests per path, token requests in flight at once (`max_token_in_flight`), connections, and
how many bytes a streamed answer got written before the gateway hung up. It runs its own event
loop in a daemon thread, so it keeps answering while a test blocks or the gateway's loop works.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote_plus

import orjson
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from jwt.algorithms import RSAAlgorithm

MAX_REQUEST_HEAD = 64 * 1024
MAX_REQUEST_BODY = 1024 * 1024
DEFAULT_AUDIENCE = "api://gateway"
DEFAULT_TOKEN_TTL = 300  # seconds
STREAM_CHUNK = 1024 * 1024

Handler = Callable[["IdpRequest"], "Reply | Awaitable[Reply]"]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


# -- requests -------------------------------------------------------------------------------------


@dataclass
class IdpRequest:
    method: str
    target: str
    headers: dict[str, str]  # lower-case names
    body: bytes

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]

    @property
    def form(self) -> dict[str, str]:
        return dict(parse_qsl(self.body.decode("latin-1"), keep_blank_values=True))

    def client(self) -> tuple[str | None, str | None, str | None]:
        """(client_id, client_secret, client_assertion) however the client authenticated."""
        form = self.form
        authorization = self.headers.get("authorization", "")
        if authorization.lower().startswith("basic "):
            try:
                pair = base64.b64decode(authorization[6:].strip()).decode()
            except (ValueError, UnicodeDecodeError):
                return None, None, None
            client_id, _, secret = pair.partition(":")
            return unquote_plus(client_id), unquote_plus(secret), None
        return form.get("client_id"), form.get("client_secret"), form.get("client_assertion")


# -- answers --------------------------------------------------------------------------------------


class Reply:
    """An answer; `send` writes it and says whether the connection may be reused."""

    async def send(self, writer: asyncio.StreamWriter, idp: MisbehavingIdP) -> bool:
        raise NotImplementedError


@dataclass
class Body(Reply):
    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = (("Content-Type", "application/json"),)

    async def send(self, writer: asyncio.StreamWriter, idp: MisbehavingIdP) -> bool:
        head = [f"HTTP/1.1 {self.status} X"]
        head += [f"{name}: {value}" for name, value in self.headers]
        head.append(f"Content-Length: {len(self.body)}")
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + self.body)
        await writer.drain()
        return True


def json_reply(document: Any, status: int = 200) -> Body:
    return Body(status, orjson.dumps(document))


def token_reply(access_token: str, expires_in: Any = DEFAULT_TOKEN_TTL, **extra: Any) -> Body:
    document = {"access_token": access_token, "token_type": "Bearer", **extra}
    if expires_in is not None:
        document["expires_in"] = expires_in
    return json_reply(document)


def error_reply(status: int, error: str) -> Body:
    return json_reply({"error": error, "error_description": error.replace("_", " ")}, status)


@dataclass
class Stream(Reply):
    """`total` bytes of body after `head_lines`, framed by `framing` ("length": announced in
    Content-Length, "chunked", or "close": delimited by closing), written in 1 MiB pieces until
    done or the gateway hangs up. `idp.streamed` records how far it got."""

    total: int
    framing: str = "length"
    head_lines: tuple[str, ...] = ("Content-Type: application/json",)

    async def send(self, writer: asyncio.StreamWriter, idp: MisbehavingIdP) -> bool:
        head = ["HTTP/1.1 200 OK", *self.head_lines]
        if self.framing == "length":
            head.append(f"Content-Length: {self.total}")
        elif self.framing == "chunked":
            head.append("Transfer-Encoding: chunked")
        else:
            head.append("Connection: close")
        piece = b'{"access_token": "' + b"A" * STREAM_CHUNK
        written = 0
        try:
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
            while written < self.total:
                data = piece[: min(STREAM_CHUNK, self.total - written)]
                writer.write(
                    b"%x\r\n%b\r\n" % (len(data), data) if self.framing == "chunked" else data
                )
                await writer.drain()
                written += len(data)
                idp.streamed = written
            if self.framing == "chunked":
                writer.write(b"0\r\n\r\n")
                await writer.drain()
        except (ConnectionError, OSError):
            idp.stream_cut_short = True
        finally:
            idp.stream_done.set()
        return False


@dataclass
class EndlessHeader(Reply):
    """A status line, then one header line of `total` bytes that never reaches its CRLF."""

    total: int

    async def send(self, writer: asyncio.StreamWriter, idp: MisbehavingIdP) -> bool:
        written = 0
        try:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Pad: ")
            while written < self.total:
                writer.write(b"p" * STREAM_CHUNK)
                await writer.drain()
                written += STREAM_CHUNK
                idp.streamed = written
        except (ConnectionError, OSError):
            idp.stream_cut_short = True
        finally:
            idp.stream_done.set()
        return False


@dataclass
class Drip(Reply):
    """A complete head announcing `body`, then the body one byte per `interval` seconds."""

    body: bytes
    interval: float

    async def send(self, writer: asyncio.StreamWriter, idp: MisbehavingIdP) -> bool:
        head = (
            f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(self.body)}"
        )
        try:
            writer.write(head.encode("latin-1") + b"\r\n\r\n")
            for index in range(len(self.body)):
                await writer.drain()
                await asyncio.sleep(self.interval)
                writer.write(self.body[index : index + 1])
                idp.streamed = index + 1
            await writer.drain()
        except (ConnectionError, OSError):
            idp.stream_cut_short = True
        finally:
            idp.stream_done.set()
        return True


# -- keys and tokens ------------------------------------------------------------------------------


class RsaKey:
    def __init__(self, kid: str) -> None:
        self.kid = kid
        self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.public = self.private.public_key()

    def public_jwk(self) -> dict[str, Any]:
        jwk = orjson.loads(RSAAlgorithm.to_jwk(self.public))
        return {**jwk, "kid": self.kid, "use": "sig", "alg": "RS256"}

    def public_pem(self) -> bytes:
        return self.public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign(self, data: bytes) -> bytes:
        return self.private.sign(data, padding.PKCS1v15(), hashes.SHA256())


def compact(header: Mapping[str, Any], claims: Mapping[str, Any], sign: Callable[[bytes], bytes]):
    signing_input = f"{b64url(orjson.dumps(dict(header)))}.{b64url(orjson.dumps(dict(claims)))}"
    return f"{signing_input}.{b64url(sign(signing_input.encode('ascii')))}"


# -- the server -----------------------------------------------------------------------------------


class MisbehavingIdP:
    def __init__(self, clients: Mapping[str, str] | None = None) -> None:
        self.clients: dict[str, str] = dict(clients or {})
        self.key = RsaKey("idp-key-1")
        self.audience = DEFAULT_AUDIENCE
        self.token_delay = 0.0
        # scripting: None means "behave"
        self.discovery: Handler | None = None
        self.jwks: Handler | None = None
        self._token_scripts: dict[str, Handler] = {}
        # what happened
        self.requests: Counter[str] = Counter()
        self.token_in_flight = 0
        self.max_token_in_flight = 0
        self.connections = 0
        self.max_connections = 0
        self.connections_accepted = 0
        self.assertions_seen: list[str] = []
        self.tokens_issued: list[str] = []
        self.streamed = 0
        self.stream_cut_short = False
        self.stream_done = threading.Event()
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.base_events.Server | None = None

    # -- lifecycle --------------------------------------------------------------------------------

    def __enter__(self) -> MisbehavingIdP:
        self._thread.start()
        self._server = self._call(
            asyncio.start_server(self._serve, "127.0.0.1", 0, backlog=1024, limit=MAX_REQUEST_HEAD)
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        server = self._server
        if server is not None:
            # closed in its own loop's thread: asyncio's Server is not thread-safe, and closing
            # it from here raced with the loop (a TypeError in Server._wakeup, seen once)
            async def close() -> None:
                server.close()
                await asyncio.wait_for(server.wait_closed(), 2)

            with contextlib.suppress(Exception):
                self._call(close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def _call(self, coroutine: Awaitable[Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(10)  # type: ignore[arg-type]

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- scripting --------------------------------------------------------------------------------

    def script_token(self, client_id: str, handler: Handler) -> None:
        """Answer token requests of `client_id` with `handler` (whatever its credentials)."""
        self._token_scripts[client_id] = handler

    def reset_counters(self) -> None:
        self.requests.clear()
        self.max_token_in_flight = self.token_in_flight
        self.max_connections = self.connections
        self.connections_accepted = 0
        self.streamed = 0
        self.stream_cut_short = False
        self.stream_done.clear()

    @property
    def token_requests(self) -> int:
        return self.requests["/token"]

    def metadata(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "token_endpoint": f"{self.issuer}/token",
            "jwks_uri": f"{self.issuer}/jwks",
            "grant_types_supported": ["client_credentials"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        }

    def claims(self, client_id: str, lifetime: float = DEFAULT_TOKEN_TTL, **extra: Any):
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": client_id,
            "aud": self.audience,
            "client_id": client_id,
            "iat": now,
            "exp": now + int(lifetime),
            "jti": uuid.uuid4().hex,
            "scope": "read",
        }
        claims.update(extra)
        return claims

    def sign(
        self,
        claims: Mapping[str, Any],
        *,
        alg: str = "RS256",
        key: RsaKey | bytes | None = None,
        header: Mapping[str, Any] | None = None,
        kid: str | None = "",
    ) -> str:
        """A compact JWS; `key` is an RsaKey (RS256, default the IdP's), HMAC key bytes (HS256),
        or nothing (alg "none"). `kid` "" means the signing RSA key's own kid, None none."""
        full_header: dict[str, Any] = {"typ": "at+jwt", "alg": alg}
        if alg == "none":
            signer: Callable[[bytes], bytes] = lambda data: b""  # noqa: E731
        elif alg == "HS256":
            assert isinstance(key, bytes)
            secret = key
            signer = lambda data: hmac.new(secret, data, hashlib.sha256).digest()  # noqa: E731
        else:
            rsa_key = key if isinstance(key, RsaKey) else self.key
            signer = rsa_key.sign
            if kid == "":
                kid = rsa_key.kid
        if kid:
            full_header["kid"] = kid
        full_header.update(header or {})
        token = compact(full_header, claims, signer)
        self.tokens_issued.append(token)
        return token

    def good_token(self, client_id: str, **extra: Any) -> str:
        return self.sign(self.claims(client_id, **extra))

    # -- default behaviour ------------------------------------------------------------------------

    def _default_token(self, request: IdpRequest) -> Reply:
        client_id, secret, assertion = request.client()
        if request.form.get("grant_type") != "client_credentials":
            return error_reply(400, "unsupported_grant_type")
        if assertion is not None:
            self.assertions_seen.append(assertion)
            if client_id in self.clients:
                return token_reply(self.good_token(client_id))
        elif (
            client_id in self.clients and secret is not None and self._secret_ok(client_id, secret)
        ):
            return token_reply(self.good_token(client_id))
        return error_reply(401, "invalid_client")

    def _secret_ok(self, client_id: str, secret: str) -> bool:
        return hmac.compare_digest(secret.encode(), self.clients[client_id].encode())

    async def _answer(self, request: IdpRequest) -> Reply:
        path = request.path
        self.requests[path] += 1
        if path == "/.well-known/openid-configuration":
            handler = self.discovery or (lambda _: json_reply(self.metadata()))
        elif path == "/jwks":
            handler = self.jwks or (lambda _: json_reply({"keys": [self.key.public_jwk()]}))
        elif path == "/token" and request.method == "POST":
            client_id = request.client()[0]
            handler = self._token_scripts.get(client_id or "", self._default_token)
            if self.token_delay:
                await asyncio.sleep(self.token_delay)
        else:
            return error_reply(404, "not_found")
        reply = handler(request)
        if asyncio.iscoroutine(reply):
            reply = await reply
        return reply  # type: ignore[return-value]

    # -- HTTP/1.1 ---------------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.connections_accepted += 1
        self.max_connections = max(self.max_connections, self.connections)
        try:
            while True:
                request = await self._read_request(reader)
                if request is None:
                    break
                is_token = request.path == "/token"
                if is_token:
                    self.token_in_flight += 1
                    self.max_token_in_flight = max(self.max_token_in_flight, self.token_in_flight)
                try:
                    reply = await self._answer(request)
                    keep_alive = await reply.send(writer, self)
                finally:
                    if is_token:
                        self.token_in_flight -= 1
                if not keep_alive or request.headers.get("connection", "").lower() == "close":
                    break
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            self.connections -= 1
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    @staticmethod
    async def _read_request(reader: asyncio.StreamReader) -> IdpRequest | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        if length > MAX_REQUEST_BODY:
            raise ConnectionError("request body too large")
        body = await reader.readexactly(length) if length else b""
        return IdpRequest(method, target, headers, body)


# -- a listener that must never be contacted ------------------------------------------------------


class ConnectionTrap:
    """A TCP listener on 127.0.0.1 that only counts the connections it accepts (and closes
    them): point an attacker-supplied URL (jku, x5u) at it and assert `accepted == 0`."""

    def __init__(self) -> None:
        self._socket = socket.create_server(("127.0.0.1", 0))
        self._socket.settimeout(0.05)
        self.port = self._socket.getsockname()[1]
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._socket.accept()
            except (TimeoutError, OSError):
                continue
            self.accepted += 1
            connection.close()

    def __enter__(self) -> ConnectionTrap:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2)
        self._socket.close()


def issued_secrets(idp: MisbehavingIdP) -> Iterable[str]:
    """Every token and client assertion the IdP handled (to search logs and answers for)."""
    return [*idp.tokens_issued, *idp.assertions_seen]


__all__ = [
    "Body",
    "ConnectionTrap",
    "Drip",
    "EndlessHeader",
    "IdpRequest",
    "MisbehavingIdP",
    "Reply",
    "RsaKey",
    "Stream",
    "error_reply",
    "issued_secrets",
    "json_reply",
    "token_reply",
]
