"""request-transformer's header rewrites, as Kong makes them: remove, rename, replace, add,
append, on the request's end-to-end fields; `host` names the Host sent upstream.

Rendered values cannot end a field early: control bytes are percent-escaped.
"""

from __future__ import annotations

from typing import Final

from fastgw.plugins.api import RequestContext

from .schema import HOST, Entry, TransformerConfig
from .templates import Lookup

_HOST: Final = HOST.encode()
# a value may hold any byte but these (a CR or LF would end the field: a header injection)
_CONTROL: Final = frozenset(range(0x20)) - {0x09} | {0x7F}

Fields = list[tuple[bytes, bytes]]


def _value(entry: Entry, lookup: Lookup) -> bytes | None:
    if entry.value is None:
        return None  # "name:" with no value: a no-op in Kong
    raw = entry.value.render(lookup).encode("utf-8", "surrogateescape")
    if any(byte in _CONTROL for byte in raw):
        raw = b"".join(b"%%%02X" % b if b in _CONTROL else bytes((b,)) for b in raw)
    return raw


def edited_headers(ctx: RequestContext, config: TransformerConfig, lookup: Lookup) -> None:
    """Apply the header entries of `config` to the request going upstream."""
    if not any(family.headers for family in config.families()):
        return
    fields: Fields = list(ctx.headers)
    host: bytes | None = None
    for entry in config.remove.headers:
        name = entry.name.encode()
        fields = [field for field in fields if field[0] != name]
    for entry in config.rename.headers:
        old = entry.name.encode()
        new = ((entry.value.literal if entry.value else None) or "").encode()
        values = [value for name, value in fields if name == old]
        if not values or old == new:
            continue
        fields = [field for field in fields if field[0] != old and field[0] != new]
        if new == _HOST:
            host = values[0]
        else:
            fields += ((new, value) for value in values)
    for entry in config.replace.headers:
        name, value = entry.name.encode(), _value(entry, lookup)
        if value is None:
            continue
        if name == _HOST:
            host = value
        elif any(field[0] == name for field in fields):
            fields = [field for field in fields if field[0] != name]
            fields.append((name, value))
    for entry in config.add.headers:
        name = entry.name.encode()
        if name != _HOST and not any(field[0] == name for field in fields):
            value = _value(entry, lookup)
            if value is not None:
                fields.append((name, value))
    for entry in config.append.headers:
        value = _value(entry, lookup)
        if value is not None:
            fields.append((entry.name.encode(), value))
    ctx.headers = fields
    if host is not None:
        ctx.upstream_host = host
