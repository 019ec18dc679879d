"""basic-auth's access step (Kong's kong/plugins/basic-auth/access.lua): the user and password
from Authorization, the password compared by Kong's stored hash. (Kong reads Proxy-Authorization
first; this gateway's wire consumes that field as hop-by-hop, so no plugin ever sees it.)

The password's hash is compared in constant time (both are 40 hex digits); a keep-alive
client's header is remembered per connection with what it found, so it is decoded and hashed
once per connection.
"""

from __future__ import annotations

import binascii
import hmac
from base64 import b64decode
from collections.abc import Sequence
from typing import Final

from fastgw.config.credentials import BasicAuthCredential, password_hash
from fastgw.plugins.api import Authenticated, Credential, Plugin, RequestContext
from fastgw.plugins.auth_config import Answer, error_answer
from fastgw.plugins.identity import authenticate, has_credential, identity

PRIORITY: Final = 1100  # Kong's
KIND: Final = "basicauth_credentials"
AUTHORIZATION: Final = b"authorization"
UNAUTHORIZED: Final = "Unauthorized"
_WHITESPACE: Final = b" \t\r\n\x0b\x0c"


def parse_basic(value: bytes) -> tuple[bytes, bytes] | None:
    """(username, password) as Kong reads a header: the first `[Bb]asic` anywhere, optional
    spaces, base64 (padding optional) of `user:password`; the user is the first run without a
    colon that a colon follows, the password the rest of the line (may be empty). None when
    there is none."""
    start = 0
    while True:
        index = value.find(b"asic", start)
        if index < 0:
            return None
        start = index + 1
        if index == 0 or value[index - 1 : index] not in (b"B", b"b"):
            continue
        encoded = value[index + 4 :].lstrip(_WHITESPACE)
        if encoded:
            break
    try:
        decoded = b64decode(encoded + b"=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None
    username, colon, password = decoded.lstrip(b":").partition(b":")
    if not colon or not username:
        return None
    return username, password.split(b"\n", 1)[0]


class _Memo:
    """A connection's last Authorization header and who it authenticated (None: nobody)."""

    __slots__ = ("header", "who")

    def __init__(self, header: bytes, who: Authenticated | None) -> None:
        self.header = header
        self.who = who


class Users:
    """The configured basic-auth users, by username."""

    def __init__(self, credentials: Sequence[BasicAuthCredential]) -> None:
        self._by_username: dict[bytes, tuple[BasicAuthCredential, Authenticated]] = {}
        for credential in credentials:
            who = identity(
                credential.consumer,
                Credential(KIND, credential.id, credential.username, credential.consumer.id),
            )
            self._by_username[credential.username.encode()] = (credential, who)

    def find(self, username: bytes) -> tuple[BasicAuthCredential, Authenticated] | None:
        return self._by_username.get(username)


def password_matches(credential: BasicAuthCredential, password: bytes) -> bool:
    given = password_hash(credential.consumer.id, password.decode("utf-8", "surrogateescape"))
    return hmac.compare_digest(given.encode(), credential.password.encode())


class BasicAuth(Plugin):
    """Kong's basic-auth for one configured occurrence."""

    name = "basic-auth"
    priority = PRIORITY

    def __init__(
        self,
        users: Users,
        *,
        hide_credentials: bool,
        realm: str,
        anonymous: Authenticated | None,
        anonymous_missing: Answer | None = None,
    ) -> None:
        self._users = users
        self._hide = hide_credentials
        self._anonymous = anonymous
        challenge = (b"www-authenticate", f'Basic realm="{realm}"'.encode())
        self._unauthorized: Answer = error_answer(401, UNAUTHORIZED, (challenge,))
        # Kong's logical OR needs `anonymous` set, whether or not it names a consumer; one that
        # names none turns every failure into Kong's 500
        self._or = anonymous is not None or anonymous_missing is not None
        if anonymous_missing is not None:
            self._unauthorized = anonymous_missing

    def access(self, ctx: RequestContext) -> None:
        if self._or and has_credential(ctx):
            return  # Kong's logical OR: an earlier plugin authenticated it
        header = ctx.get_header(AUTHORIZATION)
        who = self._who(ctx, header) if header is not None else None
        if self._hide and header is not None:
            ctx.remove_header(AUTHORIZATION)
        if who is not None:
            authenticate(ctx, who)
        elif self._anonymous is not None:
            authenticate(ctx, self._anonymous)
        else:
            status, body, headers = self._unauthorized
            ctx.respond(status, body, headers)

    def _who(self, ctx: RequestContext, header: bytes) -> Authenticated | None:
        """Who the header authenticates: a configured user with the right password."""
        memo = ctx.connection_memo
        seen = memo.get(self)
        if isinstance(seen, _Memo) and seen.header == header:  # this client's own last header
            return seen.who
        parsed = parse_basic(header)
        user = self._users.find(parsed[0]) if parsed is not None else None
        who = None
        if parsed is not None and user is not None and password_matches(user[0], parsed[1]):
            who = user[1]
        memo[self] = _Memo(header, who)
        return who
