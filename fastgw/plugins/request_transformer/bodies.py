"""request-transformer's body rewrites, as Kong makes them: JSON objects, url-encoded forms and
multipart forms, told apart by the request's Content-Type (a substring, in Kong's order).

Each family runs remove, rename, replace, add, append (multipart: rename, remove, replace,
add; no append). Remove, rename and replace need a body; add and append may make one from
nothing. A body that does not parse (JSON that is not an object) is forwarded unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from fastgw.plugins.query_args import Args, add_value, decode_args, encode_args

from .schema import Entry, TransformerConfig
from .templates import Template

JSON: Final = "json"
MULTIPART: Final = "multipart"
FORM: Final = "form"
# Kong's get_content_type: a case-insensitive substring, tested in this order
_KINDS: Final = (
    (b"application/json", JSON),
    (b"multipart/form-data", MULTIPART),
    (b"application/x-www-form-urlencoded", FORM),
)

Render = Callable[[Template], str]


def body_kind(content_type: bytes | None) -> str | None:
    if content_type is None:
        return None
    lowered = content_type.lower()
    for marker, kind in _KINDS:
        if marker in lowered:
            return kind
    return None


def transform(
    kind: str, body: bytes, content_type: bytes, config: TransformerConfig, render: Render
) -> bytes | None:
    """The rewritten body, or None when it stays as it is."""
    if kind == JSON:
        return _json(body, config, render)
    if kind == FORM:
        return _form(body, config, render)
    return _multipart(body, content_type, config, render)


def _present(value: Any) -> bool:
    """Lua's truth of a decoded value: only nil (absent) and false are not there."""
    return value is not None and value is not False


def _appended(existing: Any, value: str) -> Any:
    """Kong's append_value: a list grows, a string becomes a list of two, nothing a list of one;
    (here any other value is kept too, where Kong would drop it)."""
    if isinstance(existing, list):
        existing.append(value)
        return existing
    if existing is None:
        return [value]
    return [existing, value]


def _edit_mapping(
    params: dict[str, Any], has_body: bool, config: TransformerConfig, render: Render, *,
    add_if_false: bool,
) -> bool:  # fmt: skip
    """Kong's steps on a decoded JSON object or form; whether anything was done."""
    changed = False
    if has_body:
        for entry in config.remove.body:
            params.pop(entry.name, None)
            changed = True
        for entry in config.rename.body:
            new_name = render(_template(entry))
            value = params.get(entry.name)
            if new_name != entry.name and entry.name in params and _present(value):
                del params[entry.name]
                params[new_name] = value
                changed = True
        for entry in config.replace.body:
            if entry.name in params and _present(params[entry.name]):
                params[entry.name] = render(_template(entry))
                changed = True
    for entry in config.add.body:
        existing = params.get(entry.name)
        if entry.name not in params or (add_if_false and existing is False):
            params[entry.name] = render(_template(entry))
            changed = True
    for entry in config.append.body:
        params[entry.name] = _appended(params.get(entry.name), render(_template(entry)))
        changed = True
    return changed


def _template(entry: Entry) -> Template:
    assert entry.value is not None  # the schema gives every value entry a template
    return entry.value


def _json(body: bytes, config: TransformerConfig, render: Render) -> bytes | None:
    params: Any = {}
    if body:
        try:
            params = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(params, dict):
            return None  # Kong edits an array as a table of numbers: left alone here
    if not _edit_mapping(params, bool(body), config, render, add_if_false=True):
        return None
    try:
        return orjson.dumps(params)
    except TypeError:  # a value that is no UTF-8 (a surrogate from a query): left as it was
        return None


def _form(body: bytes, config: TransformerConfig, render: Render) -> bytes | None:
    # every argument is kept (nginx would read 100 and drop the rest when encoding again)
    params: Args = decode_args(body, max_args=body.count(b"&") + 1)
    if not _edit_mapping(params, bool(body), config, render, add_if_false=False):  # type: ignore[arg-type]
        return None
    return encode_args(params)


# -- multipart/form-data --------------------------------------------------------------------------


@dataclass(slots=True)
class Part:
    name: str
    head: bytes  # the part's header lines, CRLF-separated, without the blank line
    value: bytes


@dataclass(slots=True)
class Multipart:
    """A multipart body as lua-multipart edits it: parts by name, set_simple, delete."""

    boundary: bytes
    parts: list[Part] = field(default_factory=list)

    def get(self, name: str) -> Part | None:
        return next((part for part in self.parts if part.name == name), None)

    def delete(self, name: str) -> None:
        self.parts = [part for part in self.parts if part.name != name]

    def set_simple(self, name: str, value: bytes) -> None:
        existing = self.get(name)
        if existing is not None:
            existing.value = value
            return
        head = b'Content-Disposition: form-data; name="%b"' % name.encode()
        self.parts.append(Part(name, head, value))

    def serialized(self) -> bytes:
        delimiter = b"--" + self.boundary
        pieces = [b"%b\r\n%b\r\n\r\n%b\r\n" % (delimiter, p.head, p.value) for p in self.parts]
        return b"".join(pieces) + delimiter + b"--\r\n"


def boundary_of(content_type: bytes) -> bytes | None:
    for param in content_type.split(b";")[1:]:
        name, _, value = param.strip().partition(b"=")
        if name.lower() == b"boundary" and value:
            return value.strip(b'"')
    return None


def parse_multipart(body: bytes, boundary: bytes) -> Multipart:
    form = Multipart(boundary)
    for segment in (b"\r\n" + body).split(b"\r\n--" + boundary)[1:]:
        if segment.startswith(b"--"):
            break  # the close delimiter
        segment = segment.partition(b"\r\n")[2]  # the rest of the delimiter line
        head, _, value = segment.partition(b"\r\n\r\n")
        form.parts.append(Part(_part_name(head), head, value))
    return form


def _part_name(head: bytes) -> str:
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() != b"content-disposition":
            continue
        for param in value.split(b";")[1:]:
            key, _, text = param.strip().partition(b"=")
            if key.lower() == b"name":
                return text.strip(b'"').decode("utf-8", "surrogateescape")
    return ""


def _multipart(
    body: bytes, content_type: bytes, config: TransformerConfig, render: Render
) -> bytes | None:
    boundary = boundary_of(content_type)
    if boundary is None:
        return None
    form = parse_multipart(body, boundary)
    changed = False
    if body:
        for entry in config.rename.body:
            new_name = render(_template(entry))
            part = form.get(entry.name)
            if part is not None and new_name != entry.name:
                form.set_simple(new_name, part.value)
                form.delete(entry.name)
                changed = True
        for entry in config.remove.body:
            form.delete(entry.name)
            changed = True
        for entry in config.replace.body:
            if form.get(entry.name) is not None:
                form.delete(entry.name)
                form.set_simple(entry.name, _encoded(render(_template(entry))))
                changed = True
    for entry in config.add.body:
        if form.get(entry.name) is None:
            form.set_simple(entry.name, _encoded(render(_template(entry))))
            changed = True
    return form.serialized() if changed else None


def _encoded(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def merged_into_query(form_body: bytes, query: Args) -> bool:
    """Kong's transform_method for GET, HEAD and TRACE: a form body's arguments join the query
    (a name in both becomes a list). Whether there were any."""
    params = decode_args(form_body, max_args=form_body.count(b"&") + 1)
    for name, value in params.items():
        for item in value if isinstance(value, list) else [value]:
            add_value(query, name, item)
    return bool(params)
