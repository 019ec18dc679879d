"""HTTPS listeners with real clients: curl --cacert, openssl s_client, Python ssl.

The default certificate (ssl_cert / ssl_cert_key files), a certificate entity chosen by SNI (PEM
inline as decK writes it), unknown SNI -> default, TLS 1.0/1.1 refused, ALPN http/1.1, session
resumption, routes that require TLS, X-Forwarded-Proto/Port, and config errors at `fastgw check`.
"""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import textwrap

import pytest

from tests.integration.conftest import PYTHON, ROOT, free_port
from tests.support.tls import session_pki

pytestmark = pytest.mark.integration


def indent(pem: str, spaces: int) -> str:
    return textwrap.indent(pem, " " * spaces)


def tls_config(echo_port: int, plain: int, secure: int) -> str:
    pki = session_pki()
    cert, key = pki.other.texts()
    return f"""\
_format_version: "3.0"
_fastgw:
  listen: ["127.0.0.1:{plain}", "127.0.0.1:{secure} ssl"]
  admin_listen: null
  ssl_cert: {pki.default.cert}
  ssl_cert_key: {pki.default.key}
certificates:
  - cert: |
{indent(cert, 6)}    key: |
{indent(key, 6)}    snis:
      - name: api.example.test
      - name: "*.wild.test"
services:
  - name: echo
    url: http://127.0.0.1:{echo_port}
    routes:
      - name: any
        paths: [/echo]
        strip_path: false
      - name: secure
        paths: [/secure]
        protocols: [https]
      - name: moved
        paths: [/moved]
        protocols: [https]
        https_redirect_status_code: 308
      - name: by-sni
        paths: [/sni]
        snis: [api.example.test]
        protocols: [https]
"""


@pytest.fixture
def tls_gateway(run_cli, echo):
    plain, secure = free_port(), free_port()
    cli = run_cli(tls_config(echo.port, plain, secure), listen=None)
    cli.log.wait_for(rf"listening on .*127\.0\.0\.1:{secure} ssl")
    return plain, secure


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["curl", "-sS", "--max-time", "5", *args], capture_output=True, text=True, timeout=10
    )


def s_client(port: int, *args: str) -> str:
    result = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", *args],
        input="",
        capture_output=True,
        text=True,
        timeout=10,
    )
    return result.stdout + result.stderr


needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is missing")
needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is missing")


@needs_curl
def test_curl_verifies_the_default_certificate_and_gets_https_forwarding(tls_gateway) -> None:
    _, secure = tls_gateway
    ca = str(session_pki().ca)
    result = curl("--cacert", ca, "--resolve", f"gw.test:{secure}:127.0.0.1",
                  f"https://gw.test:{secure}/echo")  # fmt: skip
    assert result.returncode == 0, result.stderr
    headers = dict(json.loads(result.stdout)["headers"])
    assert headers["x-forwarded-proto"] == "https"
    assert headers["x-forwarded-port"] == str(secure)


@needs_curl
def test_curl_gets_the_certificate_entity_for_its_sni(tls_gateway) -> None:
    _, secure = tls_gateway
    ca = str(session_pki().ca)
    for name in ("api.example.test", "x.wild.test"):
        result = curl("--cacert", ca, "--resolve", f"{name}:{secure}:127.0.0.1",
                      f"https://{name}:{secure}/echo")  # fmt: skip
        assert result.returncode == 0, (name, result.stderr)
    # the default certificate does not name api.example.test: curl would refuse it
    result = curl("--cacert", ca, "--resolve", f"nope.test:{secure}:127.0.0.1",
                  f"https://nope.test:{secure}/echo")  # fmt: skip
    assert result.returncode != 0


@needs_openssl
def test_openssl_sni_picks_the_certificate_and_unknown_sni_gets_the_default(tls_gateway) -> None:
    _, secure = tls_gateway
    assert "CN = api.example.test" in s_client(secure, "-servername", "api.example.test")
    assert "CN = gw.test" in s_client(secure, "-servername", "unknown.test")
    assert "CN = gw.test" in s_client(secure, "-noservername")
    output = s_client(secure, "-servername", "gw.test", "-alpn", "http/1.1")
    assert "ALPN protocol: http/1.1" in output


@needs_openssl
def test_tls_10_and_11_are_refused(tls_gateway) -> None:
    _, secure = tls_gateway
    for flag in ("-tls1", "-tls1_1"):
        output = s_client(secure, flag, "-servername", "gw.test")
        assert "Cipher is (NONE)" in output or "no protocols available" in output, output
    assert "Protocol  : TLSv1.2" in s_client(secure, "-tls1_2", "-servername", "gw.test") or (
        "TLSv1.2" in s_client(secure, "-tls1_2", "-servername", "gw.test")
    )


def test_python_ssl_resumes_a_session(tls_gateway) -> None:
    import socket

    _, secure = tls_gateway
    context = ssl.create_default_context(cafile=str(session_pki().ca))
    context.maximum_version = ssl.TLSVersion.TLSv1_2  # session IDs/tickets, read back at once
    with (
        socket.create_connection(("127.0.0.1", secure)) as raw,
        context.wrap_socket(raw, server_hostname="gw.test") as first,
    ):
        first.sendall(b"GET /echo HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n")
        while first.recv(65536):
            pass
        session = first.session
    with (
        socket.create_connection(("127.0.0.1", secure)) as raw,
        context.wrap_socket(raw, server_hostname="gw.test", session=session) as second,
    ):
        assert second.session_reused


def test_routes_requiring_https_answer_426_or_redirect_over_plain_http(tls_gateway, connect):
    plain, _ = tls_gateway
    client = connect(plain)
    refused = client.request("GET", "/secure/x?a=1")
    assert refused.status == 426
    assert json.loads(refused.body) == {"message": "Please use HTTPS protocol"}
    assert refused.header("upgrade") == "TLS/1.2, HTTP/1.1"
    moved = client.request("GET", "/moved/a%2Fb?q=1", host="gw.test:8000")
    assert moved.status == 308
    assert moved.header("location") == "https://gw.test/moved/a%2Fb?q=1"
    assert client.request("GET", "/echo").status == 200  # the connection stays usable


def test_a_route_with_snis_matches_only_that_sni(tls_gateway) -> None:
    import socket

    _, secure = tls_gateway
    context = ssl.create_default_context(cafile=str(session_pki().ca))

    def status(name: str) -> int:
        request = f"GET /sni HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n"
        with (
            socket.create_connection(("127.0.0.1", secure)) as raw,
            context.wrap_socket(raw, server_hostname=name) as tls,
        ):
            tls.sendall(request.encode())
            data = b""
            while chunk := tls.recv(65536):
                data += chunk
        return int(data.split(b" ", 2)[1])

    assert status("api.example.test") == 200
    assert status("x.wild.test") == 404  # another certificate's name, not the route's SNI


def check(config_text: str, tmp_path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "kong.yml"
    path.write_text(config_text)
    return subprocess.run(
        [PYTHON, "-m", "fastgw", "check", "-c", str(path)],
        cwd=ROOT, capture_output=True, text=True, timeout=30,
    )  # fmt: skip


def test_fastgw_check_names_a_mismatched_or_bad_certificate(tmp_path) -> None:
    pki = session_pki()
    cert, _ = pki.default.texts()
    _, other_key = pki.stray.texts()
    mismatched = tls_config(9, 1, 2).replace(
        f"ssl_cert_key: {pki.default.key}", f"ssl_cert_key: {pki.stray.key}"
    )
    result = check(mismatched, tmp_path)
    assert result.returncode == 1
    assert "_fastgw.ssl_cert: certificate does not match key" in result.stdout + result.stderr
    entity = tls_config(9, 1, 2).replace(
        pki.other.key.read_text().splitlines()[1],
        "AAAA" + pki.other.key.read_text().splitlines()[1][4:],
    )
    result = check(entity, tmp_path)
    assert result.returncode == 1
    assert "certificates[0]" in result.stdout + result.stderr
    missing = tls_config(9, 1, 2).replace(f"  ssl_cert: {pki.default.cert}\n", "")
    result = check(missing, tmp_path)
    assert result.returncode == 1
    assert "ssl_cert" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    del cert, other_key
