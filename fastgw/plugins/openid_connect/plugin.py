"""The `openid-connect` access step: find credentials, swap them for a token, answer when it fails.

The L1 hit is synchronous and allocation-light (DESIGN.md hot-path rules); everything else,
including every answer to the client, is off that path.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Final

import orjson

from fastgw.metrics import Family
from fastgw.pipeline import Plugin, RequestContext

from .authenticator import ClientCredentialsAuthenticator
from .cache import Entry
from .credentials import (
    ClientCredentials,
    CredentialError,
    body_media_type,
    is_basic,
    parse_basic,
    parse_body,
    parse_form,
    strip_body,
    strip_form,
)
from .errors import AuthError, IdpTokenRejected, InvalidCredentials
from .schema import OidcConfig
from .stats import OidcStats

logger = logging.getLogger("fastgw.oidc")

PRIORITY: Final = 1050  # Kong's priority for openid-connect: after the rate limiters of the edge
# Form or JSON bodies holding a client id and secret are tiny; a body bigger than this is
# forwarded without being read for credentials, so reading stays bounded in memory.
BODY_CREDENTIALS_LIMIT: Final = 64 * 1024

IDP_UNAVAILABLE_MESSAGE: Final = "identity provider unavailable"
IDP_TIMEOUT_MESSAGE: Final = "identity provider timed out"
# the IdP answered, but with a token that fails verification: why goes to the log, not here
IDP_TOKEN_REJECTED_MESSAGE: Final = "token from the identity provider rejected"
_TOKEN_REJECTED: Final = 0  # the message key of IdpTokenRejected (statuses are the others)
INTERNAL_ERROR_MESSAGE: Final = "An unexpected error occurred"

_AUTHORIZATION: Final = b"authorization"
_CONTENT_TYPE: Final = b"content-type"
_JSON_CONTENT_TYPE: Final = (b"content-type", b"application/json; charset=utf-8")
_DEFAULT_REALM: Final = b"fastgw"
# bytes that may not appear in a quoted realm: anything but host-name characters
_REALM_DELETE: Final = bytes(
    byte
    for byte in range(256)
    if not (chr(byte).isascii() and (chr(byte).isalnum() or chr(byte) in ".-_[]:"))
)

_NO_CREDENTIALS: Final = InvalidCredentials("no client credentials in the request")
_INTERNAL_ERROR: Final = AuthError("internal error")


def _realm(host: bytes) -> bytes:
    """The request's host without its port, as nginx's $host (Kong's realm)."""
    host = host[: host.find(b"]") + 1] if host.startswith(b"[") else host.partition(b":")[0]
    host = host.translate(None, _REALM_DELETE).lower()
    return host or _DEFAULT_REALM


def _quoted(text: str) -> bytes:
    # RFC 9110 quoted-string: keep it ASCII without quotes or backslashes
    return text.replace('"', "'").replace("\\", "/").encode("ascii", "replace")


class Answers:
    """Error responses, prebuilt at config time except for the realm (the request's host)."""

    def __init__(self, config: OidcConfig) -> None:
        self._display = config.display_errors
        self._expose = config.expose_error_code
        self._messages = {
            401: config.unauthorized_error_message,
            403: config.forbidden_error_message,
            502: IDP_UNAVAILABLE_MESSAGE,
            504: IDP_TIMEOUT_MESSAGE,
            500: INTERNAL_ERROR_MESSAGE,
            _TOKEN_REJECTED: IDP_TOKEN_REJECTED_MESSAGE,
        }
        self._bodies = {
            status: orjson.dumps({"message": message}) for status, message in self._messages.items()
        }

    def respond(self, ctx: RequestContext, error: AuthError) -> None:
        status = error.status if error.status in self._messages else 500
        kind = _TOKEN_REJECTED if isinstance(error, IdpTokenRejected) else status
        if self._display:
            message = f"{self._messages[kind]} ({error.reason})"
            body = orjson.dumps({"message": message})
        else:
            body = self._bodies[kind]
        headers = [_JSON_CONTENT_TYPE]
        if error.error_code is not None:
            # only the client's own problems get a challenge; an IdP outage is not one
            headers.append((b"www-authenticate", self._challenge(ctx.host, error)))
        ctx.respond(status, body, headers)

    def _challenge(self, host: bytes, error: AuthError) -> bytes:
        challenge = b'Bearer realm="' + _realm(host) + b'"'
        if self._expose and error.error_code is not None:
            challenge += b', error="' + error.error_code.encode() + b'"'
            if self._display:
                challenge += b', error_description="' + _quoted(error.reason) + b'"'
        return challenge


class _Digest:
    """The last Authorization header of a connection and its cache key."""

    __slots__ = ("header", "key")

    def __init__(self, header: bytes, key: bytes) -> None:
        self.header = header
        self.key = key


class OpenIdConnect(Plugin):
    """Client credentials grant at the edge: Basic/body/query credentials → upstream Bearer."""

    name = "openid-connect"
    priority = PRIORITY

    has_log = False

    def __init__(self, config: OidcConfig, authenticator: ClientCredentialsAuthenticator) -> None:
        self.authenticator = authenticator
        self.answers = Answers(config)
        self._stats: OidcStats = authenticator.stats
        # the upstream token's header: loggers must not write it
        self.sensitive_headers = frozenset({authenticator.upstream_header_name})
        # hot-path state, bound once so that a hit costs attribute loads only
        self._entries = authenticator.cache.entries
        self._hasher = authenticator.header_hasher
        self._clock = authenticator.clock
        self._token_header = authenticator.upstream_header_name
        # the caller's Basic header never goes upstream: replaced by the token, else removed
        self._drop_authorization = self._token_header != _AUTHORIZATION
        sources = config.client_credentials_param_type
        self._from_header = "header" in sources
        self._from_query = "query" in sources
        self._from_body = "body" in sources
        self._hide_credentials = config.hide_credentials

    async def start(self) -> None:
        await self.authenticator.start()

    async def stop(self) -> None:
        await self.authenticator.close()

    def metrics(self) -> list[Family]:
        """The token cache, IdP and shared cache counters under this instance's name."""
        return self.authenticator.metrics(self.instance_name or None)

    def status(self) -> dict[str, object]:
        return self.authenticator.status()

    # -- the hot path ---------------------------------------------------------------------------

    def access(self, ctx: RequestContext) -> Awaitable[None] | None:
        if self._from_header:
            raw = ctx.get_header(_AUTHORIZATION)
            if raw is not None:
                # A keep-alive client sends the same header on every request: its salted
                # digest (the cache key, 6,000 instructions of SHA-256) is kept per connection.
                memo = ctx.connection_memo
                seen = memo.get(self)
                if isinstance(seen, _Digest) and seen.header == raw:
                    key = seen.key
                else:
                    hasher = self._hasher.copy()
                    hasher.update(raw)
                    key = hasher.digest()
                    memo[self] = _Digest(raw, key)
                entry = self._entries.get(key)
                if entry is not None and self._clock() < entry.refresh_at:
                    self._stats.hits += 1
                    ctx.set_header(self._token_header, entry.header_value)
                    if self._drop_authorization:
                        ctx.remove_header(_AUTHORIZATION)
                    if entry.upstream_headers:
                        self._set_claim_headers(ctx, entry)
                    return None
                if is_basic(raw):
                    return self._basic_slow(ctx, raw, key, entry)
        return self._other_sources(ctx)

    # -- everything else ------------------------------------------------------------------------

    def _apply(self, ctx: RequestContext, entry: Entry, *, from_header: bool) -> None:
        ctx.set_header(self._token_header, entry.header_value)
        if from_header and self._drop_authorization:
            ctx.remove_header(_AUTHORIZATION)
        if entry.upstream_headers:
            self._set_claim_headers(ctx, entry)

    @staticmethod
    def _set_claim_headers(ctx: RequestContext, entry: Entry) -> None:
        for name, value in entry.upstream_headers:
            if value is None:
                ctx.remove_header(name)  # a missing claim must not let the client's own through
            else:
                ctx.set_header(name, value)

    def _basic_slow(
        self, ctx: RequestContext, raw: bytes, key: bytes, entry: Entry | None
    ) -> Awaitable[None] | None:
        authenticator = self.authenticator
        now = self._clock()
        try:
            credentials = parse_basic(raw)
        except CredentialError as problem:
            self.answers.respond(ctx, InvalidCredentials(str(problem)))
            return None
        if entry is not None and now < entry.expires_at:
            # due for refresh: keep serving while one background refresh runs
            authenticator.refresh_in_background(entry, (key,), credentials, now)
            self._stats.hits += 1
            self._apply(ctx, entry, from_header=True)
            return None
        error = authenticator.cache.rejection(key, now)
        if error is not None:
            self._stats.negative_hits += 1
            self.answers.respond(ctx, error)
            return None
        return self._fetch_and_apply(ctx, credentials, key, entry, None)

    def _other_sources(self, ctx: RequestContext) -> Awaitable[None] | None:
        if self._from_query and ctx.query:
            try:
                credentials = parse_form(ctx.query)
            except CredentialError as problem:
                self.answers.respond(ctx, InvalidCredentials(str(problem)))
                return None
            if credentials is not None:
                hide = self._hide_query if self._hide_credentials else None
                return self._with_credentials(ctx, credentials, hide)
        if self._from_body and ctx.has_body():
            media_type = body_media_type(ctx.get_header(_CONTENT_TYPE))
            if media_type is not None:
                return self._body_credentials(ctx, media_type)
        self.answers.respond(ctx, _NO_CREDENTIALS)
        return None

    @staticmethod
    def _hide_query(ctx: RequestContext) -> None:
        ctx.set_query(strip_form(ctx.query))

    def _with_credentials(
        self,
        ctx: RequestContext,
        credentials: ClientCredentials,
        hide: Callable[[RequestContext], None] | None,
    ) -> Awaitable[None] | None:
        entry, error = self.authenticator.lookup(credentials, self._clock())
        if error is not None:
            self.answers.respond(ctx, error)
            return None
        if entry is None:
            return self._fetch_and_apply(ctx, credentials, None, None, hide)
        self._apply(ctx, entry, from_header=False)
        if hide is not None:
            hide(ctx)
        return None

    async def _body_credentials(self, ctx: RequestContext, media_type: bytes) -> None:
        body = await ctx.read_body(BODY_CREDENTIALS_LIMIT)
        if body is None:
            self.answers.respond(ctx, InvalidCredentials("body too large to hold credentials"))
            return
        try:
            credentials = parse_body(media_type, body)
        except CredentialError as problem:
            self.answers.respond(ctx, InvalidCredentials(str(problem)))
            return
        if credentials is None:
            self.answers.respond(ctx, _NO_CREDENTIALS)
            return
        hide = None
        if self._hide_credentials:

            def hide(ctx: RequestContext) -> None:
                ctx.replace_body(strip_body(media_type, body))

        pending = self._with_credentials(ctx, credentials, hide)
        if pending is not None:
            await pending

    async def _fetch_and_apply(
        self,
        ctx: RequestContext,
        credentials: ClientCredentials,
        alias: bytes | None,
        stale: Entry | None,
        hide: Callable[[RequestContext], None] | None,
    ) -> None:
        try:
            entry = await self.authenticator.obtain(credentials, alias=alias, stale=stale)
        except AuthError as error:
            self.answers.respond(ctx, error)
            return
        except Exception:
            logger.exception("openid-connect: unexpected error while obtaining a token")
            self.answers.respond(ctx, _INTERNAL_ERROR)
            return
        self._apply(ctx, entry, from_header=alias is not None)
        if hide is not None:
            hide(ctx)
