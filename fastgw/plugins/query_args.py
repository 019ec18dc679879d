"""Query strings and form bodies as Kong's plugins read and write them (nginx's ngx.decode_args,
ngx.encode_args, Kong's kong.service.request.set_query), shared by the plugins that need them.

Arguments are decoded into an ordered mapping: a name given once maps to its value, a name given
several times to the list of its values, a name without "=" to True (Kong's flag argument).
Strings are decoded from UTF-8 with surrogate escapes, so encoding them back is lossless.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import quote, unquote_to_bytes

# Kong reads at most this many arguments of a query (kong.request.get_query's default max_args,
# ngx.decode_args' too): the rest are ignored, so the work per request stays bounded.
MAX_ARGS: Final = 100
# What ngx.encode_args leaves unescaped: RFC 3986's unreserved characters (a space is %20).
_SAFE: Final = "-._~"

Value = str | bool
Args = dict[str, Value | list[Value]]


def unescape(text: bytes) -> str:
    """A query component: "+" is a space, %XX a byte (nginx's ngx.unescape_uri for args)."""
    if b"+" in text:
        text = text.replace(b"+", b" ")
    if b"%" in text:
        text = unquote_to_bytes(text)
    return text.decode("utf-8", "surrogateescape")


def escape(text: str) -> str:
    return quote(text.encode("utf-8", "surrogateescape"), safe=_SAFE)


def decode_args(raw: bytes, max_args: int = MAX_ARGS) -> Args:
    """`a=1&b&a=2` -> {"a": ["1", "2"], "b": True}; empty names are skipped, as nginx does."""
    args: Args = {}
    if not raw:
        return args
    for count, part in enumerate(raw.split(b"&")):
        if count >= max_args:
            break
        name, equals, value = part.partition(b"=")
        if not name:
            continue
        key = unescape(name)
        item: Value = unescape(value) if equals else True
        add_value(args, key, item)
    return args


def add_value(args: Args, name: str, value: Value) -> None:
    """One more value of `name`: the first is kept as it is, a second makes a list."""
    existing = args.get(name)
    if existing is None:
        args[name] = value
    elif isinstance(existing, list):
        existing.append(value)
    else:
        args[name] = [existing, value]


def _encoded(name: str, value: Value | list[Value]) -> list[str]:
    values = value if isinstance(value, list) else [value]
    parts = []
    for item in values:
        if item is True:
            parts.append(escape(name))
        elif item is not False:
            parts.append(f"{escape(name)}={escape(str(item))}")
    return parts


def encode_args(args: Args) -> bytes:
    """A form body in the order of `args` (ngx.encode_args: a list repeats its name, True is a
    bare name, False is left out)."""
    return "&".join(part for name, value in args.items() for part in _encoded(name, value)).encode()


def encode_query(args: Args) -> bytes:
    """A query string as Kong's set_query writes it: each name encoded alone, sorted."""
    pieces = ["&".join(_encoded(name, value)) for name, value in args.items()]
    return "&".join(sorted(piece for piece in pieces if piece)).encode()
