"""Client credentials as a caller presents them: a Basic header, the query, a form or JSON body.

Pure functions of bytes (no request object, no I/O); the plugin decides which sources it reads.
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass, field
from urllib.parse import unquote_to_bytes

import orjson

CLIENT_ID_PARAM = "client_id"
CLIENT_SECRET_PARAM = "client_secret"
_CREDENTIAL_PARAMS = frozenset({CLIENT_ID_PARAM, CLIENT_SECRET_PARAM})

FORM_MEDIA_TYPE = b"application/x-www-form-urlencoded"
JSON_MEDIA_TYPE = b"application/json"


@dataclass(frozen=True, slots=True)
class ClientCredentials:
    client_id: str
    client_secret: str = field(repr=False)  # never in a repr, hence never in a log line


class CredentialError(ValueError):
    """Credentials are present but malformed; the message is safe to show the caller."""


# -- Authorization: Basic (RFC 7617) --------------------------------------------------------------


def is_basic(value: bytes) -> bool:
    return value[:6].lower() == b"basic "


def parse_basic(value: bytes | str) -> ClientCredentials:
    """`Basic base64(id:secret)`; the id ends at the first colon, the secret may hold more."""
    if isinstance(value, str):
        try:
            value = value.encode("ascii")
        except UnicodeEncodeError:
            raise CredentialError("malformed Basic credentials: not ASCII") from None
    if not is_basic(value):
        raise CredentialError("not Basic credentials")
    encoded = value[6:].strip(b" ")
    if not encoded:
        raise CredentialError("malformed Basic credentials: empty")
    try:
        decoded = binascii.a2b_base64(encoded, strict_mode=True)
    except binascii.Error:
        raise CredentialError("malformed Basic credentials: bad base64") from None
    try:
        text = decoded.decode("utf-8")
    except UnicodeDecodeError:
        raise CredentialError("malformed Basic credentials: not UTF-8") from None
    client_id, colon, client_secret = text.partition(":")
    if not colon:
        raise CredentialError("malformed Basic credentials: no colon")
    return _checked(client_id, client_secret)


def _checked(client_id: str, client_secret: str) -> ClientCredentials:
    if not client_id:
        raise CredentialError("empty client_id")
    if not client_secret:
        raise CredentialError("empty client_secret")
    return ClientCredentials(client_id, client_secret)


# -- query string and form bodies (application/x-www-form-urlencoded) -----------------------------


def _form_decode(raw: bytes) -> str:
    try:
        return unquote_to_bytes(raw.replace(b"+", b" ")).decode("utf-8")
    except UnicodeDecodeError:
        raise CredentialError("malformed form encoding: not UTF-8") from None


def parse_form(data: bytes) -> ClientCredentials | None:
    """`client_id` and `client_secret` from a query string or form body; None when neither is
    there. A repeated parameter is an error: two values would make "which one" ambiguous."""
    found: dict[str, str] = {}
    for pair in data.split(b"&"):
        if not pair:
            continue
        raw_name, _, raw_value = pair.partition(b"=")
        name = _form_decode(raw_name)
        if name not in _CREDENTIAL_PARAMS:
            continue
        if name in found:
            raise CredentialError(f"{name} given more than once")
        found[name] = _form_decode(raw_value)
    if not found:
        return None
    return _checked(found.get(CLIENT_ID_PARAM, ""), found.get(CLIENT_SECRET_PARAM, ""))


def strip_form(data: bytes) -> bytes:
    """`data` without the credential parameters; the others keep their exact bytes."""
    kept = []
    for pair in data.split(b"&"):
        raw_name = pair.partition(b"=")[0]
        try:
            name = _form_decode(raw_name)
        except CredentialError:
            name = ""
        if pair and name not in _CREDENTIAL_PARAMS:
            kept.append(pair)
    return b"&".join(kept)


# -- bodies ---------------------------------------------------------------------------------------


def body_media_type(content_type: bytes | None) -> bytes | None:
    """The media type of a body that may carry credentials (form or JSON), else None."""
    if not content_type:
        return None
    media_type = content_type.partition(b";")[0].strip().lower()
    if media_type == FORM_MEDIA_TYPE:
        return FORM_MEDIA_TYPE
    if media_type == JSON_MEDIA_TYPE or media_type.endswith(b"+json"):
        return JSON_MEDIA_TYPE
    return None


def parse_json(body: bytes) -> ClientCredentials | None:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise CredentialError("malformed JSON body") from None
    if not isinstance(document, dict):
        return None
    client_id = document.get(CLIENT_ID_PARAM)
    client_secret = document.get(CLIENT_SECRET_PARAM)
    if client_id is None and client_secret is None:
        return None
    if not isinstance(client_id, str) or not isinstance(client_secret, str):
        raise CredentialError("client_id and client_secret must be strings")
    return _checked(client_id, client_secret)


def parse_body(media_type: bytes, body: bytes) -> ClientCredentials | None:
    """Credentials from a body of `media_type` (as returned by `body_media_type`)."""
    if media_type == FORM_MEDIA_TYPE:
        return parse_form(body)
    return parse_json(body)


def strip_body(media_type: bytes, body: bytes) -> bytes:
    if media_type == FORM_MEDIA_TYPE:
        return strip_form(body)
    document = orjson.loads(body)
    for name in _CREDENTIAL_PARAMS:
        document.pop(name, None)
    return orjson.dumps(document)
