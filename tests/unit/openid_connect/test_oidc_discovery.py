"""Discovery and JWKS: parsing, issuer check, keeping the last good keys, re-fetch throttle."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from oidc_fakes import (
    DISCOVERY_URL,
    ISSUER,
    JWKS_URI,
    FakeClock,
    FakeHttp,
    FakeIdp,
    FakeResponse,
    SigningKey,
    ec_key,
    json_response,
    rsa_key,
)

from fastgw.http.client import ConnectError, RequestTimeout
from fastgw.plugins.openid_connect import discovery as discovery_module
from fastgw.plugins.openid_connect.discovery import (
    Discovery,
    IssuerMismatch,
    parse_jwk,
    parse_jwks,
    parse_metadata,
)
from fastgw.plugins.openid_connect.errors import IdpTimeout, IdpUnavailable


def metadata_body(issuer: str = ISSUER) -> bytes:
    return orjson.dumps(
        {"issuer": issuer, "token_endpoint": f"{ISSUER}/token", "jwks_uri": JWKS_URI}
    )


def test_metadata() -> None:
    metadata = parse_metadata(metadata_body(), ISSUER)
    assert metadata.token_endpoint == f"{ISSUER}/token" and metadata.jwks_uri == JWKS_URI


def test_issuer_mismatch_is_refused_trailing_slash_tolerated() -> None:
    with pytest.raises(IssuerMismatch) as caught:
        parse_metadata(metadata_body("https://evil.example"), ISSUER, url=DISCOVERY_URL)
    assert caught.value.reason == (
        f'discovery document at {DISCOVERY_URL} names the issuer "https://evil.example", not '
        f'the configured "{ISSUER}"; if the IdP is reached by another name, add '
        '"https://evil.example" to issuers_allowed'
    )
    assert parse_metadata(metadata_body(ISSUER + "/"), ISSUER).issuer == ISSUER + "/"
    with pytest.raises(IdpUnavailable, match="not JSON"):
        parse_metadata(b"<html>", ISSUER)


def test_issuers_allowed_accepts_the_public_name_of_an_internally_reached_idp() -> None:
    public = "https://login.example.com/realms/main"
    internal = "http://keycloak:8080/realms/main"
    metadata = parse_metadata(metadata_body(public), internal, frozenset({public}))
    assert metadata.issuer == public


def test_a_json_page_that_is_not_a_discovery_document_says_so() -> None:
    with pytest.raises(IdpUnavailable) as caught:
        parse_metadata(b'{"status": "UP"}', ISSUER, url=DISCOVERY_URL)
    assert caught.value.reason == (
        f"the JSON at {DISCOVERY_URL} is not an OpenID discovery document (it has no issuer)"
    )


def test_jwks_keeps_only_usable_signing_keys() -> None:
    weak = SigningKey(rsa.generate_private_key(public_exponent=65537, key_size=1024), "RS256", "w")
    encryption = dict(rsa_key("enc").public_jwk(), use="enc")
    keys = parse_jwks(
        orjson.dumps(
            {
                "keys": [
                    rsa_key().public_jwk(),
                    ec_key("ec").public_jwk(),
                    weak.public_jwk(),
                    encryption,
                    {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
                    {"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"},
                    {
                        "kty": "EC",
                        "crv": "P-256",
                        "alg": "ES384",
                        "kid": "mismatch",
                        "x": "",
                        "y": "",
                    },
                ]
            }
        )
    )
    assert set(keys.by_kid) == {"rsa-1", "ec"}
    assert keys.by_kid["ec"].algs == {"ES256"}
    assert keys.by_kid["rsa-1"].algs == {"RS256"}


def test_rsa_key_without_alg_allows_the_rsa_family() -> None:
    key = parse_jwk(rsa_key().public_jwk(with_alg=False))
    assert key is not None and {"RS256", "PS512"} <= key.algs and "ES256" not in key.algs


def test_private_jwk_in_a_key_set_keeps_only_the_public_half() -> None:
    key = parse_jwk(ec_key("p").private_jwk())
    assert key is not None and not hasattr(key.key, "private_numbers")


def make_discovery(http: FakeHttp, clock: FakeClock, lifetime: float = 30) -> Discovery:
    return Discovery(
        issuer=ISSUER,
        discovery_url=DISCOVERY_URL,
        http=http,
        timeout=1.0,
        rediscovery_lifetime=lifetime,
        clock=clock,
    )


async def test_discovery_fetches_metadata_and_keys() -> None:
    http, clock = FakeHttp(), FakeClock()
    idp = FakeIdp(http, clock)
    discovery = make_discovery(http, clock)
    metadata = await discovery.ready()
    assert metadata.jwks_uri == JWKS_URI
    assert discovery.keys.knows(idp.key.kid)
    await discovery.ready()
    assert http.count(DISCOVERY_URL) == 1 and http.count(JWKS_URI) == 1


async def test_failed_fetch_keeps_the_last_good_keys() -> None:
    http, clock = FakeHttp(), FakeClock()
    idp = FakeIdp(http, clock)
    discovery = make_discovery(http, clock, lifetime=0)
    await discovery.ready()
    http.route(JWKS_URI, FakeResponse(500, b""))
    with pytest.raises(IdpUnavailable, match="HTTP 500"):
        await discovery.refresh()
    assert discovery.keys.knows(idp.key.kid)
    http.route(JWKS_URI, json_response({"keys": []}))  # mid-rotation emptiness
    with pytest.raises(IdpUnavailable, match="no usable"):
        await discovery.refresh()
    assert discovery.keys.knows(idp.key.kid)


async def test_unknown_kid_refetches_once_per_rediscovery_lifetime() -> None:
    http, clock = FakeHttp(), FakeClock()
    idp = FakeIdp(http, clock)
    discovery = make_discovery(http, clock, lifetime=30)
    await discovery.ready()
    clock.advance(31)
    rotated = rsa_key("rotated")
    idp.keys = [rotated]
    keys = await discovery.keys_for("rotated")
    assert keys.knows("rotated")
    assert http.count(JWKS_URI) == 2
    await discovery.keys_for("unknown")  # within 30 s of the last fetch: no new fetch
    clock.advance(10)
    await discovery.keys_for("unknown")
    assert http.count(JWKS_URI) == 2
    clock.advance(25)
    await discovery.keys_for("unknown")
    assert http.count(JWKS_URI) == 3
    await discovery.keys_for("rotated")
    assert http.count(JWKS_URI) == 3


async def test_concurrent_refreshes_share_one_fetch() -> None:
    http, clock = FakeHttp(), FakeClock()
    FakeIdp(http, clock)
    gate = asyncio.Event()

    async def slow(call):
        await gate.wait()
        return json_response(orjson.loads(metadata_body()))

    http.route(DISCOVERY_URL, slow)
    discovery = make_discovery(http, clock)
    waiters = [asyncio.ensure_future(discovery.ready()) for _ in range(20)]
    await asyncio.sleep(0)
    gate.set()
    await asyncio.gather(*waiters)
    assert http.count(DISCOVERY_URL) == 1


async def test_ready_after_a_recent_failure_fails_fast_without_a_call() -> None:
    http, clock = FakeHttp(), FakeClock()
    http.route(DISCOVERY_URL, ConnectError("refused"))
    discovery = make_discovery(http, clock)
    with pytest.raises(IdpUnavailable, match="unreachable"):
        await discovery.ready()
    with pytest.raises(IdpUnavailable):
        await discovery.ready()
    assert http.count(DISCOVERY_URL) == 1
    clock.advance(discovery_module.DISCOVERY_RETRY_MIN_SECONDS)
    http.route(DISCOVERY_URL, RequestTimeout("slow"))
    with pytest.raises(IdpTimeout):
        await discovery.ready()
    assert http.count(DISCOVERY_URL) == 2


async def test_issuer_mismatch_fails_discovery() -> None:
    http, clock = FakeHttp(), FakeClock()
    http.route(DISCOVERY_URL, FakeResponse(200, metadata_body("https://evil.example")))
    with pytest.raises(IssuerMismatch, match=r'names the issuer "https://evil\.example"'):
        await make_discovery(http, clock).ready()


async def test_background_run_retries_with_backoff(monkeypatch) -> None:
    http, clock = FakeHttp(), FakeClock()
    http.route(DISCOVERY_URL, ConnectError("refused"))
    sleeps: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 3:
            FakeIdp(http, clock)  # the IdP comes up

    monkeypatch.setattr(discovery_module.asyncio, "sleep", fake_sleep)
    discovery = make_discovery(http, clock)
    await discovery.run()
    assert discovery.metadata is not None
    assert sleeps == [1.0, 2.0, 4.0]
