"""Shared pieces of the openid-connect integration tests (tests/integration/test_oidc*.py).

A real IdP (tests/support/idp.py), a real echo upstream (tests/support/echo.py, in a daemon
thread), the gateway embedded in its own uvloop loop and thread (so fixtures can be module-scoped
while the tests keep their own per-test loop), a raw asyncio HTTP/1.1 client with a timeout on
everything, and a log collector that knows every secret and token the tests handled.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import threading
import time
from collections.abc import Coroutine, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import jwt
import pytest

from tests.support.echo import make_server
from tests.support.idp import TestIdP

GATEWAY_HOST = "gw.test"  # the Host the tests send: the realm in WWW-Authenticate
REQUEST_TIMEOUT = 10.0  # seconds, for one whole request/response exchange
UNAUTHORIZED_CHALLENGE = f'Bearer realm="{GATEWAY_HOST}", error="invalid_token"'
FORBIDDEN_CHALLENGE = f'Bearer realm="{GATEWAY_HOST}", error="insufficient_scope"'


# -- the echo upstream ----------------------------------------------------------------------------


@contextlib.contextmanager
def echo_upstream() -> Iterator[int]:
    """The echo server on a free port, served from a daemon thread; yields the port."""
    server = make_server(0)  # listens with a backlog that takes a burst of 100 connections
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


# -- gateway config -------------------------------------------------------------------------------


def gateway_config(echo_port: int, routes: dict[str, dict[str, Any]]) -> str:
    """One service (the echo upstream) with one route per path, each with its own
    openid-connect instance (own cache, own discovery) configured by `routes[path]`.
    JSON is valid config text and needs no quoting care for secrets and JWKs."""
    document = {
        "_format_version": "3.0",
        "_fastgw": {"admin_listen": None},
        "services": [
            {
                "name": "echo",
                "url": f"http://127.0.0.1:{echo_port}",
                "retries": 0,
                "routes": [
                    {
                        "name": path.strip("/").replace("/", "-") or "root",
                        "paths": [path],
                        "strip_path": False,
                        "plugins": [{"name": "openid-connect", "config": config}],
                    }
                    for path, config in routes.items()
                ],
            }
        ],
    }
    return json.dumps(document, indent=1)


def oidc(idp: TestIdP, **config: Any) -> dict[str, Any]:
    """A plugin config for `idp`: Kong's quick-start shape plus `config`."""
    base: dict[str, Any] = {
        "issuer": idp.issuer,
        "auth_methods": ["client_credentials"],
        "timeout": 3000,
    }
    base.update(config)
    return base


class EmbeddedGateway:
    """`Gateway` on 127.0.0.1:0 in its own uvloop loop and thread."""

    def __init__(self, config_text: str, env: dict[str, str] | None = None) -> None:
        import uvloop

        from fastgw.config import parse_config
        from fastgw.gateway import Gateway

        config = parse_config(config_text, env=env or {})
        self.loop = uvloop.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

        async def start() -> Gateway:
            gateway = Gateway(config, listen=("127.0.0.1", 0), admin_listen="off")
            await gateway.start()
            return gateway

        try:
            self.gateway = self.run(start())
        except BaseException:
            self._stop_loop()
            raise
        self.port = self.gateway.addresses[0][1]

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 15.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def _stop_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        if not self.thread.is_alive():
            self.loop.close()

    def close(self) -> None:
        try:
            self.run(self.gateway.stop(drain_timeout=1.0))
        finally:
            self._stop_loop()


@contextlib.contextmanager
def running_gateway(
    config_text: str, env: dict[str, str] | None = None
) -> Iterator[EmbeddedGateway]:
    gateway = EmbeddedGateway(config_text, env)
    try:
        yield gateway
    finally:
        gateway.close()


# -- the HTTP client ------------------------------------------------------------------------------


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    elapsed: float  # seconds from connect to the last byte

    def header(self, name: str) -> str | None:
        values = self.headers_named(name)
        return values[0] if values else None

    def headers_named(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key == name.lower()]

    def json(self) -> Any:
        return json.loads(self.body)


async def request(
    port: int,
    method: str = "GET",
    target: str = "/",
    *,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    timeout: float = REQUEST_TIMEOUT,
    host: str = GATEWAY_HOST,
    source: str | None = None,
) -> Response:
    """One request on a fresh connection (Connection: close), all of it within `timeout`;
    `source` is the client's address (any of 127.0.0.0/8 reaches the gateway on Linux)."""
    started = time.perf_counter()
    local = (source, 0) if source is not None else None
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=local)
        try:
            head = [f"{method} {target} HTTP/1.1", f"Host: {host}", "Connection: close"]
            head += [f"{name}: {value}" for name, value in headers]
            if body or method in ("POST", "PUT", "PATCH"):
                head.append(f"Content-Length: {len(body)}")
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
            await writer.drain()
            response = await _read_response(reader, head_only=method == "HEAD")
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    response.elapsed = time.perf_counter() - started
    return response


async def _read_response(reader: asyncio.StreamReader, *, head_only: bool) -> Response:
    status_line = (await reader.readline()).decode("latin-1").rstrip("\r\n")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
        raise AssertionError(f"not an HTTP response: {status_line!r}")
    status = int(parts[1])
    headers: list[tuple[str, str]] = []
    while True:
        line = (await reader.readline()).decode("latin-1").rstrip("\r\n")
        if not line:
            break
        name, _, value = line.partition(":")
        headers.append((name.strip().lower(), value.strip()))
    fields = dict(headers)
    if head_only or status in (204, 304) or 100 <= status < 200:
        body = b""
    elif fields.get("transfer-encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int((await reader.readline()).split(b";")[0].strip(), 16)
            if size == 0:
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass
                break
            chunks.append(await reader.readexactly(size))
            await reader.readline()
        body = b"".join(chunks)
    elif "content-length" in fields:
        body = await reader.readexactly(int(fields["content-length"]))
    else:
        body = await reader.read()
    return Response(status, headers, body, 0.0)


def basic(client_id: str, client_secret: str) -> str:
    """RFC 7617 Basic credentials as callers send them to the gateway (no form-encoding)."""
    return "Basic " + base64.b64encode(f"{client_id}:{client_secret}".encode()).decode("ascii")


# -- what the upstream saw ------------------------------------------------------------------------


@dataclass
class Echo:
    """The echo upstream's account of one proxied request."""

    method: str
    path: str
    headers: list[tuple[str, str]]
    body: str

    @classmethod
    def of(cls, response: Response) -> Echo:
        assert response.status == 200, (response.status, response.headers, response.body)
        document = response.json()
        return cls(
            document["method"],
            document["path"],
            [(name, value) for name, value in document["headers"]],
            document["body"],
        )

    def header_values(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key == name.lower()]

    @property
    def bearer(self) -> str:
        """The one `Authorization: Bearer` token the upstream received (recorded for the
        log checks)."""
        values = self.header_values("authorization")
        assert len(values) == 1, f"upstream got Authorization {values!r}"
        scheme, _, token = values[0].partition(" ")
        assert scheme == "Bearer" and token, values[0]
        SECRETS.add_token(token)
        return token

    def text(self) -> str:
        """Everything the upstream received, as one string to search for secrets."""
        lines = [f"{self.method} {self.path}"]
        lines += [f"{name}: {value}" for name, value in self.headers]
        return "\n".join(lines) + "\n\n" + self.body


def verify_token(idp: TestIdP, token: str, *, audience: str | None = None) -> dict[str, Any]:
    """Check `token` against the IdP's published JWKS the way a resource server would."""
    header = jwt.get_unverified_header(token)
    keys = {key["kid"]: key for key in idp.jwks()["keys"]}
    assert header.get("kid") in keys, f"kid {header.get('kid')!r} not in JWKS {sorted(keys)}"
    assert header["alg"] == idp.alg
    return jwt.decode(
        token,
        jwt.PyJWK(keys[header["kid"]]).key,
        algorithms=[idp.alg],
        audience=audience or idp.audience,
        issuer=idp.issuer,
    )


# -- secrets and logs -----------------------------------------------------------------------------


@dataclass
class Secrets:
    """Every secret and issued token the tests handled: none may appear in a log line."""

    values: set[str] = field(default_factory=set)

    def add(self, *values: str) -> None:
        self.values.update(value for value in values if value)

    def add_client(self, client_id: str, client_secret: str) -> None:
        self.add(client_secret, basic(client_id, client_secret).split(" ", 1)[1])

    def add_token(self, token: str) -> None:
        self.add(token, token.rsplit(".", 1)[-1])  # the signature part alone is telling too

    def found_in(self, text: str) -> list[str]:
        return sorted(value[:12] + "..." for value in self.values if value in text)


SECRETS = Secrets()


class LogCollector(logging.Handler):
    """Every record of the "fastgw" loggers, formatted with its traceback, whichever thread."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
        self.lines: list[str] = []
        self._lock_lines = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        text = self.format(record)
        with self._lock_lines:
            self.lines.append(text)

    def text(self) -> str:
        with self._lock_lines:
            return "\n".join(self.lines)


@contextlib.contextmanager
def collect_fastgw_logs() -> Iterator[LogCollector]:
    logger = logging.getLogger("fastgw")
    collector = LogCollector()
    previous = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(collector)
    try:
        yield collector
    finally:
        logger.removeHandler(collector)
        logger.setLevel(previous)


def caplog_text(caplog: Any) -> str:
    """The records caplog captured in the test's setup and call phases (in a fixture's teardown
    `caplog.text` holds only the teardown's), formatted with their tracebacks."""
    formatter = logging.Formatter("%(levelname)s %(name)s %(message)s")
    records = caplog.get_records("setup") + caplog.get_records("call")
    return "\n".join(formatter.format(record) for record in records)


def assert_no_secrets_in(text: str, where: str) -> None:
    leaked = SECRETS.found_in(text)
    assert not leaked, f"{where} contains secrets or tokens (prefixes): {leaked}"


def wait_until(predicate: Any, timeout: float = 5.0, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


# -- fixtures shared by the OIDC test modules (import them by name into a module to use them) -----


@pytest.fixture(scope="module", autouse=True)
def fastgw_logs() -> Iterator[LogCollector]:
    """Every "fastgw" log record of the module, the gateways' start and stop included."""
    with collect_fastgw_logs() as collector:
        yield collector
        # the gateways have stopped by now (module fixtures tear down in reverse order)
        assert_no_secrets_in(collector.text(), "the fastgw log")


@pytest.fixture(autouse=True)
def no_secrets_in_caplog(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.DEBUG, logger="fastgw")
    yield
    assert_no_secrets_in(caplog_text(caplog), "the fastgw log (caplog)")


@pytest.fixture(scope="module")
def echo_port() -> Iterator[int]:
    with echo_upstream() as port:
        yield port
