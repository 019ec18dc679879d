"""A real gateway (config, dispatch, chain, plugins, wire) driven over memory transports: the
test writes the client's bytes and plays the upstream, and reads what each side received.

No sockets, no loop unless a plugin awaits (then the test is async and calls `settle`).
"""

from __future__ import annotations

from dataclasses import dataclass

from fastgw.config import parse_config
from fastgw.gateway import Gateway
from fastgw.http.upstream import UpstreamConnection
from tests.support.wire import FakeTransport, MemoryUpstreamTransport, settle

__all__ = ["GatewayWire", "Response", "answer", "get", "settle"]


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]  # lower-case names, in order
    body: bytes

    def get(self, name: str) -> str | None:
        values = self.all(name)
        return values[0] if values else None

    def all(self, name: str) -> list[str]:
        return [value for field, value in self.headers if field == name]


def parse_response(data: bytes) -> Response:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.append((name.strip().lower(), value.strip()))
    return Response(status, headers, body)


def answer(body: bytes = b"ok", status: str = "200 OK", **fields: str) -> bytes:
    """An upstream response with Content-Length; `fields` as keyword names (`_` for `-`)."""
    lines = "".join(f"{name.replace('_', '-')}: {value}\r\n" for name, value in fields.items())
    return b"HTTP/1.1 %b\r\n%bcontent-length: %d\r\n\r\n%b" % (
        status.encode(),
        lines.encode(),
        len(body),
        body,
    )


class GatewayWire:
    """One client connection to a gateway of `config`; each service's pool holds one upstream
    connection the test answers on."""

    def __init__(self, config: str) -> None:
        self.gateway = Gateway(parse_config(config, env={}), admin_listen="off")
        self.upstreams: list[UpstreamConnection] = []
        for pool in self.gateway.pools:
            upstream = UpstreamConnection(pool)
            upstream.connection_made(MemoryUpstreamTransport())  # type: ignore[arg-type]
            pool.idle.append(upstream)
            self.upstreams.append(upstream)
        self.transport = FakeTransport()
        self.client = self.gateway.proxy.protocol_factory()
        self.client.connection_made(self.transport)  # type: ignore[arg-type]
        self.forwarded: list[bytes] = []  # every request the upstreams received, in order

    def plugin(self, name: str) -> object:
        (plugin,) = [p for p in self.gateway.plugins if p.name == name]
        return plugin

    def send(self, request: bytes) -> None:
        self.client.data_received(request)

    def upstream_received(self, index: int = 0) -> bytes:
        """What upstream `index` received since the last call (b"": the request did not go)."""
        transport = self.upstreams[index].transport
        assert isinstance(transport, MemoryUpstreamTransport)
        data = bytes(transport.written)
        transport.written.clear()
        if data:
            self.forwarded.append(data)
        return data

    def respond(self, response: bytes, index: int = 0) -> None:
        self.upstreams[index].data_received(response)

    def response(self) -> Response:
        return parse_response(self.transport.take())

    def exchange(self, request: bytes, upstream: bytes | None = None) -> Response:
        """Send `request`; if it reached the upstream, answer it with `upstream`."""
        self.send(request)
        if self.upstream_received() and upstream is not None:
            self.respond(upstream)
        return self.response()


def get(path: str, *fields: str, method: str = "GET", body: bytes = b"") -> bytes:
    """A request's bytes: `fields` are "Name: value" lines."""
    lines = "".join(f"{field}\r\n" for field in fields)
    length = f"Content-Length: {len(body)}\r\n" if body or method in ("POST", "PUT") else ""
    return f"{method} {path} HTTP/1.1\r\nHost: gw.test\r\n{lines}{length}\r\n".encode() + body
