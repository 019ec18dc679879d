"""The `openid-connect` access step: find credentials, swap them for a token (or check the
caller's own token), answer when it fails.

A cached client's request is answered by the token cache's `hit` (cache.py), synchronously and
without allocating beyond its headers; everything else, bearer tokens and every answer to the
client included, comes after it, through the authenticators' public calls. Which method a
request uses is decided by what it carries: a Basic Authorization header is client credentials;
then, in Kong's order, a bearer token (header, query, body, cookie) goes to
`bearer`/`introspection`, and client credentials in the query or body to the grant.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final

from fastgw.observability.metrics import Family
from fastgw.plugins.api import Authenticated, HeaderPairs, Plugin, RequestContext, StoreUsage
from fastgw.plugins.identity import has_credential

from .answers import Answers
from .authenticator import ClientCredentialsAuthenticator
from .cache import Entry, TokenCache
from .credentials import (
    BEARER_HEADERS,
    CLIENT_ID_PARAM,
    CLIENT_SECRET_PARAM,
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
from .errors import AuthError, BodyTooLarge, InvalidCredentials
from .schema import OidcConfig

if TYPE_CHECKING:  # built only for configs with bearer or introspection
    from .resource_server import BearerAuthenticator

logger = logging.getLogger("fastgw.oidc")

PRIORITY: Final = 1050  # Kong's priority for openid-connect: after the rate limiters of the edge

_AUTHORIZATION: Final = b"authorization"
_BEARER_SCHEME: Final = b"Bearer "
_CONTENT_TYPE: Final = b"content-type"
_COOKIE: Final = b"cookie"
_OPTIONS: Final = b"OPTIONS"
# a parameter name with an escape may decode to a credential's: such a query is parsed
_ESCAPE: Final = b"%"

_NO_CREDENTIALS: Final = InvalidCredentials("no credentials in the request")
_INTERNAL_ERROR: Final = AuthError("internal error")

Hide = Callable[[RequestContext], None]
# a body read once: (media type, Content-Type, the body)
Read = tuple[bytes, bytes | None, bytes]


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
        # the client-credentials token cache: its `hit` is the hot path
        self._tokens: TokenCache = authenticator.cache
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
        # Kong 3.15: a bearer_token_header_name is the only header looked at
        self._bearer_authorization = "header" in bearer_types and custom is None
        self._bearer_headers = (
            (custom.lower().encode(),)
            if custom is not None
            else BEARER_HEADERS
            if "header" in bearer_types
            else ()
        )
        self._bearer_query = "query" in bearer_types
        self._bearer_body = "body" in bearer_types
        cookie = config.bearer_token_cookie_name if "cookie" in bearer_types else None
        self._bearer_cookie = cookie.encode() if cookie is not None else None
        self._body_limit = config.credentials_max_body_size
        self._anonymous: tuple[HeaderPairs, Authenticated] | None = (
            authenticator.identity.anonymous()
        )
        # hide_credentials: the parameters the plugin reads credentials from leave the query of
        # every request it lets through, and the body whenever it read the body
        self._query_names = _recognised(config, self._from_query, self._bearer_query)
        self._body_names = _recognised(config, self._from_body, self._bearer_body)
        self._query_literals = tuple(name.encode() for name in self._query_names)
        # loggers must not write the upstream token, nor a bearer token the plugin reads from
        # a header of its own (Authorization and Cookie every logger redacts)
        self.sensitive_headers = frozenset({self._token_header, *self._bearer_headers})
        # what it sets upstream: the token header, the claim headers (Kong's consumer headers
        # are the gateway's own: fastgw.plugins.identity.IDENTITY_HEADERS)
        self.owned_headers = frozenset(
            {self._token_header, *(name.lower().encode() for _, name in config.upstream_headers)}
        )

    async def start(self) -> None:
        await self.authenticator.start()

    async def stop(self) -> None:
        if self.bearer is not None:
            self.bearer.close()
        await self.authenticator.close()

    def metrics(self) -> list[Family]:
        """The token cache, IdP and shared cache counters under this instance's name."""
        families = self.authenticator.metrics(self.instance_name or None)
        if self.bearer is not None:
            families += self.bearer.metrics(self.instance_name or str(self.authenticator.instance))
        return families

    def stores(self) -> list[StoreUsage]:
        where = self.instance_name or str(self.authenticator.instance)
        stores = self.authenticator.stores(where)
        if self.bearer is not None:
            stores += self.bearer.stores(where)
        return stores

    def status(self) -> dict[str, object]:
        status = self.authenticator.status()
        if self.bearer is not None:
            status.update(self.bearer.status())
        return status

    # -- the hot path ---------------------------------------------------------------------------

    def access(self, ctx: RequestContext) -> Awaitable[None] | None:
        if self._anonymous is not None and has_credential(ctx):
            return None  # Kong's logical OR: an earlier plugin authenticated it
        if self._from_header:
            raw = ctx.get_header(_AUTHORIZATION)
            if raw is not None:
                # A keep-alive client sends the same header on every request: its salted
                # digest (the cache key, ~2,000 instructions of BLAKE2s) is kept per
                # connection, in one _Digest that a connection carrying many clients reuses.
                memo = ctx.connection_memo
                seen = memo.get(self)
                if not isinstance(seen, _Digest):
                    key = self._tokens.header_key(raw)
                    memo[self] = _Digest(raw, key)
                elif seen.header == raw:
                    key = seen.key
                else:
                    key = seen.key = self._tokens.header_key(raw)
                    seen.header = raw
                entry = self._tokens.hit(key)
                if entry is not None:
                    ctx.set_header(self._token_header, entry.header_value)
                    if self._drop_authorization:
                        ctx.remove_header(_AUTHORIZATION)
                    ctx.principal = entry.principal
                    if entry.upstream_headers:
                        self._set_claim_headers(ctx, entry)
                    if self._query_names and ctx.query:
                        self._hide_query(ctx)
                    return None
                if is_basic(raw):
                    return self._basic_slow(ctx, raw, key)
                if self._bearer_authorization:
                    return self._bearer_in_authorization(ctx, raw, key)
        return self._other_sources(ctx, True)

    # -- everything else ------------------------------------------------------------------------

    def _apply(
        self, ctx: RequestContext, entry: Entry, from_header: bool, hide: Hide | None
    ) -> None:
        ctx.set_header(self._token_header, entry.header_value)
        if from_header and self._drop_authorization:
            ctx.remove_header(_AUTHORIZATION)
        ctx.principal = entry.principal
        if entry.upstream_headers:
            self._set_claim_headers(ctx, entry)
        self._hide(ctx, hide)

    def _hide(self, ctx: RequestContext, hide: Hide | None) -> None:
        """`hide` (the source's own removal: a header, a cookie, the body read), then the
        credential parameters of the query."""
        if hide is not None:
            hide(ctx)
        if self._query_names and ctx.query:
            self._hide_query(ctx)

    def _hide_query(self, ctx: RequestContext) -> None:
        query = ctx.query
        # a recognised name appears as it is, or escaped: else there is nothing to strip
        if _ESCAPE in query or any(name in query for name in self._query_literals):
            stripped = strip_form(query, self._query_names)
            if stripped is not query:
                ctx.set_query(stripped)

    @staticmethod
    def _set_claim_headers(ctx: RequestContext, entry: Entry) -> None:
        for name, value in entry.upstream_headers:
            if value is None:
                ctx.remove_header(name)  # a missing claim must not let the client's own through
            else:
                ctx.set_header(name, value)

    def _fail(self, ctx: RequestContext, error: AuthError, hide: Hide | None = None) -> None:
        """Answer a failed request, or (Kong's `anonymous`) let a 401/403 one through as the
        anonymous consumer, without its credentials; an IdP failure is never let through."""
        anonymous = self._anonymous
        if anonymous is None or error.status not in (401, 403):
            self.answers.respond(ctx, error)
            return
        ctx.remove_header(_AUTHORIZATION)
        for name in self._bearer_headers:
            ctx.remove_header(name)
        self._hide(ctx, hide)
        headers, who = anonymous
        ctx.principal = who
        for name, value in headers:
            if value is None:
                ctx.remove_header(name)
            else:
                ctx.set_header(name, value)

    def _basic_slow(self, ctx: RequestContext, raw: bytes, key: bytes) -> Awaitable[None] | None:
        try:
            credentials = parse_basic(raw)
        except CredentialError as problem:
            self._fail(ctx, InvalidCredentials(str(problem)))
            return None
        entry, error = self.authenticator.cached_for_header(key, credentials)
        if error is not None:
            self._fail(ctx, error)
            return None
        if entry is not None:  # due for refresh: served while one background refresh runs
            self._apply(ctx, entry, True, None)
            return None
        return self._fetch_and_apply(ctx, credentials, key, None)

    # -- bearer tokens --------------------------------------------------------------------------

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
        assert self.bearer is not None  # _bearer_authorization implies it
        if raw != _BEARER_SCHEME + found:
            key = self.bearer.key(token)  # another spelling of the same token
        return self._with_bearer(ctx, token, key, None, True)

    def _sync_bearer(
        self, ctx: RequestContext, check_authorization: bool
    ) -> tuple[str, Hide | None, bool] | None:
        """A bearer token from a header, the query or a cookie: (token, how to hide it, whether
        it came in Authorization). Raises CredentialError."""
        hide_credentials = self._hide_credentials
        if check_authorization and self._bearer_authorization:
            raw = ctx.get_header(_AUTHORIZATION)
            found = bearer_from_authorization(raw) if raw is not None else None
            if found is not None:
                return checked_token(found), None, True
        for name in self._bearer_headers:
            value = ctx.get_header(name)
            if value:
                token = bearer_from_authorization(value) or value
                hide = _header_remover(name) if hide_credentials else None
                return checked_token(token), hide, False
        if self._bearer_query and ctx.query:
            query_token = token_from_form(ctx.query)
            if query_token is not None:
                return checked_token(query_token), None, False  # `_hide` strips the query
        cookie_name = self._bearer_cookie
        if cookie_name is not None:
            cookies = ctx.get_header(_COOKIE)
            found = cookie_value(cookies, cookie_name) if cookies else None
            if found is not None:
                hide = _cookie_remover(cookie_name) if hide_credentials else None
                return checked_token(found), hide, False
        return None

    def _with_bearer(
        self, ctx: RequestContext, token: str, key: bytes, hide: Hide | None, from_header: bool
    ) -> Awaitable[None] | None:
        bearer = self.bearer
        assert bearer is not None  # only called when a bearer method is on
        entry = bearer.cached(key)
        if entry is not None:
            self._apply(ctx, entry, from_header, hide)
            return None
        error = bearer.rejection(key)
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
        hide: Hide | None,
        from_header: bool,
    ) -> None:
        try:
            entry = await bearer.authenticate(token, key, ctx.client_ip)
        except AuthError as error:
            self._fail(ctx, error, hide)
            return
        except Exception:
            logger.exception("openid-connect: unexpected error while verifying a bearer token")
            self.answers.respond(ctx, _INTERNAL_ERROR)
            return
        self._apply(ctx, entry, from_header, hide)

    # -- the other places credentials come from -----------------------------------------------

    def _other_sources(
        self, ctx: RequestContext, check_authorization: bool
    ) -> Awaitable[None] | None:
        """Kong's order past the Authorization header: a bearer token (header, query, cookie,
        then body), then client credentials in the query, then in the body."""
        bearer = self.bearer
        if bearer is not None:
            try:
                found = self._sync_bearer(ctx, check_authorization)
            except CredentialError as problem:
                self._fail(ctx, InvalidCredentials(str(problem)))
                return None
            if found is not None:
                token, hide, from_header = found
                return self._with_bearer(ctx, token, bearer.key(token), hide, from_header)
            if self._bearer_body and ctx.has_body():
                content_type = ctx.get_header(_CONTENT_TYPE)
                media_type = body_media_type(content_type)
                if media_type is not None:
                    return self._body_step(ctx, media_type, content_type)
        return self._client_sources(ctx)

    def _client_sources(
        self, ctx: RequestContext, read: Read | None = None
    ) -> Awaitable[None] | None:
        """Client credentials in the query, then the body (`read`: the body when it has been
        read already)."""
        if self._from_query and ctx.query:
            try:
                credentials = parse_form(ctx.query)
            except CredentialError as problem:
                self._fail(ctx, InvalidCredentials(str(problem)))
                return None
            if credentials is not None:
                return self._with_credentials(ctx, credentials, self._body_hider(read))
        if self._from_body and read is not None:
            return self._body_client_credentials(ctx, read)
        if self._from_body and ctx.has_body():
            content_type = ctx.get_header(_CONTENT_TYPE)
            media_type = body_media_type(content_type)
            if media_type is not None:
                return self._body_step(ctx, media_type, content_type)
        self._fail(ctx, _NO_CREDENTIALS)
        return None

    def _body_hider(self, read: Read | None) -> Hide | None:
        """With hide_credentials, a body the plugin read loses every credential parameter it
        recognises, whichever source the request authenticated with."""
        if read is None or not self._body_names:
            return None
        return _body_stripper(read, self._body_names)

    def _with_credentials(
        self, ctx: RequestContext, credentials: ClientCredentials, hide: Hide | None
    ) -> Awaitable[None] | None:
        entry, error = self.authenticator.lookup(credentials)
        if error is not None:
            self._fail(ctx, error, hide)
            return None
        if entry is None:
            return self._fetch_and_apply(ctx, credentials, None, hide)
        self._apply(ctx, entry, False, hide)
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
        read = (media_type, content_type, body)
        bearer = self.bearer
        if bearer is not None and self._bearer_body:
            try:
                found = token_from_body(media_type, body, content_type)
                token = checked_token(found) if found is not None else None
            except CredentialError as problem:
                self._fail(ctx, InvalidCredentials(str(problem)))
                return
            if token is not None:
                hide = self._body_hider(read)
                pending = self._with_bearer(ctx, token, bearer.key(token), hide, False)
                if pending is not None:
                    await pending
                return
        pending = self._client_sources(ctx, read)
        if pending is not None:
            await pending

    def _body_client_credentials(self, ctx: RequestContext, read: Read) -> Awaitable[None] | None:
        media_type, content_type, body = read
        try:
            credentials = parse_body(media_type, body, content_type)
        except CredentialError as problem:
            self._fail(ctx, InvalidCredentials(str(problem)))
            return None
        if credentials is None:
            self._fail(ctx, _NO_CREDENTIALS)
            return None
        return self._with_credentials(ctx, credentials, self._body_hider(read))

    async def _fetch_and_apply(
        self,
        ctx: RequestContext,
        credentials: ClientCredentials,
        alias: bytes | None,
        hide: Hide | None,
    ) -> None:
        try:
            entry = await self.authenticator.obtain(
                credentials, alias=alias, client_address=ctx.client_ip
            )
        except AuthError as error:
            self._fail(ctx, error, hide)
            return
        except Exception:
            logger.exception("openid-connect: unexpected error while obtaining a token")
            self.answers.respond(ctx, _INTERNAL_ERROR)
            return
        self._apply(ctx, entry, alias is not None, hide)


class OpenIdConnectSkippingPreflight(OpenIdConnect):
    """`run_on_preflight: false`: CORS preflight (OPTIONS) requests pass untouched, as in
    Kong. A subclass chosen at build time, so the usual plugin pays nothing for the check."""

    def access(self, ctx: RequestContext) -> Awaitable[None] | None:
        if ctx.method == _OPTIONS:
            return None
        return OpenIdConnect.access(self, ctx)


def _recognised(config: OidcConfig, client_credentials: bool, bearer: bool) -> frozenset[str]:
    """The credential parameters hide_credentials strips from one place (query or body): those
    the plugin reads there (client credentials, a bearer token)."""
    if not config.hide_credentials:
        return frozenset()
    names: set[str] = set()
    if client_credentials:
        names |= {CLIENT_ID_PARAM, CLIENT_SECRET_PARAM}
    if bearer:
        names |= TOKEN_PARAMS
    return frozenset(names)


def _header_remover(name: bytes) -> Hide:
    def hide(ctx: RequestContext) -> None:
        ctx.remove_header(name)

    return hide


def _cookie_remover(name: bytes) -> Hide:
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


def _body_stripper(read: Read, names: frozenset[str]) -> Hide:
    media_type, content_type, body = read

    def hide(ctx: RequestContext) -> None:
        stripped = strip_body(media_type, body, content_type, names)
        if stripped is not body:
            ctx.replace_body(stripped)

    return hide
