"""Path forms only some upstreams resolve, through a real gateway: `/open/..%2Fsecure` (an
upstream that decodes `%2F` first) and `/open\\..\\secure` (Node's URL, IIS) reach `/secure` there
while the gateway routed them under `/open`. Kept as they came by default (Kong, nginx); with
Envoy's actions they are refused, redirected, or routed as the upstream will read them.
"""

from __future__ import annotations

import json

import pytest

from tests.integration.conftest import proxy_config

ROUTES = """\
  - name: split
    url: http://127.0.0.1:{echo}
    routes:
      - {{name: open, paths: [/open], strip_path: false}}
      - name: secure
        paths: [/secure]
        plugins:
          - name: request-termination
            config: {{status_code: 403, message: Forbidden}}
"""
ESCAPED = "/open/..%2Fsecure"
BACKSLASHED = "/open\\..\\secure"


def gateway_with(make_gateway, echo, closed_port, **settings: str):
    return make_gateway(
        proxy_config(echo.port, closed_port, **settings) + ROUTES.format(echo=echo.port)
    )


def test_by_default_both_forms_are_routed_and_forwarded_as_they_came(
    make_gateway, echo, closed_port, connect
) -> None:
    client = connect(gateway_with(make_gateway, echo, closed_port).port)
    for target in (ESCAPED, BACKSLASHED):
        response = client.request("GET", target)
        assert response.status == 200 and json.loads(response.body)["path"] == target


@pytest.mark.parametrize(
    ("action", "status", "location"),
    [
        ("reject_request", 400, None),
        ("unescape_and_redirect", 307, "/secure"),
        ("unescape_and_forward", 403, None),  # routed as /secure: its plugin answers
    ],
)
def test_each_action_applies_to_both_forms(
    make_gateway, echo, closed_port, connect, action: str, status: int, location: str | None
) -> None:
    gateway = gateway_with(
        make_gateway,
        echo,
        closed_port,
        path_with_escaped_slashes_action=action,
        path_backslash_action=action,
    )
    client = connect(gateway.port)
    for target in (ESCAPED, BACKSLASHED):
        response = client.request("GET", target + "?q=1")
        assert response.status == status, (target, response)
        if location is not None:
            assert response.header("location") == location + "?q=1"
    assert client.request("GET", "/open/fine").status == 200
