"""Hardening of openid-connect at unit level (issue 5): who is blamed for a token that fails
verification, what a remembered rejection keeps alive, constant-time secret comparisons, the
IdP client's bounds on a hostile response head, and rate-limited IdP warnings.

The same behaviours are exercised over real sockets in tests/integration/test_hardening_idp.py.
"""

from __future__ import annotations

import ast
import asyncio
import gc
import hmac
import logging
from pathlib import Path

import pytest
from oidc_fakes import (
    TOKEN_ENDPOINT,
    FakeClock,
    FakeHttp,
    FakeIdp,
    basic,
    claims,
    json_response,
    make_authenticator,
    rsa_key,
)

import fastgw.plugins.openid_connect as oidc_package
from fastgw.http import client as client_module
from fastgw.http.client import HttpClient, ProtocolError, ResponseTooLarge
from fastgw.plugins import jws as jws_module
from fastgw.plugins.openid_connect import (
    IdpTokenRejected,
    IdpUnavailable,
    InsufficientScope,
    InvalidCredentials,
)
from fastgw.plugins.openid_connect import client_auth as client_auth_module
from fastgw.plugins.openid_connect.authenticator import IDP_WARNING_INTERVAL_SECONDS
from fastgw.plugins.openid_connect.client_auth import ClientAuth, check_gateway_secret
from fastgw.plugins.openid_connect.credentials import ClientCredentials
from fastgw.plugins.openid_connect.idp_http import call_idp
from fastgw.plugins.openid_connect.token_endpoint import _expires_in

GOOD = basic("client-1", "secret-1")


@pytest.fixture
def idp() -> FakeIdp:
    return FakeIdp(FakeHttp(), FakeClock())


# -- a token that fails verification is the IdP's fault -------------------------------------------


def _answer_with(idp: FakeIdp, token: str) -> None:
    idp.http.route(
        TOKEN_ENDPOINT,
        json_response({"access_token": token, "token_type": "Bearer", "expires_in": 3600}),
    )


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("alg-none", "algorithm 'none' is not accepted"),
        ("unknown-kid", "signed with an unknown key"),
        ("forged", "signature is invalid"),
        ("expired", "has expired"),
        ("wrong-iss", "issuer is not allowed"),
        ("crit", "critical header parameters"),
    ],
)
async def test_a_fresh_token_failing_verification_is_502_and_not_remembered(
    idp: FakeIdp, case: str, reason: str
) -> None:
    now = idp.clock()
    if case == "alg-none":
        token = jws_module.sign({"kid": idp.key.kid}, claims(now), "none", None)
    elif case == "unknown-kid":
        token = rsa_key("elsewhere").mint(claims(now))
    elif case == "forged":
        token = rsa_key("elsewhere").mint(claims(now), headers={"kid": idp.key.kid})
    elif case == "expired":
        token = idp.key.mint(claims(now - 7200))
    elif case == "wrong-iss":
        token = idp.key.mint(claims(now, iss="https://other.example.test"))
    else:
        token = idp.key.mint(claims(now), headers={"crit": ["x-policy"], "x-policy": 1})
    auth, _ = await make_authenticator(idp)
    _answer_with(idp, token)
    with pytest.raises(IdpTokenRejected, match=reason) as raised:
        await auth.authenticate(GOOD)
    assert raised.value.status == 502 and raised.value.error_code is None  # no challenge
    assert isinstance(raised.value, IdpUnavailable)
    assert not auth.cache.entries and not auth.cache.rejections
    with pytest.raises(IdpTokenRejected):
        await auth.authenticate(GOOD)
    assert idp.token_calls == 2  # asked again: nothing remembered


async def test_a_genuine_token_without_the_audience_stays_403_and_remembered(
    idp: FakeIdp,
) -> None:
    auth, _ = await make_authenticator(idp, audience_required=["urn:other"])
    with pytest.raises(InsufficientScope):
        await auth.authenticate(GOOD)
    with pytest.raises(InsufficientScope):
        await auth.authenticate(GOOD)
    assert idp.token_calls == 1  # negative cache


async def test_a_refresh_meeting_a_bad_token_keeps_serving_the_good_one(idp: FakeIdp) -> None:
    """E.g. the IdP signs with a new key its JWKS does not show yet: the client is not locked
    out (it would be with a 401: the entry killed and the rejection remembered)."""
    auth, spawner = await make_authenticator(idp)
    first = await auth.authenticate(GOOD)
    idp.key = rsa_key("not-published-yet")  # mints with it; the JWKS still has the old key only
    idp.clock.advance(3590)  # inside the refresh-ahead window
    assert auth.authenticate_cached(GOOD) == first
    await spawner.drain()
    assert idp.token_calls == 2
    assert auth.authenticate_cached(GOOD) == first  # still served, until its own expiry
    assert not auth.cache.rejections


# -- what a remembered rejection keeps alive ------------------------------------------------------


async def test_a_remembered_rejection_keeps_no_traceback(idp: FakeIdp) -> None:
    """The raised error's traceback holds the fetch's frames: the token request (with the
    client's secret), the IdP's answer. Kept in the negative cache, that was ~10 KB per random
    credential (a flood of them grew memory by ~70 MiB per 10,000) and the secret in memory."""
    auth, _ = await make_authenticator(idp)
    with pytest.raises(InvalidCredentials) as raised:
        await auth.authenticate(basic("client-1", "wrong-secret"))
    del raised
    assert auth.cache.rejections
    for rejection in auth.cache.rejections.values():
        assert rejection.error.__traceback__ is None
        assert rejection.error.__context__ is None and rejection.error.__cause__ is None

    # nothing the fetch built is reachable from the cache any more: the token request (which
    # holds the secret) is gone once collected (and the loop ran the fetch's done-callbacks)
    await asyncio.sleep(0)
    gc.collect()
    assert not [obj for obj in gc.get_objects() if type(obj).__name__ == "TokenRequest"]


async def test_memory_per_remembered_rejection_is_small(idp: FakeIdp) -> None:
    import tracemalloc

    auth, _ = await make_authenticator(idp)
    idp.http.calls.clear()
    for index in range(50):  # warm up
        with pytest.raises(InvalidCredentials):
            await auth.authenticate(basic(f"warm-{index}", "x"))
    idp.http.calls.clear()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for index in range(1000):
            with pytest.raises(InvalidCredentials):
                await auth.authenticate(basic(f"random-{index}", "x"))
        idp.http.calls.clear()  # the fake's own record of every call
        gc.collect()
        per_rejection = (tracemalloc.get_traced_memory()[0] - before) / 1000
    finally:
        tracemalloc.stop()
    assert per_rejection < 1500, per_rejection  # two keys, one small error: was ~10 KB


# -- constant-time comparisons --------------------------------------------------------------------


def test_the_gateway_side_secret_is_compared_in_constant_time(monkeypatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(client_auth_module.hmac, "compare_digest", spy)
    auth = ClientAuth("private_key_jwt", "RS256", None, "gateway-secret", True)
    check_gateway_secret(ClientCredentials("pk", "gateway-secret"), auth)
    with pytest.raises(InvalidCredentials):
        check_gateway_secret(ClientCredentials("pk", "gateway-secreT"), auth)
    assert calls == [
        (b"gateway-secret", b"gateway-secret"),
        (b"gateway-secreT", b"gateway-secret"),
    ]


def test_hs_signatures_are_checked_in_constant_time(monkeypatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    import jwt.algorithms

    monkeypatch.setattr(jwt.algorithms.hmac, "compare_digest", spy)
    token = jws_module.sign({}, {"sub": "x"}, "HS256", b"client-secret")
    parts = jws_module.split(token)
    assert parts is not None
    assert jws_module.check_signature(
        "HS256", parts.signing_input, b"client-secret", parts.signature
    )
    assert not jws_module.check_signature(
        "HS256", parts.signing_input, b"client-secreT", parts.signature
    )
    assert len(calls) == 2


SECRET_WORDS = ("secret", "password", "assertion", "signature", "digest", "mac", "hmac")


def _names(node: ast.AST) -> set[str]:
    found = set()
    for child in ast.walk(node):
        if isinstance(child, ast.Name):
            found.add(child.id.lower())
        elif isinstance(child, ast.Attribute):
            found.add(child.attr.lower())
    return found


def test_no_secret_is_compared_with_eq_in_the_plugin_or_the_idp_client() -> None:
    """Grep-level: `==`/`!=` between two computed values, one of them named like a secret, is
    the timing leak hmac.compare_digest exists for. Comparisons with literals (a method name, a
    status) are fine; cache lookups are dict hits on salted BLAKE2s digests, which leak nothing
    an attacker can steer."""
    files = sorted(Path(oidc_package.__file__).parent.glob("*.py"))
    files.append(Path(client_module.__file__))
    offenders = []
    for path in files:
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Compare):
                continue
            if not any(isinstance(op, (ast.Eq, ast.NotEq)) for op in node.ops):
                continue
            operands = [node.left, *node.comparators]
            if any(isinstance(operand, ast.Constant) for operand in operands):
                continue
            names = set().union(*(_names(operand) for operand in operands))
            if any(word in name for name in names for word in SECRET_WORDS):
                offenders.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
    assert not offenders, offenders


# -- the IdP's answers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [(300, 300.0), ("300", 300.0), ("inf", None), ("nan", None), ("-5", None), (True, None)],
)
def test_expires_in_must_be_a_finite_positive_number(value, expected) -> None:
    assert _expires_in(value) == expected


class _Raw:
    """A loopback server answering every request with `answer(self, writer)`; `written` counts
    what it got out before the client hung up."""

    def __init__(self, answer) -> None:
        self.answer = answer
        self.written = 0
        self.cut_short = asyncio.Event()
        self.url = ""

    async def __aenter__(self) -> _Raw:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            try:
                await self.answer(self, writer)
            except (ConnectionError, OSError):
                self.cut_short.set()
            finally:
                writer.close()

        self._server = await asyncio.start_server(handle, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/token"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()


async def _endless_header(server: _Raw, writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nX-Pad: ")
    for _ in range(4096):  # 256 MiB, if nobody stops it
        writer.write(b"p" * 65536)
        await writer.drain()
        server.written += 65536


async def _endless_interim(server: _Raw, writer: asyncio.StreamWriter) -> None:
    for _ in range(100_000):  # 250 MB of 100 Continue, if nobody stops it
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n" * 100)
        await writer.drain()
        server.written += 2500


@pytest.mark.parametrize("answer", [_endless_header, _endless_interim], ids=["line", "1xx"])
async def test_the_idp_client_bounds_a_head_that_never_ends(answer) -> None:
    """httptools buffers a header line until its end, so counting complete headers did not
    bound it: a line that never ends grew memory until the timeout (quadratically: it is
    concatenated), and endless 1xx answers were never counted. Now the raw bytes before the
    final head are bounded."""
    client = HttpClient()
    async with _Raw(answer) as server:
        started = asyncio.get_running_loop().time()
        with pytest.raises(ProtocolError, match="response head too large"):
            await client.request("GET", server.url, timeout=5, max_body=1024)
        assert asyncio.get_running_loop().time() - started < 1.0
        await asyncio.wait_for(server.cut_short.wait(), 2)
        assert server.written < 32 * 1024 * 1024  # what the socket buffers took, at most
    await client.close()


async def test_call_idp_names_what_went_wrong() -> None:
    class Failing:
        def __init__(self, error: Exception) -> None:
            self.error = error

        async def request(self, *args, **kwargs):
            raise self.error

    with pytest.raises(IdpUnavailable, match=r"^token endpoint answered a body over 100 bytes$"):
        await call_idp(
            Failing(ResponseTooLarge("x")),
            "POST",
            "http://i/t",
            what="token endpoint",
            timeout=1,
            max_body=100,
        )
    with pytest.raises(IdpUnavailable, match="token endpoint answered malformed HTTP"):
        await call_idp(
            Failing(ProtocolError("malformed HTTP response")),
            "POST",
            "http://i/t",
            what="token endpoint",
            timeout=1,
            max_body=100,
        )


# -- IdP failures are logged, but not once per request --------------------------------------------


async def test_idp_failures_are_logged_at_most_once_per_interval(
    idp: FakeIdp, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="fastgw")
    auth, _ = await make_authenticator(idp)
    idp.token_status = 503
    for index in range(20):
        with pytest.raises(IdpUnavailable):
            await auth.authenticate(basic(f"client-{index}", "whatever"))
    lines = [record.getMessage() for record in caplog.records if record.name == "fastgw.oidc"]
    failures = [line for line in lines if line.startswith("token request failed")]
    assert failures == ["token request failed: token endpoint answered HTTP 503 (server_error)"]

    idp.clock.advance(IDP_WARNING_INTERVAL_SECONDS)
    with pytest.raises(IdpUnavailable):
        await auth.authenticate(GOOD)
    lines = [record.getMessage() for record in caplog.records if record.name == "fastgw.oidc"]
    assert lines[-1] == (
        "token request failed: token endpoint answered HTTP 503 (server_error)"
        " (and 19 more since the last report)"
    )
