"""fastgw.http.client against a tiny asyncio server on 127.0.0.1 (loopback, port 0)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from fastgw.http.client import (
    ConnectError,
    HttpClient,
    ProtocolError,
    RequestTimeout,
    ResponseTooLarge,
)

# (request head, request body) -> raw response bytes, or None to close without answering
Responder = Callable[[bytes, bytes, int], Awaitable[bytes | None]]


class Server:
    """Reads requests one by one per connection; `responder` decides the raw answer."""

    def __init__(self, responder: Responder) -> None:
        self.responder = responder
        self.connections = 0
        self.requests: list[tuple[bytes, bytes]] = []
        self.port = 0
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        index_on_connection = 0
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.lower() == b"content-length":
                        length = int(value)
                body = await reader.readexactly(length) if length else b""
                self.requests.append((head, body))
                answer = await self.responder(head, body, index_on_connection)
                index_on_connection += 1
                if answer is None:
                    return
                writer.write(answer)
                await writer.drain()
                if b"connection: close" in answer.lower():
                    return
        finally:
            writer.close()


def fixed(status: int = 200, body: bytes = b"ok", extra: bytes = b"") -> bytes:
    return (
        f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n".encode() + extra + b"\r\n" + body
    )


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Responder], Awaitable[Server]]]:
    servers: list[Server] = []

    async def start(responder: Responder) -> Server:
        server = Server(responder)
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()


@pytest.fixture
async def client() -> AsyncIterator[HttpClient]:
    http = HttpClient()
    yield http
    await http.close()


async def test_keepalive_reuses_one_connection(serve, client) -> None:
    async def answer(head: bytes, body: bytes, index: int) -> bytes:
        return fixed(200, b"hello %d" % index, b"X-Thing: a\r\nX-Thing: b\r\n")

    server = await serve(answer)
    for index in range(3):
        response = await client.request("GET", server.url("/p?q=1"))
        assert response.status == 200
        assert response.body == b"hello %d" % index
        assert response.headers["x-thing"] == "a, b"
    assert server.connections == 1
    first_head = server.requests[0][0]
    assert first_head.startswith(b"GET /p?q=1 HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{server.port}".encode() in first_head


async def test_post_sends_body_and_length(serve, client) -> None:
    async def answer(head: bytes, body: bytes, index: int) -> bytes:
        return fixed(201, body[::-1])

    server = await serve(answer)
    response = await client.request(
        "POST", server.url("/t"), headers={"X-Custom": "v"}, body=b"abc"
    )
    assert (response.status, response.body) == (201, b"cba")
    head = server.requests[0][0]
    assert b"Content-Length: 3\r\n" in head
    assert b"X-Custom: v\r\n" in head


async def test_chunked_body(serve, client) -> None:
    async def answer(head: bytes, body: bytes, index: int) -> bytes:
        return (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\n\r\n"
        )

    server = await serve(answer)
    response = await client.request("GET", server.url())
    assert response.body == b"hello world"
    await client.request("GET", server.url())
    assert server.connections == 1  # a chunked answer leaves the connection reusable


async def test_close_delimited_body_is_read_to_eof_and_not_reused(serve, client) -> None:
    async def answer(head: bytes, body: bytes, index: int) -> bytes:
        return b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end"

    server = await serve(answer)
    first = await client.request("GET", server.url())
    second = await client.request("GET", server.url())
    assert first.body == second.body == b"until the end"
    assert server.connections == 2


async def test_no_body_statuses(serve, client) -> None:
    async def answer(head: bytes, body: bytes, index: int) -> bytes:
        return b"HTTP/1.1 204 No Content\r\n\r\n"

    server = await serve(answer)
    response = await client.request("DELETE", server.url())
    assert (response.status, response.body) == (204, b"")


async def test_head_request_does_not_wait_for_a_body(serve, client) -> None:
    async def answer(head: bytes, body: bytes, index: int) -> bytes:
        return b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"

    server = await serve(answer)
    response = await client.request("HEAD", server.url(), timeout=2)
    assert (response.status, response.body, response.headers["content-length"]) == (
        200,
        b"",
        "100",
    )


async def test_interim_response_is_skipped(serve, client) -> None:
    async def answer(head: bytes, body: bytes, index: int) -> bytes:
        return b"HTTP/1.1 100 Continue\r\nX-Interim: 1\r\n\r\n" + fixed(200, b"final")

    server = await serve(answer)
    response = await client.request("GET", server.url())
    assert response.body == b"final"
    assert "x-interim" not in response.headers


async def test_announced_body_too_large(serve, client) -> None:
    async def answer(head: bytes, body: bytes, index: int) -> bytes:
        return fixed(200, b"x" * 100)

    server = await serve(answer)
    with pytest.raises(ResponseTooLarge):
        await client.request("GET", server.url(), max_body=99)
    response = await client.request("GET", server.url(), max_body=100)
    assert len(response.body) == 100


async def test_chunked_body_too_large(serve, client) -> None:
    async def answer(head: bytes, body: bytes, index: int) -> bytes:
        chunks = b"".join(b"a\r\n0123456789\r\n" for _ in range(10))
        return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n"

    server = await serve(answer)
    with pytest.raises(ResponseTooLarge):
        await client.request("GET", server.url(), max_body=55)


async def test_timeout_bounds_the_whole_exchange(serve, client) -> None:
    async def answer(head: bytes, body: bytes, index: int) -> bytes:
        await asyncio.sleep(10)
        return fixed()

    server = await serve(answer)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(RequestTimeout):
        await client.request("GET", server.url(), timeout=0.2)
    assert loop.time() - started < 1.0


async def test_malformed_response(serve, client) -> None:
    async def answer(head: bytes, body: bytes, index: int) -> bytes:
        return b"this is not HTTP\r\n\r\n"

    server = await serve(answer)
    with pytest.raises(ProtocolError):
        await client.request("GET", server.url())


async def test_connection_closed_mid_body(serve, client) -> None:
    async def answer(head: bytes, body: bytes, index: int) -> bytes:
        return b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\nConnection: close\r\n\r\nshort"

    server = await serve(answer)
    with pytest.raises(ConnectError):
        await client.request("GET", server.url())


async def test_connect_refused(serve, client) -> None:
    async def answer(head: bytes, body: bytes, index: int) -> bytes:
        return fixed()

    server = await serve(answer)
    url = server.url()
    await server.stop()
    with pytest.raises(ConnectError):
        await client.request("GET", url)


async def stale_after_first(head: bytes, body: bytes, index: int) -> bytes | None:
    # answers the first request on a connection keep-alive, then drops the connection on
    # the second without a byte: what a server that timed out the idle connection does
    return fixed(200, b"fresh") if index == 0 else None


async def test_stale_pooled_connection_is_retried_for_idempotent_requests(serve, client) -> None:
    server = await serve(stale_after_first)
    await client.request("GET", server.url())
    response = await client.request("GET", server.url())
    assert response.body == b"fresh"
    assert server.connections == 2


async def test_stale_pooled_connection_is_not_retried_for_post(serve, client) -> None:
    server = await serve(stale_after_first)
    await client.request("POST", server.url(), body=b"x")
    with pytest.raises(ConnectError):
        await client.request("POST", server.url(), body=b"x")
    assert server.connections == 1


async def test_keepalive_off_sends_connection_close(serve) -> None:
    async def answer(head: bytes, body: bytes, index: int) -> bytes:
        return fixed()

    server = await serve(answer)
    http = HttpClient(keepalive=False)
    try:
        await http.request("GET", server.url())
        await http.request("GET", server.url())
    finally:
        await http.close()
    assert b"Connection: close\r\n" in server.requests[0][0]
    assert server.connections == 2


async def test_connections_per_host_are_bounded(serve) -> None:
    async def answer(head: bytes, body: bytes, index: int) -> bytes:
        await asyncio.sleep(0.05)
        return fixed()

    server = await serve(answer)
    http = HttpClient(max_connections_per_host=2)
    try:
        await asyncio.gather(*(http.request("GET", server.url()) for _ in range(6)))
    finally:
        await http.close()
    assert server.connections == 2


async def test_header_injection_is_refused(client) -> None:
    with pytest.raises(ValueError):
        await client.request("GET", "http://127.0.0.1:9/", headers={"X-A": "v\r\nX-B: w"})


async def test_unsupported_scheme(client) -> None:
    with pytest.raises(ValueError):
        await client.request("GET", "ftp://127.0.0.1/")


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory = tmp_path_factory.mktemp("tls")
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_path), str(key_path)


async def test_https_verifies_certificates_unless_told_not_to(tls_files) -> None:
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*tls_files)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(fixed(200, b"secure"))
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    url = f"https://localhost:{port}/"
    verifying, trusting = HttpClient(), HttpClient(verify_tls=False)
    try:
        with pytest.raises(ConnectError):
            await verifying.request("GET", url, timeout=5)
        response = await trusting.request("GET", url, timeout=5)
        assert response.body == b"secure"
    finally:
        await verifying.close()
        await trusting.close()
        server.close()
        await server.wait_closed()
