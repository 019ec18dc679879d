"""The `openid-connect` access step: find credentials, swap them for a token (or check the
caller's own token), answer when it fails.

The client-credentials L1 hit is synchronous and allocation-light (DESIGN.md hot-path rules);
everything else, bearer tokens and every answer to the client included, comes after it.
Which method a request uses is decided by what it carries: a Basic Authorization header is
client credentials; then, in Kong's order, a bearer token (header, query, body, cookie) goes to
`bearer`/`introspection`, and client credentials in the query or body to the grant.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final

import orjson

from fastgw.observability.metrics import Family
from fastgw.plugins.api import Plugin, RequestContext

from .authenticator import ClientCredentialsAuthenticator
from .cache import Entry
from .credentials import (
    BEARER_HEADERS,
    TOKEN_PARAMS,
    ClientCredentials,
    CredentialError,
    bearer_from_authorization,
    body_media_type,
    checked_token,
    cookie_value,
    is_basic,
    parse_basic,
    parse_body,
    parse_form,
    strip_body,
    strip_cookie,
    strip_form,
    token_from_body,
    token_from_form,
)
from .errors import AuthError, BodyTooLarge, IdpTokenRejected, InvalidCredentials
from .identity import HeaderPairs
from .schema import OidcConfig
from .stats import OidcStats

if TYPE_CHECKING:  # built only for configs with bearer or introspection
    from .resource_server import BearerAuthenticator

logger = logging.getLogger("fastgw.oidc")

PRIORITY: Final = 1050  # Kong's priority for openid-connect: after the rate limiters of the edge

IDP_UNAVAILABLE_MESSAGE: Final = "identity provider unavailable"
IDP_TIMEOUT_MESSAGE: Final = "identity provider timed out"
# the IdP answered, but with a token that fails verification: why goes to the log, not here
IDP_TOKEN_REJECTED_MESSAGE: Final = "token from the identity provider rejected"
_TOKEN_REJECTED: Final = 0  # the message key of IdpTokenRejected (statuses are the others)
INTERNAL_ERROR_MESSAGE: Final = "An unexpected error occurred"
BODY_TOO_LARGE_MESSAGE: Final = "Request body too large to read credentials"

_AUTHORIZATION: Final = b"authorization"
_BEARER_SCHEME: Final = b"Bearer "
_CONTENT_TYPE: Final = b"content-type"
_COOKIE: Final = b"cookie"
_OPTIONS: Final = b"OPTIONS"
_JSON_CONTENT_TYPE: Final = (b"content-type", b"application/json; charset=utf-8")
_DEFAULT_REALM: Final = b"fastgw"
# bytes that may not appear in a quoted realm: anything but host-name characters
_REALM_DELETE: Final = bytes(
    byte
    for byte in range(256)
    if not (chr(byte).isascii() and (chr(byte).isalnum() or chr(byte) in ".-_[]:"))
)

_NO_CREDENTIALS: Final = InvalidCredentials("no credentials in the request")
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
            413: BODY_TOO_LARGE_MESSAGE,
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
    """Kong's openid-connect at the edge: client credentials (Basic/body/query credentials ->
    upstream Bearer), and the caller's own bearer token (`bearer`, `introspection`)."""

    name = "openid-connect"
    priority = PRIORITY

    has_log = False

    def __init__(
        self,
        config: OidcConfig,
        authenticator: ClientCredentialsAuthenticator,
        bearer: BearerAuthenticator | None = None,
    ) -> None:
        self.authenticator = authenticator
        self.bearer = bearer
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
        sources = config.client_credentials_param_type if config.client_credentials_enabled else ()
        self._from_header = "header" in sources
        self._from_query = "query" in sources
        self._from_body = "body" in sources
        self._hide_credentials = config.hide_credentials
        # where a bearer token is looked for (Kong's bearer_token_param_type)
        bearer_types = config.bearer_token_param_type if bearer is not None else frozenset()
        custom = config.bearer_token_header_name
        self._bearer_header_name = custom.lower().encode() if custom is not None else None
        # Kong 3.15: a bearer_token_header_name is the only header looked at
        self._bearer_authorization = "header" in bearer_types and custom is None
        self._bearer_headers = (
            (self._bearer_header_name,)
            if self._bearer_header_name is not None
            else BEARER_HEADERS
            if "header" in bearer_types
            else ()
        )
        self._bearer_query = "query" in bearer_types
        self._bearer_body = "body" in bearer_types
        cookie = config.bearer_token_cookie_name if "cookie" in bearer_types else None
        self._bearer_cookie = cookie.encode() if cookie is not None else None
        self._body_limit = config.credentials_max_body_size
        self._anonymous: HeaderPairs | None = authenticator.identity.anonymous()

    async def start(self) -> None:
        await self.authenticator.start()

    async def stop(self) -> None:
        if self.bearer is not None:
            self.bearer.close()
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
                if self._bearer_authorization:
                    return self._bearer_in_authorization(ctx, raw, key)
        return self._other_sources(ctx, True)

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

    def _fail(
        self,
        ctx: RequestContext,
        error: AuthError,
        hide: Callable[[RequestContext], None] | None = None,
    ) -> None:
        """Answer a failed request, or (Kong's `anonymous`) let a 401/403 one through as the
        anonymous consumer, without its credentials; an IdP failure is never let through."""
        anonymous = self._anonymous
        if anonymous is None or error.status not in (401, 403):
            self.answers.respond(ctx, error)
            return
        ctx.remove_header(_AUTHORIZATION)
        for name in self._bearer_headers:
            ctx.remove_header(name)
        if hide is not None:
            hide(ctx)
        for name, value in anonymous:
            if value is None:
                ctx.remove_header(name)
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
            self._fail(ctx, InvalidCredentials(str(problem)))
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
            self._fail(ctx, error)
            return None
        return self._fetch_and_apply(ctx, credentials, key, entry, None)

    # -- bearer tokens --------------------------------------------------------------------------

    def _bearer_key(self, token: str) -> bytes:
        """The token's cache key: the digest the hot path computes for `Bearer <token>`."""
        hasher = self._hasher.copy()
        hasher.update(_BEARER_SCHEME + token.encode("ascii"))
        return hasher.digest()

    def _bearer_in_authorization(
        self, ctx: RequestContext, raw: bytes, key: bytes
    ) -> Awaitable[None] | None:
        found = bearer_from_authorization(raw)
        if found is None:
            return self._other_sources(ctx, False)
        try:
            token = checked_token(found)
        except CredentialError as problem:
            self._fail(ctx, InvalidCredentials(str(problem)))
            return None
        if raw != _BEARER_SCHEME + found:
            key = self._bearer_key(token)  # another spelling of the same token
        return self._with_bearer(ctx, token, key, None, True)

    def _sync_bearer(
        self, ctx: RequestContext, check_authorization: bool
    ) -> tuple[str, Callable[[RequestContext], None] | None, bool] | None:
        """A bearer token from a header, the query or a cookie: (token, how to hide it, whether
        it came in Authorization). Raises CredentialError."""
        hide_credentials = self._hide_credentials
        hide: Callable[[RequestContext], None] | None
        if check_authorization and self._bearer_authorization:
            raw = ctx.get_header(_AUTHORIZATION)
            found = bearer_from_authorization(raw) if raw is not None else None
            if found is not None:
                return checked_token(found), None, True
        for name in self._bearer_headers:
            value = ctx.get_header(name)
            if value:
                token = bearer_from_authorization(value) or value
                return (
                    checked_token(token),
                    _header_remover(name) if hide_credentials else None,
                    False,
                )
        if self._bearer_query and ctx.query:
            query_token = token_from_form(ctx.query)
            if query_token is not None:
                hide = _hide_query_token if hide_credentials else None
                return checked_token(query_token), hide, False
        cookie_name = self._bearer_cookie
        if cookie_name is not None:
            cookies = ctx.get_header(_COOKIE)
            found = cookie_value(cookies, cookie_name) if cookies else None
            if found is not None:
                hide = _cookie_remover(cookie_name) if hide_credentials else None
                return checked_token(found), hide, False
        return None

    def _with_bearer(
        self,
        ctx: RequestContext,
        token: str,
        key: bytes,
        hide: Callable[[RequestContext], None] | None,
        from_header: bool,
    ) -> Awaitable[None] | None:
        bearer = self.bearer
        assert bearer is not None  # only called when a bearer method is on
        now = self._clock()
        entry = bearer.cached(key, now)
        if entry is not None:
            self._apply(ctx, entry, from_header=from_header)
            if hide is not None:
                hide(ctx)
            return None
        error = bearer.rejection(key, now)
        if error is not None:
            self._fail(ctx, error, hide)
            return None
        return self._fetch_bearer(ctx, bearer, token, key, hide, from_header)

    async def _fetch_bearer(
        self,
        ctx: RequestContext,
        bearer: BearerAuthenticator,
        token: str,
        key: bytes,
        hide: Callable[[RequestContext], None] | None,
        from_header: bool,
    ) -> None:
        try:
            entry = await bearer.authenticate(token, key)
        except AuthError as error:
            self._fail(ctx, error, hide)
            return
        except Exception:
            logger.exception("openid-connect: unexpected error while verifying a bearer token")
            self.answers.respond(ctx, _INTERNAL_ERROR)
            return
        self._apply(ctx, entry, from_header=from_header)
        if hide is not None:
            hide(ctx)

    # -- the other places credentials come from -----------------------------------------------

    def _other_sources(
        self, ctx: RequestContext, check_authorization: bool
    ) -> Awaitable[None] | None:
        """Kong's order past the Authorization header: a bearer token (header, query, cookie,
        then body), then client credentials in the query, then in the body."""
        if self.bearer is not None:
            try:
                found = self._sync_bearer(ctx, check_authorization)
            except CredentialError as problem:
                self._fail(ctx, InvalidCredentials(str(problem)))
                return None
            if found is not None:
                token, hide, from_header = found
                return self._with_bearer(ctx, token, self._bearer_key(token), hide, from_header)
            if self._bearer_body and ctx.has_body():
                content_type = ctx.get_header(_CONTENT_TYPE)
                media_type = body_media_type(content_type)
                if media_type is not None:
                    return self._body_step(ctx, media_type, content_type)
        return self._client_sources(ctx)

    def _client_sources(
        self, ctx: RequestContext, read: tuple[bytes, bytes | None, bytes] | None = None
    ) -> Awaitable[None] | None:
        """Client credentials in the query, then the body (`read`: the body when it has been
        read already, as (media type, Content-Type, body))."""
        if self._from_query and ctx.query:
            try:
                credentials = parse_form(ctx.query)
            except CredentialError as problem:
                self._fail(ctx, InvalidCredentials(str(problem)))
                return None
            if credentials is not None:
                hide = self._hide_query if self._hide_credentials else None
                return self._with_credentials(ctx, credentials, hide)
        if self._from_body and read is not None:
            return self._body_client_credentials(ctx, *read)
        if self._from_body and ctx.has_body():
            content_type = ctx.get_header(_CONTENT_TYPE)
            media_type = body_media_type(content_type)
            if media_type is not None:
                return self._body_step(ctx, media_type, content_type)
        self._fail(ctx, _NO_CREDENTIALS)
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
            self._fail(ctx, error, hide)
            return None
        if entry is None:
            return self._fetch_and_apply(ctx, credentials, None, None, hide)
        self._apply(ctx, entry, from_header=False)
        if hide is not None:
            hide(ctx)
        return None

    async def _body_step(
        self, ctx: RequestContext, media_type: bytes, content_type: bytes | None
    ) -> None:
        """Read the body once (bounded: 413 beyond `credentials_max_body_size`), then look in
        it for a bearer token, then client credentials (query first, as Kong)."""
        body = await ctx.read_body(self._body_limit)
        if body is None:
            self.answers.respond(ctx, BodyTooLarge("body larger than credentials_max_body_size"))
            return
        if self.bearer is not None and self._bearer_body:
            try:
                found = token_from_body(media_type, body, content_type)
                token = checked_token(found) if found is not None else None
            except CredentialError as problem:
                self._fail(ctx, InvalidCredentials(str(problem)))
                return
            if token is not None:
                hide = None
                if self._hide_credentials:
                    hide = _body_stripper(media_type, content_type, body, TOKEN_PARAMS)
                pending = self._with_bearer(ctx, token, self._bearer_key(token), hide, False)
                if pending is not None:
                    await pending
                return
        pending = self._client_sources(ctx, (media_type, content_type, body))
        if pending is not None:
            await pending

    def _body_client_credentials(
        self, ctx: RequestContext, media_type: bytes, content_type: bytes | None, body: bytes
    ) -> Awaitable[None] | None:
        try:
            credentials = parse_body(media_type, body, content_type)
        except CredentialError as problem:
            self._fail(ctx, InvalidCredentials(str(problem)))
            return None
        if credentials is None:
            self._fail(ctx, _NO_CREDENTIALS)
            return None
        hide = None
        if self._hide_credentials:
            hide = _body_stripper(media_type, content_type, body, None)
        return self._with_credentials(ctx, credentials, hide)

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
            self._fail(ctx, error, hide)
            return
        except Exception:
            logger.exception("openid-connect: unexpected error while obtaining a token")
            self.answers.respond(ctx, _INTERNAL_ERROR)
            return
        self._apply(ctx, entry, from_header=alias is not None)
        if hide is not None:
            hide(ctx)


class OpenIdConnectSkippingPreflight(OpenIdConnect):
    """`run_on_preflight: false`: CORS preflight (OPTIONS) requests pass untouched, as in
    Kong. A subclass chosen at build time, so the usual plugin pays nothing for the check."""

    def access(self, ctx: RequestContext) -> Awaitable[None] | None:
        if ctx.method == _OPTIONS:
            return None
        return OpenIdConnect.access(self, ctx)


def _hide_query_token(ctx: RequestContext) -> None:
    ctx.set_query(strip_form(ctx.query, TOKEN_PARAMS))


def _header_remover(name: bytes) -> Callable[[RequestContext], None]:
    def hide(ctx: RequestContext) -> None:
        ctx.remove_header(name)

    return hide


def _cookie_remover(name: bytes) -> Callable[[RequestContext], None]:
    def hide(ctx: RequestContext) -> None:
        cookies = ctx.get_header(_COOKIE)
        if cookies is None:
            return
        rest = strip_cookie(cookies, name)
        if rest:
            ctx.set_header(_COOKIE, rest)
        else:
            ctx.remove_header(_COOKIE)

    return hide


def _body_stripper(
    media_type: bytes, content_type: bytes | None, body: bytes, names: frozenset[str] | None
) -> Callable[[RequestContext], None]:
    def hide(ctx: RequestContext) -> None:
        if names is None:
            ctx.replace_body(strip_body(media_type, body, content_type))
        else:
            ctx.replace_body(strip_body(media_type, body, content_type, names))

    return hide
