"""Headers the gateway owns never come from the client: Kong's identity headers are dropped on
every route (before plugins run), and the "_" alias of any header the gateway or a configured
plugin sets is dropped even with `underscores_in_headers: true` (CGI and WSGI upstreams read
X_Consumer_ID as X-Consumer-ID).
"""

from __future__ import annotations

import json

from tests.integration.conftest import proxy_config

OIDC_ROUTE = """\
  - name: protected
    url: http://127.0.0.1:9
    routes:
      - name: claims
        paths: [/protected]
        plugins:
          - name: openid-connect
            config:
              issuer: http://127.0.0.1:9/
              auth_methods: [client_credentials]
              upstream_headers_claims: [email]
              upstream_headers_names: [x-user-email]
"""


def test_forged_identity_and_owned_aliases_never_reach_the_upstream(
    make_gateway, echo, closed_port, connect
) -> None:
    gateway = make_gateway(
        proxy_config(echo.port, closed_port, underscores_in_headers="true") + OIDC_ROUTE
    )
    client = connect(gateway.port)
    forged = [
        ("X-Consumer-ID", "forged"),
        ("X_Consumer_ID", "forged"),
        ("X-Consumer-Username", "forged"),
        ("X_Consumer_Username", "forged"),
        ("X_Anonymous_Consumer", "false"),
        ("X-Credential-Identifier", "forged"),
        ("X_Consumer_Groups", "admins"),
        ("X-Authenticated-Groups", "admins"),
        ("X_User_Email", "boss@example.com"),  # the alias of a header openid-connect sets
        ("X_Custom", "kept"),  # aliases nothing: underscores_in_headers forwards it
    ]
    response = client.request("GET", "/echo/who", forged)
    assert response.status == 200
    names = [name for name, _ in json.loads(response.body)["headers"]]
    assert "x_custom" in names
    assert not [n for n in names if n.replace("_", "-").startswith(("x-consumer", "x-anonymous"))]
    assert not {"x-credential-identifier", "x-authenticated-groups", "x_user_email"} & set(names)
