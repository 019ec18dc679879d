"""key-auth's access step (Kong's kong/plugins/key-auth/handler.lua): the key from a header, the
query or the body, looked up by its salted digest, Kong's 401s, the anonymous consumer.

Compiled (fastgw/build_info.py): a keep-alive client's key is found by the connection's memo
(one bytes comparison with its own previous key), so a request costs no hashing; a new key costs
one SHA-256 and one dict lookup by digest, never a comparison with another client's key.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Awaitable, Sequence
from typing import Any, Final

from fastgw.config.credentials import KeyAuthCredential
from fastgw.plugins.api import Authenticated, Credential, Plugin, RequestContext
from fastgw.plugins.auth_config import Answer, error_answer, header_forms
from fastgw.plugins.credential_args import (
    body_args,
    body_media_type,
    form_args,
    may_name,
    strip_arg,
    strip_body_field,
)
from fastgw.plugins.identity import authenticate, has_credential, identity

PRIORITY: Final = 1250  # Kong's
KIND: Final = "keyauth_credentials"
_OPTIONS: Final = b"OPTIONS"
_CONTENT_TYPE: Final = b"content-type"
# Kong parses a body only while it is in memory (nginx's client_body_buffer_size, 8k): a
# bigger one is read as empty, here as there
BODY_LIMIT: Final = 8 * 1024
_SALT_BYTES: Final = 16  # the digests' random prefix, per process: no one can precompute them

NO_KEY: Final = "No API key found in request"
INVALID_KEY: Final = "Unauthorized"
DUPLICATE_KEY: Final = "Duplicate API key found"


class KeyEntry:
    """One credential, under its key's digest."""

    __slots__ = ("digest", "expires_at", "who")

    def __init__(self, digest: bytes, who: Authenticated, expires_at: float) -> None:
        self.digest = digest
        self.who = who
        self.expires_at = expires_at  # epoch seconds; 0.0: never (Kong's ttl)


class KeyTable:
    """The configured keys by salted digest."""

    def __init__(self, credentials: Sequence[KeyAuthCredential]) -> None:
        self._salt = secrets.token_bytes(_SALT_BYTES)
        self._entries: dict[bytes, KeyEntry] = {}
        for credential in credentials:
            digest = self.digest(credential.key.encode())
            who = identity(
                credential.consumer,
                Credential(KIND, credential.id, credential.id, credential.consumer.id),
            )
            self._entries[digest] = KeyEntry(digest, who, credential.expires_at or 0.0)

    def __len__(self) -> int:
        return len(self._entries)

    def digest(self, key: bytes) -> bytes:
        return hashlib.sha256(self._salt + key).digest()

    def find(self, key: bytes) -> KeyEntry | None:
        digest = self.digest(key)
        entry = self._entries.get(digest)
        if entry is None or not hmac.compare_digest(entry.digest, digest):
            return None
        return entry


def live(entry: KeyEntry | None) -> Authenticated | None:
    """Who `entry` authenticates, unless its ttl has run out (then it does not exist)."""
    if entry is None:
        return None
    if entry.expires_at and entry.expires_at <= time.time():
        return None
    return entry.who


class _Memo:
    """A connection's last key and what it found."""

    __slots__ = ("entry", "key")

    def __init__(self, key: bytes, entry: KeyEntry | None) -> None:
        self.key = key
        self.entry = entry


class KeyName:
    """One of `key_names`: the header forms and the argument name it is read as."""

    __slots__ = ("alias", "arg", "arg_bytes", "header", "headers")

    def __init__(self, name: str) -> None:
        self.headers = header_forms(name)
        self.header = self.headers[0]  # lower case, as written
        self.alias = self.headers[-1]  # "_" as "-" (the same when the name has no "_")
        self.arg = name
        self.arg_bytes = name.encode()


class _Found:
    """What the search found under one name: a key, or a repeated one."""

    __slots__ = ("duplicate", "key", "name")

    def __init__(self, name: KeyName, key: bytes, duplicate: bool) -> None:
        self.name = name
        self.key = key
        self.duplicate = duplicate


_AGAIN: Final = object()  # a header given twice under one name


class KeyAuth(Plugin):
    """Kong's key-auth for one configured occurrence."""

    name = "key-auth"
    priority = PRIORITY

    def __init__(
        self,
        names: Sequence[str],
        table: KeyTable,
        *,
        in_header: bool,
        in_query: bool,
        in_body: bool,
        hide_credentials: bool,
        run_on_preflight: bool,
        realm: str | None,
        anonymous: Authenticated | None,
        anonymous_missing: Answer | None = None,
    ) -> None:
        self._names = tuple(KeyName(name) for name in names)
        self._table = table
        self._in_header = in_header
        self._in_query = in_query
        self._in_body = in_body
        self._hide = hide_credentials
        self._skip_preflight = not run_on_preflight
        self._anonymous = anonymous
        challenge = (b"www-authenticate", (f'Key realm="{realm}"' if realm else "Key").encode())
        self._no_key = error_answer(401, NO_KEY, (challenge,))
        self._invalid = error_answer(401, INVALID_KEY, (challenge,))
        self._duplicate = error_answer(401, DUPLICATE_KEY, (challenge,))
        # Kong's logical OR needs `anonymous` set, whether or not it names a consumer; one that
        # names none turns every failure into Kong's 500
        self._or = anonymous is not None or anonymous_missing is not None
        if anonymous_missing is not None:
            self._no_key = self._invalid = self._duplicate = anonymous_missing
        # file-log never writes the key (headers it is read from; its query name is redacted
        # by every logger already when it is "apikey")
        self.sensitive_headers = frozenset(form for name in self._names for form in name.headers)

    # -- the hot path ---------------------------------------------------------------------------

    def access(self, ctx: RequestContext) -> Awaitable[None] | None:
        if self._skip_preflight and ctx.method == _OPTIONS:
            return None
        if self._or and has_credential(ctx):
            return None  # Kong's logical OR: an earlier plugin authenticated it
        query_args: dict[str, Any] | None = None
        names = self._names
        for index in range(len(names)):
            name = names[index]
            if self._in_header:
                value = self._header(ctx, name)
                if value is _AGAIN:
                    self._answer(ctx, self._duplicate)
                    return None
                if isinstance(value, bytes):
                    self._key(ctx, name, value, None)
                    return None
            if self._in_query and ctx.query and may_name(ctx.query, name.arg_bytes):
                if query_args is None:
                    query_args = form_args(ctx.query)
                found = _from_args(query_args, name)
                if found is not None:
                    self._found(ctx, found, None)
                    return None
            if self._in_body and ctx.has_body():
                media_type = body_media_type(ctx.get_header(_CONTENT_TYPE))
                if media_type is not None:
                    return self._with_body(ctx, index, media_type, query_args)
        self._answer(ctx, self._no_key)
        return None

    @staticmethod
    def _header(ctx: RequestContext, name: KeyName) -> object:
        """The key in a header of `name` (bytes), _AGAIN when given twice, else None."""
        found: bytes | None = None
        first, alias = name.header, name.alias
        for header, value in ctx.headers:
            if header in (first, alias):  # mypyc: two compares, no tuple
                if found is not None:
                    return _AGAIN
                found = value
        return found

    def _found(self, ctx: RequestContext, found: _Found, body: tuple[bytes, bytes] | None) -> None:
        if found.duplicate:
            self._answer(ctx, self._duplicate)
            return
        self._key(ctx, found.name, found.key, body)

    def _key(
        self, ctx: RequestContext, name: KeyName, key: bytes, body: tuple[bytes, bytes] | None
    ) -> None:
        """The key found under `name`: hidden if asked, looked up, the request authenticated
        (or answered)."""
        if self._hide:
            self._hide_key(ctx, name, body)
        if not key:
            self._answer(ctx, self._no_key)
            return
        memo = ctx.connection_memo
        seen = memo.get(self)
        if isinstance(seen, _Memo) and seen.key == key:  # this client's own previous key
            entry = seen.entry
        else:
            entry = self._table.find(key)
            memo[self] = _Memo(key, entry)
        who = live(entry)
        if who is None:
            self._answer(ctx, self._invalid)
            return
        authenticate(ctx, who)

    def _answer(self, ctx: RequestContext, answer: tuple[int, bytes, Any]) -> None:
        """A failed request: Kong's 401, or (with `anonymous`) on as the anonymous consumer."""
        anonymous = self._anonymous
        if anonymous is not None:
            authenticate(ctx, anonymous)
            return
        status, body, headers = answer
        ctx.respond(status, body, headers)

    def _hide_key(
        self, ctx: RequestContext, name: KeyName, body: tuple[bytes, bytes] | None
    ) -> None:
        """Kong's hide_credentials: the name leaves the headers, the query and the body (the
        body only when it was read), wherever the key was found."""
        for header in name.headers:
            if ctx.get_header(header) is not None:
                ctx.remove_header(header)
        if ctx.query:
            stripped = strip_arg(ctx.query, name.arg)
            if stripped is not ctx.query:
                ctx.set_query(stripped)
        if body is not None:
            media_type, raw = body
            content_type = ctx.get_header(_CONTENT_TYPE)
            stripped = strip_body_field(media_type, raw, content_type, name.arg)
            if stripped is not raw:
                ctx.replace_body(stripped)

    # -- keys in the body (key_in_body) ---------------------------------------------------------

    async def _with_body(
        self,
        ctx: RequestContext,
        start: int,
        media_type: bytes,
        query_args: dict[str, Any] | None,
    ) -> None:
        """The search from name `start` on (its header and query looked at already), now with
        the body read once, as Kong reads it when the first name needs it."""
        raw = await ctx.read_body(BODY_LIMIT)
        body = (media_type, raw) if raw is not None else None
        fields = body_args(media_type, raw, ctx.get_header(_CONTENT_TYPE)) if raw else {}
        names = self._names
        for index in range(start, len(names)):
            name = names[index]
            if index > start:
                if self._in_header:
                    value = self._header(ctx, name)
                    if value is _AGAIN:
                        self._answer(ctx, self._duplicate)
                        return
                    if isinstance(value, bytes):
                        self._key(ctx, name, value, body)
                        return
                if self._in_query and ctx.query:
                    if query_args is None:
                        query_args = form_args(ctx.query)
                    found = _from_args(query_args, name)
                    if found is not None:
                        self._found(ctx, found, body)
                        return
            found = _from_args(fields, name)
            if found is not None:
                self._found(ctx, found, body)
                return
        self._answer(ctx, self._no_key)


def _from_args(args: dict[str, Any], name: KeyName) -> _Found | None:
    """Kong's rule for a query or body value: a string is the key (even ""), a list (the name
    repeated) is a duplicate, anything else (a bare `?apikey`, a number) is no key."""
    value = args.get(name.arg)
    if isinstance(value, str):
        return _Found(name, value.encode("utf-8", "surrogateescape"), False)
    if isinstance(value, list):
        return _Found(name, b"", True)
    return None
