"""What the access-plugin tests share: a gateway of one service over memory transports (the
edge plugins' harness, tests/unit/edge_plugins/gateway_wire.py) and the upstream request's
headers as a table."""

from __future__ import annotations

from tests.unit.edge_plugins.gateway_wire import GatewayWire, Response, answer, get, settle

__all__ = ["GatewayWire", "Response", "answer", "get", "settle", "upstream_headers", "wire"]


SERVICE = """
services:
  - {name: api, url: http://127.0.0.1:9, routes: [{name: r, paths: [/]}]}
"""


def wire(body: str) -> GatewayWire:
    """A gateway whose document is `body` after `_format_version` (the service `api` at
    127.0.0.1:9 is given by `body`, or added when absent)."""
    document = '_format_version: "3.0"\n' + body
    if "services:" not in body:
        document += SERVICE
    return GatewayWire(document)


def upstream_headers(request: bytes) -> dict[str, list[str]]:
    """The header fields of the request the upstream received, lower-case names."""
    head = request.partition(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")[1:]
    table: dict[str, list[str]] = {}
    for line in head:
        name, _, value = line.partition(":")
        table.setdefault(name.strip().lower(), []).append(value.strip())
    return table


def request_line(request: bytes) -> str:
    return request.partition(b"\r\n")[0].decode("latin-1")
