"""key-auth through a real gateway: where the key is found (Kong's order), Kong's 401s and
WWW-Authenticate, the identity headers, hide_credentials, anonymous, preflight, ttl."""

from __future__ import annotations

import json

import pytest
from access_wire import answer, get, request_line, settle, upstream_headers, wire

from fastgw.config import ConfigError, parse_config

CONSUMERS = """
consumers:
  - username: alice
    custom_id: alice-1
    keyauth_credentials: [{key: alice-key}]
  - username: guest
  - username: bob
    keyauth_credentials:
      - {key: bob-key, id: 9e1bbeef-0000-4000-8000-000000000001}
"""


def key_auth(config: str = "{}", extra: str = "") -> object:
    return wire(
        CONSUMERS
        + extra
        + f"""
services:
  - name: api
    url: http://127.0.0.1:9
    routes: [{{name: r, paths: [/]}}]
    plugins:
      - name: key-auth
        config: {config}
"""
    )


def test_a_key_in_the_apikey_header_authenticates_its_consumer() -> None:
    w = key_auth()
    response = w.exchange(get("/x", "apikey: alice-key"), answer())
    assert response.status == 200
    headers = upstream_headers(w.forwarded[-1])
    assert headers["x-consumer-username"] == ["alice"]
    assert headers["x-consumer-custom-id"] == ["alice-1"]
    assert len(headers["x-consumer-id"][0]) == 36
    # Kong: the credential's id, never the key
    assert len(headers["x-credential-identifier"][0]) == 36
    assert "x-anonymous-consumer" not in headers
    assert headers["apikey"] == ["alice-key"]  # hide_credentials is off by default


def test_missing_wrong_and_repeated_keys_get_kongs_401s() -> None:
    w = key_auth()
    missing = w.exchange(get("/x"))
    assert missing.status == 401
    assert json.loads(missing.body) == {"message": "No API key found in request"}
    assert missing.get("www-authenticate") == "Key"
    wrong = w.exchange(get("/x", "apikey: nope"))
    assert (wrong.status, json.loads(wrong.body)) == (401, {"message": "Unauthorized"})
    assert wrong.get("www-authenticate") == "Key"
    twice = w.exchange(get("/x", "apikey: alice-key", "apikey: bob-key"))
    assert json.loads(twice.body) == {"message": "Duplicate API key found"}
    empty = w.exchange(get("/x?apikey="))
    assert json.loads(empty.body) == {"message": "No API key found in request"}
    assert w.forwarded == []


def test_realm_names_itself_in_www_authenticate() -> None:
    response = key_auth("{realm: orders}").exchange(get("/x"))
    assert response.get("www-authenticate") == 'Key realm="orders"'


def test_key_names_are_tried_in_order_header_then_query() -> None:
    w = key_auth("{key_names: [x-api-key, token]}")
    assert w.exchange(get("/x?token=bob-key"), answer()).status == 200
    assert upstream_headers(w.forwarded[-1])["x-consumer-username"] == ["bob"]
    # the first name that yields a key wins, even a wrong one
    assert w.exchange(get("/x?token=bob-key", "X-Api-Key: nope")).status == 401
    # a bare ?token is no key; the next name is looked at
    assert w.exchange(get("/x?token", "x-api-key: alice-key"), answer()).status == 200
    assert w.exchange(get("/x?apikey=alice-key")).status == 401  # not one of key_names


def test_key_in_query_off_and_key_in_header_off() -> None:
    assert key_auth("{key_in_query: false}").exchange(get("/x?apikey=alice-key")).status == 401
    no_header = key_auth("{key_in_header: false}")
    assert no_header.exchange(get("/x", "apikey: alice-key")).status == 401
    assert no_header.exchange(get("/x?apikey=alice-key"), answer()).status == 200


def test_hide_credentials_removes_the_key_from_headers_and_query() -> None:
    w = key_auth("{hide_credentials: true}")
    assert w.exchange(get("/x?a=1&apikey=alice-key&b=2"), answer()).status == 200
    assert request_line(w.forwarded[-1]) == "GET /x?a=1&b=2 HTTP/1.1"
    assert w.exchange(get("/x", "apikey: alice-key"), answer()).status == 200
    assert b"alice-key" not in w.forwarded[-1]
    # a wrong key is not forwarded either (the request is answered)
    assert w.exchange(get("/x", "apikey: wrong")).status == 401


@pytest.mark.asyncio
async def test_a_key_in_a_form_or_json_body_with_key_in_body() -> None:
    w = key_auth("{key_in_body: true, hide_credentials: true}")
    form = b"apikey=alice-key&other=1"
    w.send(get("/x", "Content-Type: application/x-www-form-urlencoded", method="POST", body=form))
    await settle()
    forwarded = w.upstream_received()
    assert b"x-consumer-username: alice" in forwarded
    assert forwarded.endswith(b"\r\n\r\nother=1")
    w.respond(answer())
    assert w.response().status == 200
    body = json.dumps({"apikey": "bob-key", "n": 1}).encode()
    w.send(get("/x", "Content-Type: application/json", method="POST", body=body))
    await settle()
    forwarded = w.upstream_received()
    assert b"x-consumer-username: bob" in forwarded and b"bob-key" not in forwarded
    w.respond(answer())
    assert w.response().status == 200
    w.send(get("/x", "Content-Type: application/json", method="POST", body=b'{"apikey": 7}'))
    await settle()
    assert json.loads(w.response().body) == {"message": "No API key found in request"}


def test_anonymous_lets_a_failed_request_through_as_that_consumer() -> None:
    w = key_auth("{anonymous: guest, hide_credentials: true}")
    assert w.exchange(get("/x", "apikey: wrong"), answer()).status == 200
    headers = upstream_headers(w.forwarded[-1])
    assert headers["x-consumer-username"] == ["guest"]
    assert headers["x-anonymous-consumer"] == ["true"]
    assert "x-credential-identifier" not in headers and "apikey" not in headers
    assert w.exchange(get("/x", "apikey: alice-key"), answer()).status == 200
    assert "x-anonymous-consumer" not in upstream_headers(w.forwarded[-1])


def test_an_anonymous_naming_no_consumer_loads_and_answers_kongs_500() -> None:
    w = key_auth("{anonymous: ghost}")
    for request in (get("/x"), get("/x", "apikey: wrong")):
        response = w.exchange(request, answer())
        assert response.status == 500
        message = "anonymous consumer ghost is configured but doesn't exist"
        assert json.loads(response.body) == {"message": message}
    assert w.exchange(get("/x", "apikey: alice-key"), answer()).status == 200


def test_identity_headers_the_client_sent_never_pass_beside_the_real_ones() -> None:
    w = key_auth()
    forged = ("X-Consumer-Username: admin", "X-Anonymous-Consumer: true", "X-Consumer-Custom-ID: x")
    assert w.exchange(get("/x", "apikey: bob-key", *forged), answer()).status == 200
    headers = upstream_headers(w.forwarded[-1])
    assert headers["x-consumer-username"] == ["bob"]
    assert headers["x-credential-identifier"] == ["9e1bbeef-0000-4000-8000-000000000001"]
    assert "x-anonymous-consumer" not in headers and "x-consumer-custom-id" not in headers


def test_run_on_preflight_false_lets_options_through_unauthenticated() -> None:
    w = key_auth("{run_on_preflight: false}")
    assert w.exchange(get("/x", method="OPTIONS"), answer()).status == 200
    assert key_auth().exchange(get("/x", method="OPTIONS")).status == 401


def test_a_keep_alive_client_changing_its_key_is_looked_up_again() -> None:
    w = key_auth()
    assert w.exchange(get("/x", "apikey: alice-key"), answer()).status == 200
    assert w.exchange(get("/x", "apikey: alice-key"), answer()).status == 200
    assert w.exchange(get("/x", "apikey: bob-key"), answer()).status == 200
    assert upstream_headers(w.forwarded[-1])["x-consumer-username"] == ["bob"]
    assert w.exchange(get("/x", "apikey: bob-keyX")).status == 401


def test_a_credential_past_its_ttl_does_not_exist() -> None:
    w = wire(
        """
consumers:
  - username: old
    keyauth_credentials: [{key: old-key, ttl: 60, created_at: 1000}]
  - username: new
    keyauth_credentials: [{key: new-key, ttl: 3600}]
plugins: [{name: key-auth}]
"""
    )
    assert w.exchange(get("/x", "apikey: old-key")).status == 401
    assert w.exchange(get("/x", "apikey: new-key"), answer()).status == 200


def test_key_names_must_be_header_names() -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config(
            '_format_version: "3.0"\nplugins: [{name: key-auth, config: {key_names: ["a b", ""]}}]',
            env={},
        )
    assert raised.value.problems == [
        (
            "plugins[0].config.key_names[0]",
            "bad header name 'a b', allowed characters are A-Z, a-z, 0-9, '_', and '-'",
        ),
        ("plugins[0].config.key_names[1]", "no header name provided"),
    ]


def test_konnect_keys_are_refused_unless_empty() -> None:
    document = '_format_version: "3.0"\nplugins: [{name: key-auth, config: {identity_realms: %s}}]'
    parse_config(document % "[]", env={})
    with pytest.raises(ConfigError) as raised:
        parse_config(document % "[{scope: cp}]", env={})
    assert "Konnect" in raised.value.problems[0][1]
