"""`ca_certificates`: a private CA trusted for an IdP served over HTTPS (every configured CA is)
and for an https upstream (the CAs its service lists); without them, TLS verification fails and
the answer says so (502), never a request served over an unverified connection."""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.oidc_support import (  # noqa: F401  fixtures, used by name
    SECRETS,
    Echo,
    basic,
    fastgw_logs,
    no_secrets_in_caplog,
    request,
    running_gateway,
)
from tests.support.certs import TestCa
from tests.support.echo import make_server
from tests.support.idp import BASIC_CLIENT, TestIdP

pytestmark = pytest.mark.integration

CA_ID = "0b4e8f3a-2c1d-4e5f-8a9b-7c6d5e4f3a2b"
SECRETS.add_client(*BASIC_CLIENT)


@pytest.fixture(scope="module")
def ca() -> TestCa:
    return TestCa("fastgw private CA")


@pytest.fixture(scope="module")
def tls_idp(ca: TestCa, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestIdP]:
    cert, key = ca.write_server_files(Path(tmp_path_factory.mktemp("idp-tls")))
    with TestIdP(tls=(cert, key, ca.pem)) as server:
        yield server


@pytest.fixture(scope="module")
def tls_echo_port(ca: TestCa, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    cert, key = ca.write_server_files(Path(tmp_path_factory.mktemp("echo-tls")))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = make_server(0)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def config(
    ca: TestCa, idp: TestIdP, upstream_port: int, *, trust_ca: bool, service_trusts: bool
) -> str:
    service: dict[str, object] = {
        "name": "secure",
        "url": f"https://127.0.0.1:{upstream_port}",
        "retries": 0,
        "routes": [{"paths": ["/"], "strip_path": False}],
        "plugins": [
            {
                "name": "openid-connect",
                "config": {"issuer": idp.issuer, "auth_methods": ["client_credentials"]},
            }
        ],
    }
    if service_trusts:
        service["ca_certificates"] = [CA_ID]
        service["tls_verify"] = True
    document: dict[str, object] = {
        "_format_version": "3.0",
        "_fastgw": {"admin_listen": None},
        "services": [service],
    }
    if trust_ca:
        document["ca_certificates"] = [{"id": CA_ID, "cert": ca.pem, "tags": ["private"]}]
    return json.dumps(document)


async def test_a_private_ca_in_ca_certificates_is_trusted_for_the_idp_and_the_upstream(
    ca: TestCa, tls_idp: TestIdP, tls_echo_port: int
) -> None:
    text = config(ca, tls_idp, tls_echo_port, trust_ca=True, service_trusts=True)
    with running_gateway(text) as gateway:
        header = ("Authorization", basic(*BASIC_CLIENT))
        echo = Echo.of(await request(gateway.port, "GET", "/secure", headers=[header]))
        assert echo.path == "/secure"
        assert echo.bearer


async def test_without_the_ca_the_idp_is_not_trusted(
    ca: TestCa, tls_idp: TestIdP, tls_echo_port: int
) -> None:
    text = config(ca, tls_idp, tls_echo_port, trust_ca=False, service_trusts=False)
    before = tls_idp.stats()["token_requests"]
    with running_gateway(text) as gateway:
        header = ("Authorization", basic(*BASIC_CLIENT))
        response = await request(gateway.port, "GET", "/secure", headers=[header])
        assert response.status == 502, (response.status, response.body)
        assert response.json() == {"message": "identity provider unavailable"}
        assert tls_idp.stats()["token_requests"] == before  # the secret went nowhere


async def test_a_service_not_listing_the_ca_does_not_trust_its_upstream(
    ca: TestCa, tls_idp: TestIdP, tls_echo_port: int
) -> None:
    text = config(ca, tls_idp, tls_echo_port, trust_ca=True, service_trusts=False)
    with running_gateway(text) as gateway:
        header = ("Authorization", basic(*BASIC_CLIENT))
        response = await request(gateway.port, "GET", "/secure", headers=[header])
        assert response.status == 502, (response.status, response.body)
