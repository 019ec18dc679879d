"""Credentials as a caller presents them: client id and secret (a Basic header, the query, a
form, JSON or multipart body) and bearer tokens (headers, the query, a body, a cookie).

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
# Kong's name of a bearer token in the query string or a body
ACCESS_TOKEN_PARAM = "access_token"
TOKEN_PARAMS = frozenset({ACCESS_TOKEN_PARAM})
# Kong's headers for a bearer token besides Authorization (the raw token, no scheme)
BEARER_HEADERS = (b"access-token", b"x-access-token")

FORM_MEDIA_TYPE = b"application/x-www-form-urlencoded"
JSON_MEDIA_TYPE = b"application/json"
MULTIPART_MEDIA_TYPE = b"multipart/form-data"


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


def strip_form(data: bytes, names: frozenset[str] = _CREDENTIAL_PARAMS) -> bytes:
    """`data` without the parameters `names` (the credentials by default); the others keep
    their exact bytes, and `data` is returned as it is when none of `names` is in it."""
    kept = []
    removed = False
    for pair in data.split(b"&"):
        raw_name = pair.partition(b"=")[0]
        try:
            name = _form_decode(raw_name)
        except CredentialError:
            name = ""
        if name in names:
            removed = True
        elif pair:
            kept.append(pair)
    return b"&".join(kept) if removed else data


# -- bodies ---------------------------------------------------------------------------------------


def body_media_type(content_type: bytes | None) -> bytes | None:
    """The media type of a body that may carry credentials (form, JSON, multipart), else None."""
    if not content_type:
        return None
    media_type = content_type.partition(b";")[0].strip().lower()
    if media_type == FORM_MEDIA_TYPE:
        return FORM_MEDIA_TYPE
    if media_type == JSON_MEDIA_TYPE or media_type.endswith(b"+json"):
        return JSON_MEDIA_TYPE
    if media_type == MULTIPART_MEDIA_TYPE:
        return MULTIPART_MEDIA_TYPE
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


def parse_body(
    media_type: bytes, body: bytes, content_type: bytes | None = None
) -> ClientCredentials | None:
    """Credentials from a body of `media_type` (as returned by `body_media_type`); a
    multipart body needs its `content_type` (the boundary)."""
    if media_type == FORM_MEDIA_TYPE:
        return parse_form(body)
    if media_type == MULTIPART_MEDIA_TYPE:
        fields = multipart_fields(body, content_type, _CREDENTIAL_PARAMS)
        if not fields:
            return None
        return _checked(fields.get(CLIENT_ID_PARAM, ""), fields.get(CLIENT_SECRET_PARAM, ""))
    return parse_json(body)


def strip_body(
    media_type: bytes,
    body: bytes,
    content_type: bytes | None = None,
    names: frozenset[str] = _CREDENTIAL_PARAMS,
) -> bytes:
    """`body` without the fields `names` (the credentials by default); other bytes kept, and
    `body` returned as it is when it has none of `names` (or is not what its type says)."""
    try:
        if media_type == FORM_MEDIA_TYPE:
            return strip_form(body, names)
        if media_type == MULTIPART_MEDIA_TYPE:
            return strip_multipart(body, content_type, names)
        document = orjson.loads(body)
    except (CredentialError, orjson.JSONDecodeError):
        return body  # nothing the plugin could have read credentials from
    if not isinstance(document, dict) or names.isdisjoint(document):
        return body
    for name in names:
        document.pop(name, None)
    return orjson.dumps(document)


# -- multipart/form-data (RFC 7578) ---------------------------------------------------------------


def multipart_boundary(content_type: bytes | None) -> bytes | None:
    """The `boundary` parameter of a multipart Content-Type (RFC 2046 §5.1.1: 1 to 70 chars)."""
    if not content_type:
        return None
    for parameter in content_type.split(b";")[1:]:
        name, _, value = parameter.strip().partition(b"=")
        if name.strip().lower() == b"boundary":
            value = value.strip()
            if len(value) >= 2 and value[:1] == b'"' and value[-1:] == b'"':
                value = value[1:-1]
            return value if 0 < len(value) <= 70 else None
    return None


def _multipart_parts(body: bytes, content_type: bytes | None) -> tuple[bytes, list[bytes], bytes]:
    """(preamble, parts, epilogue): each part from its delimiter line to the next."""
    boundary = multipart_boundary(content_type)
    if boundary is None:
        raise CredentialError("multipart body without a boundary")
    delimiter = b"--" + boundary
    pieces = body.split(b"\r\n" + delimiter)
    first = pieces[0]
    if first.startswith(delimiter):
        pieces[0] = first[len(delimiter) :]
        preamble = b""
    else:
        preamble, found, rest = first.partition(delimiter)
        if not found:
            raise CredentialError("malformed multipart body: no delimiter")
        pieces[0] = rest
    parts: list[bytes] = []
    for piece in pieces:
        if piece.startswith(b"--"):
            return preamble, parts, piece[2:]
        parts.append(piece)
    raise CredentialError("malformed multipart body: no closing delimiter")


def _part_name(part: bytes) -> tuple[str | None, bytes]:
    """The form field name of one part (None for a file or a part without a name) and its
    content."""
    head, separator, content = part.partition(b"\r\n\r\n")
    if not separator:
        raise CredentialError("malformed multipart body: a part without headers")
    name = None
    for line in head.split(b"\r\n"):
        field, _, value = line.partition(b":")
        if field.strip().lower() != b"content-disposition":
            continue
        for parameter in value.split(b";")[1:]:
            key, _, raw = parameter.strip().partition(b"=")
            key = key.strip().lower()
            raw = raw.strip().strip(b'"')
            if key == b"filename":
                return None, content
            if key == b"name":
                try:
                    name = raw.decode("utf-8")
                except UnicodeDecodeError:
                    raise CredentialError("malformed multipart body: not UTF-8") from None
    return name, content


def multipart_fields(
    body: bytes, content_type: bytes | None, names: frozenset[str]
) -> dict[str, str]:
    """The fields `names` of a multipart/form-data body; a repeated one is an error."""
    found: dict[str, str] = {}
    for part in _multipart_parts(body, content_type)[1]:
        name, content = _part_name(part)
        if name is None or name not in names:
            continue
        if name in found:
            raise CredentialError(f"{name} given more than once")
        try:
            found[name] = content.decode("utf-8")
        except UnicodeDecodeError:
            raise CredentialError("malformed multipart body: not UTF-8") from None
    return found


def strip_multipart(body: bytes, content_type: bytes | None, names: frozenset[str]) -> bytes:
    """Raises CredentialError for a malformed body."""
    preamble, parts, epilogue = _multipart_parts(body, content_type)
    boundary = multipart_boundary(content_type)
    assert boundary is not None  # _multipart_parts found it
    delimiter = b"--" + boundary
    kept = [part for part in parts if _part_name(part)[0] not in names]
    if len(kept) == len(parts):
        return body
    out = [preamble]
    for index, part in enumerate(kept):
        out.append((delimiter if index == 0 else b"\r\n" + delimiter) + part)
    out.append((b"\r\n" if kept else b"") + delimiter + b"--" + epilogue)
    return b"".join(out)


# -- bearer tokens --------------------------------------------------------------------------------

# RFC 6750 §2.1's b64token, loosened to any visible ASCII as IdPs issue: it goes upstream in a
# header, so no spaces, controls or non-ASCII
_TOKEN_BYTES = frozenset(range(0x21, 0x7F))


def checked_token(token: bytes | str) -> str:
    """`token` as text when it can be a bearer token; CredentialError otherwise."""
    raw = token.encode("utf-8") if isinstance(token, str) else token
    if not raw or not _TOKEN_BYTES.issuperset(raw):
        raise CredentialError("malformed bearer token")
    return raw.decode("ascii")


def bearer_from_authorization(value: bytes) -> bytes | None:
    """The token of an `Authorization: Bearer <token>` value (scheme case-insensitive)."""
    if value[:7].lower() != b"bearer ":
        return None
    token = value[7:].strip(b" ")
    return token or None


def token_from_form(data: bytes) -> str | None:
    """`access_token` from a query string or form body; a repeated one is an error."""
    found = None
    for pair in data.split(b"&"):
        raw_name, _, raw_value = pair.partition(b"=")
        if raw_name != b"access_token" and _form_decode(raw_name) != ACCESS_TOKEN_PARAM:
            continue
        if found is not None:
            raise CredentialError("access_token given more than once")
        found = _form_decode(raw_value)
    return found or None


def token_from_body(media_type: bytes, body: bytes, content_type: bytes | None) -> str | None:
    if media_type == FORM_MEDIA_TYPE:
        return token_from_form(body)
    if media_type == MULTIPART_MEDIA_TYPE:
        return multipart_fields(body, content_type, TOKEN_PARAMS).get(ACCESS_TOKEN_PARAM) or None
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise CredentialError("malformed JSON body") from None
    token = document.get(ACCESS_TOKEN_PARAM) if isinstance(document, dict) else None
    if token is not None and not isinstance(token, str):
        raise CredentialError("access_token must be a string")
    return token or None


def cookie_value(cookie_header: bytes, name: bytes) -> bytes | None:
    """The value of cookie `name` in a Cookie header (RFC 6265 §5.4), the first if repeated."""
    for pair in cookie_header.split(b";"):
        key, separator, value = pair.strip().partition(b"=")
        if separator and key == name:
            return value.strip(b'"') or None
    return None


def strip_cookie(cookie_header: bytes, name: bytes) -> bytes:
    """The Cookie header without cookie `name` (b"" when nothing is left)."""
    kept = [pair.strip() for pair in cookie_header.split(b";")]
    return b"; ".join(pair for pair in kept if pair and pair.partition(b"=")[0] != name)
