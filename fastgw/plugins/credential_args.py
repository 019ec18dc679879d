"""Where Kong's authentication plugins find a credential besides a header: a query argument, a
body field (form, JSON, multipart), a cookie; and how `hide_credentials` takes one out.

Shared by key-auth and jwt (a plugin never imports another plugin). Values are read the way
Kong's kong.request.get_query / get_body give them (fastgw/plugins/query_args.py): a name given
once is its string, a name given several times the list of its values, a query name without "="
is True.
"""

from __future__ import annotations

from typing import Any, Final

import orjson

from fastgw.plugins.query_args import MAX_ARGS, Args, add_value, unescape
from fastgw.plugins.query_args import decode_args as form_args

FORM: Final = b"application/x-www-form-urlencoded"
JSON: Final = b"application/json"
MULTIPART: Final = b"multipart/form-data"


def may_name(data: bytes, name: bytes) -> bool:
    """Whether a query or form could give `name` (it is there as written, or escaped):
    saves parsing one that cannot."""
    return name in data or b"%" in data or b"+" in data


def strip_arg(data: bytes, name: str) -> bytes:
    """A query string or form body without argument `name`; the others keep their bytes and
    order (Kong 3.9+), and `data` is returned as it is when `name` is not there."""
    kept = []
    removed = False
    for pair in data.split(b"&"):
        if unescape(pair.partition(b"=")[0]) == name:
            removed = True
        elif pair:
            kept.append(pair)
    return b"&".join(kept) if removed else data


# -- bodies ---------------------------------------------------------------------------------------


def body_media_type(content_type: bytes | None) -> bytes | None:
    """The media type of a body Kong's get_body parses (form, JSON, multipart), else None."""
    if not content_type:
        return None
    media_type = content_type.partition(b";")[0].strip().lower()
    if media_type in (FORM, JSON, MULTIPART):
        return media_type
    return JSON if media_type.endswith(b"+json") else None


def body_args(media_type: bytes, body: bytes, content_type: bytes | None) -> dict[str, Any]:
    """Kong's kong.request.get_body(): the fields of a form, a JSON object or a multipart
    body; {} for one that does not parse (Kong treats that as an empty body)."""
    if media_type == FORM:
        return form_args(body)
    if media_type == MULTIPART:
        args: Args = {}
        for name, value in _multipart_fields(body, content_type):
            add_value(args, name, value)
        return dict(args)
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {}
    return document if isinstance(document, dict) else {}


def strip_body_field(
    media_type: bytes, body: bytes, content_type: bytes | None, name: str
) -> bytes:
    """`body` without field `name` (Kong's hide_credentials re-sets the body without it)."""
    if media_type == FORM:
        return strip_arg(body, name)
    if media_type == MULTIPART:
        return _strip_multipart(body, content_type, name)
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body
    if not isinstance(document, dict) or name not in document:
        return body
    del document[name]
    return orjson.dumps(document)


def _boundary(content_type: bytes | None) -> bytes | None:
    for parameter in (content_type or b"").split(b";")[1:]:
        key, _, value = parameter.strip().partition(b"=")
        if key.strip().lower() == b"boundary":
            value = value.strip().strip(b'"')
            return value if 0 < len(value) <= 70 else None  # RFC 2046 §5.1.1
    return None


def _multipart_parts(body: bytes, content_type: bytes | None) -> list[bytes] | None:
    """The parts of a multipart body, from each delimiter line to the next (None: malformed)."""
    boundary = _boundary(content_type)
    if boundary is None:
        return None
    delimiter = b"--" + boundary
    start = body.find(delimiter)
    end = body.find(b"\r\n" + delimiter + b"--", start)
    if start < 0 or end < 0:
        return None
    return body[start + len(delimiter) : end].split(b"\r\n" + delimiter)


def _part_name(part: bytes) -> tuple[str | None, bytes]:
    """A part's form field name (None for a file or a nameless part) and its content."""
    head, _, content = part.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        field, _, value = line.partition(b":")
        if field.strip().lower() != b"content-disposition":
            continue
        name = None
        for parameter in value.split(b";")[1:]:
            key, _, raw = parameter.strip().partition(b"=")
            key = key.strip().lower()
            if key == b"filename":
                return None, content
            if key == b"name":
                name = raw.strip().strip(b'"').decode("utf-8", "surrogateescape")
        return name, content
    return None, content


def _multipart_fields(body: bytes, content_type: bytes | None) -> list[tuple[str, str]]:
    fields = []
    for part in (_multipart_parts(body, content_type) or [])[:MAX_ARGS]:
        name, content = _part_name(part)
        if name is not None:
            fields.append((name, content.decode("utf-8", "surrogateescape")))
    return fields


def _strip_multipart(body: bytes, content_type: bytes | None, name: str) -> bytes:
    parts = _multipart_parts(body, content_type)
    boundary = _boundary(content_type)
    if parts is None or boundary is None:
        return body
    kept = [part for part in parts if _part_name(part)[0] != name]
    if len(kept) == len(parts):
        return body
    delimiter = b"--" + boundary
    out = [delimiter + part for part in kept]
    return b"\r\n".join(out) + (b"\r\n" if out else b"") + delimiter + b"--\r\n"


# -- cookies --------------------------------------------------------------------------------------


def cookie_value(cookie_header: bytes, name: bytes) -> bytes | None:
    """The value of cookie `name` in a Cookie header (nginx's $cookie_<name>: the first)."""
    for pair in cookie_header.split(b";"):
        key, equals, value = pair.strip().partition(b"=")
        if equals and key == name:
            return value
    return None
