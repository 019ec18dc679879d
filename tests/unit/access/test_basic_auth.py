"""basic-auth through a real gateway: Kong's header parsing, Proxy-Authorization first, the
password compared by Kong's stored hash (hashed at load, or as written with _transform: false),
hide_credentials, anonymous."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
from access_wire import answer, get, upstream_headers, wire

from fastgw.config import ConfigError, parse_config
from fastgw.plugins.basic_auth.handler import parse_basic

ALICE_ID = "4f0c7b1e-2a3d-4e5f-8a9b-0c1d2e3f4a5b"


def basic(user: str, password: str, scheme: str = "Basic") -> str:
    return f"{scheme} " + base64.b64encode(f"{user}:{password}".encode()).decode()


def basic_auth(config: str = "{}", transform: str = "") -> object:
    return wire(
        transform
        + f"""
consumers:
  - username: alice
    id: {ALICE_ID}
    basicauth_credentials: [{{username: al, password: s3cret}}]
  - username: guest
plugins:
  - name: basic-auth
    config: {config}
"""
    )


def test_kongs_parsing_of_a_basic_header() -> None:
    encoded = base64.b64encode(b"user:pa:ss").decode()
    assert parse_basic(f"Basic {encoded}".encode()) == (b"user", b"pa:ss")
    assert parse_basic(f"basic{encoded}".encode()) == (b"user", b"pa:ss")  # `\s*`
    assert parse_basic(b"Basic " + base64.b64encode(b"user:")) == (b"user", b"")
    assert parse_basic(b"Basic " + base64.b64encode(b"::user:pw")) == (b"user", b"pw")
    unpadded = base64.b64encode(b"ab:c").rstrip(b"=")
    assert parse_basic(b"Basic " + unpadded) == (b"ab", b"c")
    assert parse_basic(b"Basic " + base64.b64encode(b"no-colon")) is None
    assert parse_basic(b"Basic not*base64") is None
    assert parse_basic(b"Bearer abc") is None
    assert parse_basic(b"BASIC " + base64.b64encode(b"a:b")) is None  # only [Bb]asic


def test_a_right_password_authenticates_and_a_wrong_one_gets_401() -> None:
    w = basic_auth()
    assert w.exchange(get("/x", "Authorization: " + basic("al", "s3cret")), answer()).status == 200
    headers = upstream_headers(w.forwarded[-1])
    assert headers["x-consumer-id"] == [ALICE_ID]
    assert headers["x-credential-identifier"] == ["al"]  # Kong: the basic-auth username
    assert headers["authorization"] == [basic("al", "s3cret")]  # not hidden by default
    for fields in (
        ("Authorization: " + basic("al", "wrong"),),
        ("Authorization: " + basic("nobody", "s3cret"),),
        (),
        ("Authorization: Bearer x",),
    ):
        response = w.exchange(get("/x", *fields))
        assert response.status == 401
        assert json.loads(response.body) == {"message": "Unauthorized"}
        assert response.get("www-authenticate") == 'Basic realm="service"'


def test_hide_credentials_and_realm() -> None:
    w = basic_auth("{hide_credentials: true, realm: api}")
    good = basic("al", "s3cret")
    assert w.exchange(get("/x", f"Authorization: {good}"), answer()).status == 200
    assert "authorization" not in upstream_headers(w.forwarded[-1])
    assert w.exchange(get("/x")).get("www-authenticate") == 'Basic realm="api"'


def test_proxy_authorization_never_reaches_the_plugin_nor_the_upstream() -> None:
    """The wire consumes Proxy-Authorization (hop-by-hop): Kong would read it first."""
    w = basic_auth()
    assert w.exchange(get("/x", "Proxy-Authorization: " + basic("al", "s3cret"))).status == 401


def test_the_stored_password_is_kongs_sha1_of_password_and_consumer_id() -> None:
    config = parse_config(
        f"""
_format_version: "3.0"
consumers:
  - username: alice
    id: {ALICE_ID}
    basicauth_credentials: [{{username: al, password: s3cret}}]
""",
        env={},
    )
    (credential,) = config.credentials.basicauth_credentials
    assert credential.password == hashlib.sha1(f"s3cret{ALICE_ID}".encode()).hexdigest()
    assert "s3cret" not in repr(credential)


def test_transform_false_takes_the_password_as_kongs_stored_hash() -> None:
    stored = hashlib.sha1(f"s3cret{ALICE_ID}".encode()).hexdigest()
    w = wire(
        f"""
_transform: false
consumers:
  - username: alice
    id: {ALICE_ID}
    basicauth_credentials: [{{username: al, password: {stored}}}]
plugins: [{{name: basic-auth}}]
"""
    )
    assert w.exchange(get("/x", "Authorization: " + basic("al", "s3cret")), answer()).status == 200
    with pytest.raises(ConfigError) as raised:
        parse_config(
            '_format_version: "3.0"\n_transform: false\n'
            "consumers: [{username: a, basicauth_credentials: [{username: u, password: plain}]}]",
            env={},
        )
    assert raised.value.problems[0][0] == "consumers[0].basicauth_credentials[0].password"


def test_anonymous_takes_failed_requests_and_hides_what_they_sent() -> None:
    w = basic_auth("{anonymous: guest, hide_credentials: true}")
    assert w.exchange(get("/x", "Authorization: " + basic("al", "nope")), answer()).status == 200
    headers = upstream_headers(w.forwarded[-1])
    assert headers["x-consumer-username"] == ["guest"]
    assert headers["x-anonymous-consumer"] == ["true"]
    assert "authorization" not in headers


def test_an_anonymous_naming_no_consumer_answers_kongs_500() -> None:
    w = basic_auth("{anonymous: ghost}")
    response = w.exchange(get("/x", "Authorization: " + basic("al", "nope")))
    assert response.status == 500
    message = "anonymous consumer ghost is configured but doesn't exist"
    assert json.loads(response.body) == {"message": message}


def test_enterprise_keys_are_refused() -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config(
            '_format_version: "3.0"\n'
            "plugins: [{name: basic-auth, config: {brute_force_protection: {strategy: memory}}}]",
            env={},
        )
    assert raised.value.problems == [
        ("plugins[0].config.brute_force_protection", "not supported (Kong Enterprise)")
    ]
