"""Smoke tests for the real OIDC provider in tests/idp, driven through tests/support/idp."""

from __future__ import annotations

import base64
import json
import sys
import threading
import time
import urllib.parse
from pathlib import Path

import jwt
import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # `pytest` (not `python -m pytest`) may not have the repo root
    sys.path.insert(0, str(ROOT))

from tests.support.idp import (  # noqa: E402
    BASIC_CLIENT,
    JWT_CLIENT,
    ODD_CLIENT,
    PKJWT_CLIENT_ID,
    POST_CLIENT,
    IdpError,
    TestIdP,
    basic_auth_header,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def idp():
    with TestIdP(alg="RS256") as server:
        yield server


@pytest.fixture(scope="module")
def idp_es256():
    with TestIdP(alg="ES256", access_token_ttl=120) as server:
        yield server


@pytest.fixture(autouse=True)
def _clean_switches(request):
    yield
    if "idp" in request.fixturenames:
        server = request.getfixturevalue("idp")
        if server.running:
            server.set_delay(0)
            server.set_fail(0)


def _header(token: str) -> dict:
    return jwt.get_unverified_header(token)


def _verify(server: TestIdP, token: str) -> dict:
    """Verify a token against the IdP's JWKS the way a resource server would."""
    kid = _header(token)["kid"]
    keys = {k["kid"]: k for k in server.jwks()["keys"]}
    assert kid in keys, f"kid {kid} not in JWKS {sorted(keys)}"
    key = jwt.PyJWK(keys[kid]).key
    return jwt.decode(
        token,
        key,
        algorithms=[server.alg],
        audience=server.audience,
        issuer=server.issuer,
    )


def test_discovery(idp):
    doc = idp.discovery()
    assert doc["issuer"] == idp.issuer == f"http://127.0.0.1:{idp.port}"
    assert doc["token_endpoint"] == idp.token_endpoint
    assert doc["jwks_uri"] == idp.jwks_uri
    assert "client_credentials" in doc["grant_types_supported"]
    assert {
        "client_secret_basic",
        "client_secret_post",
        "client_secret_jwt",
        "private_key_jwt",
    } <= set(doc["token_endpoint_auth_methods_supported"])
    assert doc["introspection_endpoint"] == idp.introspection_endpoint
    assert doc["revocation_endpoint"] == idp.revocation_endpoint


def test_basic_auth_urlencoded_odd_client(idp):
    client_id, secret = ODD_CLIENT
    # Raw request, spelled out: RFC 6749 §2.3.1 form-urlencodes id and secret before base64.
    creds = f"{urllib.parse.quote_plus(client_id)}:{urllib.parse.quote_plus(secret)}"
    auth = "Basic " + base64.b64encode(creds.encode()).decode()
    assert auth == basic_auth_header(client_id, secret)
    status, _, body = idp.request(
        "POST",
        "/token",
        form={"grant_type": "client_credentials", "scope": "read write"},
        headers={"Authorization": auth},
    )
    assert status == 200, body
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert body["scope"] == "read write"
    token = body["access_token"]
    header = _header(token)
    assert header["alg"] == "RS256"
    assert header["typ"] == "at+jwt"
    claims = _verify(idp, token)
    assert claims["client_id"] == client_id
    assert claims["sub"] == client_id
    assert claims["scope"] == "read write"
    assert claims["aud"] == "urn:fastgw:api"
    assert claims["exp"] - claims["iat"] == 3600
    assert {"jti", "iat", "exp", "iss"} <= claims.keys()


@pytest.mark.parametrize(
    "client_id",
    [BASIC_CLIENT[0], POST_CLIENT[0], JWT_CLIENT[0], PKJWT_CLIENT_ID],
)
def test_every_auth_method(idp, client_id):
    body = idp.token(client_id, scope="read")
    claims = _verify(idp, body["access_token"])
    assert claims["client_id"] == client_id
    assert claims["scope"] == "read"


def test_es256_variant(idp_es256):
    body = idp_es256.token(*POST_CLIENT, scope="openid admin")
    token = body["access_token"]
    header = _header(token)
    assert header["alg"] == "ES256"
    assert header["typ"] == "at+jwt"
    jwks = idp_es256.jwks()
    assert [k["kty"] for k in jwks["keys"]] == ["EC"]
    assert all("d" not in k for k in jwks["keys"])
    claims = _verify(idp_es256, token)
    assert claims["exp"] - claims["iat"] == 120
    assert claims["scope"] == "openid admin"


def test_wrong_secret_is_401_invalid_client(idp):
    idp.reset_stats()
    status, headers, body = idp.token_response(BASIC_CLIENT[0], "not-the-secret")
    assert status == 401
    assert body["error"] == "invalid_client"
    assert headers["www-authenticate"].lower().startswith("basic")
    with pytest.raises(IdpError) as info:
        idp.token(POST_CLIENT[0], "nope")
    assert info.value.status == 401
    stats = idp.stats()
    assert stats["token_requests"] == 2
    assert stats["token_errors"] == 2
    assert stats["token_success"] == 0


def test_stats_count_requests(idp):
    idp.reset_stats()
    assert idp.stats()["token_requests"] == 0
    for _ in range(3):
        idp.token(*BASIC_CLIENT)
    idp.discovery()
    idp.jwks()
    idp.jwks()
    stats = idp.stats()
    assert stats["token_requests"] == 3
    assert stats["token_success"] == 3
    assert stats["token_errors"] == 0
    assert stats["discovery_requests"] == 1
    assert stats["jwks_requests"] == 2
    idp.reset_stats()
    assert idp.stats()["token_requests"] == 0


def test_delay_switch(idp):
    idp.set_delay(300)
    t0 = time.monotonic()
    idp.token(*BASIC_CLIENT)
    assert time.monotonic() - t0 >= 0.3
    # concurrent requests are each delayed, not serialised
    results: list[float] = []

    def one():
        start = time.monotonic()
        idp.token(*BASIC_CLIENT)
        results.append(time.monotonic() - start)

    threads = [threading.Thread(target=one) for _ in range(4)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4
    assert time.monotonic() - t0 < 1.2
    idp.set_delay(0)
    t0 = time.monotonic()
    idp.token(*BASIC_CLIENT)
    assert time.monotonic() - t0 < 0.3


def test_fail_switch(idp):
    idp.reset_stats()
    idp.set_fail(503)
    status, headers, body = idp.token_response(*BASIC_CLIENT)
    assert status == 503
    assert body["error"] == "temporarily_unavailable"
    assert headers["content-type"].startswith("application/json")
    # discovery and JWKS keep working while the token endpoint fails
    assert idp.discovery()["issuer"] == idp.issuer
    idp.set_fail(0)
    assert "access_token" in idp.token(*BASIC_CLIENT)
    stats = idp.stats()
    assert stats["token_requests"] == 2
    assert stats["token_errors"] == 1
    assert stats["token_success"] == 1


def test_introspection_endpoint(idp):
    token = idp.token(*POST_CLIENT, scope="read")["access_token"]
    status, _, body = idp.request("POST", "/token/introspection", form={"token": token})
    assert status in (400, 401), body  # client authentication is required
    status, _, body = idp.request(
        "POST",
        "/token/introspection",
        form={"token": token, "client_id": POST_CLIENT[0], "client_secret": POST_CLIENT[1]},
    )
    assert status == 200
    # oidc-provider 8 does not store JWT-format access tokens, so it cannot introspect them.
    assert body == {"active": False}


def test_extra_clients():
    with TestIdP(extra_clients=3, clients=[]) as server:
        assert sorted(server.clients) == ["bench-client-0", "bench-client-1", "bench-client-2"]
        body = server.token("bench-client-2", "bench-secret-2")
        assert _verify(server, body["access_token"])["client_id"] == "bench-client-2"


def test_restart_rotates_kid():
    server = TestIdP(alg="ES256")
    with server:
        port = server.port
        old_token = server.token(*BASIC_CLIENT)["access_token"]
        old_kid = _header(old_token)["kid"]
        server.restart()
        assert server.port == port
        assert server.issuer == f"http://127.0.0.1:{port}"
        new_token = server.token(*BASIC_CLIENT)["access_token"]
        new_kid = _header(new_token)["kid"]
        assert new_kid != old_kid
        kids = {k["kid"] for k in server.jwks()["keys"]}
        assert new_kid in kids
        assert old_kid not in kids
        # counters start from zero after a restart
        assert server.stats()["token_requests"] == 1
    assert not server.running


def test_start_failure_reports_output(tmp_path, monkeypatch):
    server = TestIdP()
    monkeypatch.setattr(server, "config", lambda: {"port": "nope"})
    with pytest.raises(RuntimeError, match="invalid port"):
        server.start(timeout=10)
    assert not server.running


def test_stats_payload_is_json(idp):
    status, headers, body = idp.request("GET", "/_test/stats")
    assert status == 200
    assert headers["content-type"].startswith("application/json")
    assert json.loads(json.dumps(body)) == body
    assert set(body) >= {
        "token_requests",
        "token_success",
        "token_errors",
        "discovery_requests",
        "jwks_requests",
    }
