"""The request handler: the path is normalised before routing, then route, rewrite and chain."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from fastgw.config import parse_config
from fastgw.gateway import Gateway
from fastgw.http.exchange import Exchange
from tests.support.wire import FakeTransport

Handler = Callable[[Exchange], Awaitable[None] | None]

CONFIG = """
_format_version: "3.0"
services:
  - name: admin
    url: http://127.0.0.1:9/internal
    routes: [{paths: ["/admin"]}]
  - name: api
    url: http://127.0.0.1:10
    routes: [{paths: ["/api"], strip_path: false}]
"""


class Dispatch:
    """The gateway's request handler, fed exchanges of one real client connection."""

    def __init__(self) -> None:
        gateway = Gateway(parse_config(CONFIG), admin_listen="off")
        self.handler: Handler = gateway.proxy.handler
        self.client = gateway.proxy.protocol_factory()
        self.client.connection_made(FakeTransport())  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def handle() -> Dispatch:
    return Dispatch()


def dispatch(handle: Dispatch, path: bytes) -> Exchange:
    exchange = Exchange(handle.client, b"GET", path, b"", b"gw.test", [], True)
    assert handle.handler(exchange) is None  # no plugins: nothing to await
    return exchange


@pytest.mark.parametrize(
    ("path", "upstream_path"),
    [
        (b"/admin/x", b"/internal/x"),
        (b"/api/../admin/x", b"/internal/x"),  # routed on the normalised path, as Kong does
        (b"/%61dmin/x", b"/internal/x"),  # an unreserved escape is the letter itself
        (b"/admin/./x", b"/internal/x"),
        (b"//admin//x", b"/internal/x"),
        (b"/api/v1", b"/api/v1"),
        (b"/api/%2Fv1", b"/api/%2Fv1"),  # a reserved escape stays as it is
    ],
)
def test_the_normalised_path_is_routed_and_sent(
    handle: Dispatch, path: bytes, upstream_path: bytes
) -> None:
    exchange = dispatch(handle, path)
    assert not exchange.responded
    assert exchange.target is not None
    assert exchange.upstream_path == upstream_path


@pytest.mark.parametrize("path", [b"/../admin", b"/api/%zz", b"/api/%2"])
def test_a_path_above_the_root_or_badly_escaped_is_400(handle: Dispatch, path: bytes) -> None:
    exchange = dispatch(handle, path)
    assert exchange.responded and exchange.local_status == 400
    assert exchange.target is None


def test_no_route_is_404(handle: Dispatch) -> None:
    exchange = dispatch(handle, b"/other")
    assert exchange.responded and exchange.local_status == 404
