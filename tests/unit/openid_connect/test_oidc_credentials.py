"""Credential extraction: Basic headers, query strings, form and JSON bodies."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastgw.plugins.openid_connect.credentials import (
    FORM_MEDIA_TYPE,
    JSON_MEDIA_TYPE,
    ClientCredentials,
    CredentialError,
    body_media_type,
    parse_basic,
    parse_body,
    parse_form,
    strip_body,
    strip_form,
)


def b64(text: str) -> bytes:
    return base64.b64encode(text.encode())


def test_basic() -> None:
    assert parse_basic(b"Basic " + b64("id:secret")) == ClientCredentials("id", "secret")


def test_basic_secret_may_hold_colons() -> None:
    assert parse_basic(b"Basic " + b64("id:se:cr:et")) == ClientCredentials("id", "se:cr:et")


def test_basic_scheme_is_case_insensitive_and_str_is_accepted() -> None:
    assert parse_basic("basic " + b64("id:s").decode()).client_secret == "s"
    assert parse_basic(b"BASIC  " + b64("id:s")).client_id == "id"


def test_basic_utf8() -> None:
    assert parse_basic(b"Basic " + b64("clïent:sécret")) == ClientCredentials("clïent", "sécret")


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"Basic !!!notbase64", "bad base64"),
        (b"Basic " + b64("id:secret")[:-2], "bad base64"),  # broken padding
        (b"Basic " + b64("nocolon"), "no colon"),
        (b"Basic " + b64(":secret"), "empty client_id"),
        (b"Basic " + b64("id:"), "empty client_secret"),
        (b"Basic ", "empty"),
        (b"Basic " + base64.b64encode(b"\xff\xfe:x"), "not UTF-8"),
        (b"Bearer abc", "not Basic"),
    ],
)
def test_malformed_basic(value: bytes, reason: str) -> None:
    with pytest.raises(CredentialError, match=reason):
        parse_basic(value)


def test_secret_never_in_repr() -> None:
    assert "hunter2" not in repr(ClientCredentials("id", "hunter2"))


@given(
    client_id=st.text(min_size=1).filter(lambda text: ":" not in text),
    secret=st.text(min_size=1),
)
def test_basic_round_trip(client_id: str, secret: str) -> None:
    value = b"Basic " + b64(f"{client_id}:{secret}")
    assert parse_basic(value) == ClientCredentials(client_id, secret)


def test_form() -> None:
    query = b"a=1&client_id=my%20id&client_secret=s%2Bc+r%26t&b=2"
    assert parse_form(query) == ClientCredentials("my id", "s+c r&t")


def test_form_without_credentials() -> None:
    assert parse_form(b"a=1&b=2") is None
    assert parse_form(b"") is None


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"client_id=a", "empty client_secret"),
        (b"client_secret=a", "empty client_id"),
        (b"client_id=a&client_id=b&client_secret=s", "more than once"),
        (b"client_id=%ff&client_secret=s", "not UTF-8"),
    ],
)
def test_malformed_form(data: bytes, reason: str) -> None:
    with pytest.raises(CredentialError, match=reason):
        parse_form(data)


def test_strip_form_keeps_other_parameters_byte_for_byte() -> None:
    data = b"x=%41+b&client_id=a&client%5Fsecret=s&y="
    assert strip_form(data) == b"x=%41+b&y="


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        (b"application/x-www-form-urlencoded", FORM_MEDIA_TYPE),
        (b"Application/X-WWW-Form-Urlencoded; charset=utf-8", FORM_MEDIA_TYPE),
        (b"application/json", JSON_MEDIA_TYPE),
        (b"application/vnd.api+json", JSON_MEDIA_TYPE),
        (b"text/plain", None),
        (None, None),
    ],
)
def test_body_media_type(content_type: bytes | None, expected: bytes | None) -> None:
    assert body_media_type(content_type) == expected


def test_json_body() -> None:
    body = b'{"client_id": "id", "client_secret": "s", "other": 1}'
    assert parse_body(JSON_MEDIA_TYPE, body) == ClientCredentials("id", "s")
    assert strip_body(JSON_MEDIA_TYPE, body) == b'{"other":1}'


@pytest.mark.parametrize(
    "body",
    [b"{not json", b'{"client_id": 1, "client_secret": "s"}', b'{"client_id": "id"}'],
)
def test_malformed_json_body(body: bytes) -> None:
    with pytest.raises(CredentialError):
        parse_body(JSON_MEDIA_TYPE, body)


def test_json_body_without_credentials() -> None:
    assert parse_body(JSON_MEDIA_TYPE, b'{"a": 1}') is None
    assert parse_body(JSON_MEDIA_TYPE, b"[1, 2]") is None


def test_form_body() -> None:
    body = b"client_id=id&client_secret=s&keep=me"
    assert parse_body(FORM_MEDIA_TYPE, body) == ClientCredentials("id", "s")
    assert strip_body(FORM_MEDIA_TYPE, body) == b"keep=me"


# -- multipart/form-data --------------------------------------------------------------------------

MULTIPART = b'multipart/form-data; boundary="b0und"'


def multipart(*parts: tuple[str, str, str | None]) -> bytes:
    """(name, value, filename) parts with CRLF line ends, as browsers and curl send them."""
    out = b""
    for name, value, filename in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--b0und\r\nContent-Disposition: {disposition}\r\n\r\n{value}\r\n".encode()
    return out + b"--b0und--\r\n"


def test_multipart_credentials_and_strip_keeps_the_other_parts_byte_for_byte() -> None:
    from fastgw.plugins.openid_connect.credentials import MULTIPART_MEDIA_TYPE

    body = multipart(
        ("client_id", "id", None),
        ("upload", "client_secret=not-this", "a.txt"),
        ("client_secret", "s:e/c", None),
        ("note", "kept", None),
    )
    assert body_media_type(MULTIPART) == MULTIPART_MEDIA_TYPE
    assert parse_body(MULTIPART_MEDIA_TYPE, body, MULTIPART) == ClientCredentials("id", "s:e/c")
    stripped = strip_body(MULTIPART_MEDIA_TYPE, body, MULTIPART)
    assert stripped == multipart(
        ("upload", "client_secret=not-this", "a.txt"), ("note", "kept", None)
    )


@pytest.mark.parametrize(
    ("content_type", "body", "reason"),
    [
        (b"multipart/form-data", multipart(("client_id", "x", None)), "without a boundary"),
        (MULTIPART, b"no delimiter at all", "no delimiter"),
        (MULTIPART, b"--b0und\r\nContent-Disposition: form-data; name=a\r\n\r\nx", "closing"),
        (
            MULTIPART,
            multipart(("client_id", "a", None), ("client_id", "b", None)),
            "more than once",
        ),
    ],
)
def test_malformed_multipart(content_type: bytes, body: bytes, reason: str) -> None:
    from fastgw.plugins.openid_connect.credentials import MULTIPART_MEDIA_TYPE

    with pytest.raises(CredentialError, match=reason):
        parse_body(MULTIPART_MEDIA_TYPE, body, content_type)


# -- bearer tokens --------------------------------------------------------------------------------


def test_bearer_tokens_from_their_places() -> None:
    from fastgw.plugins.openid_connect.credentials import (
        bearer_from_authorization,
        checked_token,
        cookie_value,
        strip_cookie,
        token_from_body,
        token_from_form,
    )

    assert bearer_from_authorization(b"bearer  abc.def ") == b"abc.def"
    assert bearer_from_authorization(b"Basic abc") is None
    assert bearer_from_authorization(b"Bearer ") is None
    assert token_from_form(b"x=1&access_token=a%2Bb") == "a+b"
    with pytest.raises(CredentialError, match="more than once"):
        token_from_form(b"access_token=a&access_token=b")
    assert token_from_body(JSON_MEDIA_TYPE, b'{"access_token": "t"}', None) == "t"
    assert token_from_body(FORM_MEDIA_TYPE, b"access_token=t", None) == "t"
    assert cookie_value(b'a=1; at="tok"; at=second', b"at") == b"tok"
    assert strip_cookie(b"a=1; at=tok", b"at") == b"a=1"
    assert strip_cookie(b"at=tok", b"at") == b""
    assert checked_token("abc.DEF-_~+/=") == "abc.DEF-_~+/="
    for bad in ("two words", "tab\there", "naïve", ""):
        with pytest.raises(CredentialError, match="malformed bearer token"):
            checked_token(bad)
