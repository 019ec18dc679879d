"""The kinds of value the openid-connect config declares besides the schema engine's own
(fastgw.config.schema): URLs, header names, sets of choices, client authentication methods.

Each reads one key and records its problems under that key, as the engine's kinds do.
"""

from __future__ import annotations

import re
from typing import Final

from fastgw.config.schema import Declared, Reader

# RFC 9110 token: what a header name may be
HEADER_NAME: Final = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")

CLIENT_AUTH_METHODS: Final = (
    "client_secret_basic",
    "client_secret_post",
    "client_secret_jwt",
    "private_key_jwt",
    "none",
)
# Kong's methods that need mutual TLS towards the IdP, which fastgw's client does not do yet
KONG_ONLY_CLIENT_AUTH: Final = ("tls_client_auth", "self_signed_tls_client_auth")


def is_http_url(value: str) -> bool:
    scheme, sep, rest = value.partition("://")
    return bool(sep) and scheme.lower() in ("http", "https") and bool(rest.split("/")[0])


def auth_method_problem(method: str, *, name_supported: bool = True) -> str:
    """Why `method` (not one of CLIENT_AUTH_METHODS) is refused."""
    known = ", ".join(CLIENT_AUTH_METHODS)
    if method in KONG_ONLY_CLIENT_AUTH:
        supported = f" (supported: {known})" if name_supported else ""
        return f'"{method}" is not supported yet{supported}'
    return f"must be one of {known}; got {method!r}"


class Url(Declared):
    """An http(s) URL; None when absent (or not one: the problem is recorded)."""

    __slots__ = ("required",)

    def __init__(self, *, required: bool = False) -> None:
        self.required = required

    def read(self, reader: Reader, key: str) -> str | None:
        value: str | None = reader.string(key, required=self.required)
        if value is not None and not is_http_url(value):
            reader.error(key, "must be an http(s) URL")
            return None
        return value


class Urls(Declared):
    """An array of http(s) URLs (a lone string is taken as one, as Kong does)."""

    __slots__ = ()

    def read(self, reader: Reader, key: str) -> tuple[str, ...]:
        urls = reader.strings(key, scalar_ok=True)
        for index, url in enumerate(urls):
            if not is_http_url(url):
                reader.problems.append(
                    (f"{reader.key_path(key)}[{index}]", "must be an http(s) URL")
                )
        return urls


class Choices(Declared):
    """A set of names from `one_of` (a lone string is taken as one); given, it must not be
    empty."""

    __slots__ = ("default", "one_of")

    def __init__(self, default: tuple[str, ...], *, one_of: tuple[str, ...]) -> None:
        self.default = default
        self.one_of = one_of

    def read(self, reader: Reader, key: str) -> frozenset[str]:
        chosen = reader.strings(key, self.default, one_of=self.one_of, scalar_ok=True)
        if reader.has(key) and not chosen:
            reader.error(key, "must not be empty")
        return frozenset(chosen)


class HeaderName(Declared):
    """A header name; None when absent (or not one: the problem is recorded)."""

    __slots__ = ()

    def read(self, reader: Reader, key: str) -> str | None:
        value: str | None = reader.string(key)
        if value is not None and not HEADER_NAME.match(value):
            reader.error(key, "is not a header name")
            return None
        return value


class TokenHeader(Declared):
    """Kong's `header` or `header:scheme` for the token going upstream (`authorization:bearer`:
    the Authorization header, Bearer scheme)."""

    __slots__ = ("default",)

    def __init__(self, default: str) -> None:
        self.default = default

    def read(self, reader: Reader, key: str) -> str:
        value: str = reader.string(key, self.default)
        name, _, scheme = value.partition(":")
        if not HEADER_NAME.match(name) or (scheme and not HEADER_NAME.match(scheme)):
            reader.error(key, 'must look like "header" or "header:scheme"')
            return self.default
        return value


class AuthMethod(Declared):
    """One of CLIENT_AUTH_METHODS; None when absent (or refused: the problem is recorded)."""

    __slots__ = ()

    def read(self, reader: Reader, key: str) -> str | None:
        method: str | None = reader.string(key)
        if method is None or method in CLIENT_AUTH_METHODS:
            return method
        reader.error(key, auth_method_problem(method))
        return None
