"""The `request-transformer` step (Kong's access phase): the upstream request's path, method,
headers, body and query changed as configured, in Kong's order (uri, method, headers, body,
querystring; within each: remove, rename, replace, add, append).

Templates read the request as it came (Kong's documented snapshot): its headers, query
arguments, the route's regex captures and kong.ctx.shared. Without a body rewrite the step is
synchronous. A body is read only when a body rewrite applies to its Content-Type, and only up
to MAX_BODY_SIZE: a bigger body goes upstream untouched (counted in the instance's status).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable
from typing import Final

from fastgw.http.responses import error_parts
from fastgw.plugins.api import Plugin, RequestContext
from fastgw.plugins.query_args import Args, decode_args, encode_query

from . import bodies
from .headers import edited_headers
from .schema import Entry, Family, TransformerConfig
from .templates import Lookup, Template, Value

PRIORITY: Final = 801  # Kong's
# A body is rewritten only if it is at most this big; a bigger one passes through untouched.
# Kong reads what fits its client_body_buffer_size (8k by default) and, for a bigger body,
# rewrites an empty one: its add/append would replace the client's body with theirs alone.
MAX_BODY_SIZE: Final = 1024 * 1024

_CONTENT_TYPE: Final = b"content-type"
# Kong's kong.tools.uri escape: bytes outside RFC 3986's reserved and unreserved sets (and "%")
_PATH_KEEPS: Final = frozenset(
    b"!#$&'()*+,/:;=?@[]ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~%"
)
_QUERY_FORMS: Final = frozenset({"GET", "HEAD", "TRACE"})  # Kong folds form bodies into these


class Transform:
    """What every route's instance shares: the config and the count of bodies left alone."""

    __slots__ = ("bodies_too_large", "config", "needs_body", "tables")

    def __init__(self, config: TransformerConfig) -> None:
        self.config = config
        self.bodies_too_large = 0
        families = config.families()
        self.needs_body = any(family.body for family in families)
        templates = [entry.value for family in families for entry in _entries(family)]
        templates.append(config.uri)
        self.tables = {t for template in templates if template for t in template.tables()}


def _entries(family: Family) -> tuple[Entry, ...]:
    return (*family.body, *family.headers, *family.querystring)


class Env:
    """The template environment of one request (Kong's lazily loaded tables)."""

    __slots__ = ("_captures", "_ctx", "_headers", "_patterns", "_query", "_raw_query")

    def __init__(
        self, ctx: RequestContext, patterns: tuple[re.Pattern[bytes], ...], headers: bool
    ) -> None:
        self._ctx = ctx
        self._patterns = patterns
        # as the request came, before this plugin's edits (only when a template reads them)
        self._headers = list(ctx.headers) if headers else []
        self._raw_query = ctx.query  # the query as it came (a form body may join it later)
        self._query: Args | None = None
        self._captures: dict[str | int, str] | None = None

    def query(self) -> Args:
        if self._query is None:
            self._query = decode_args(self._raw_query)
        return self._query

    def lookup(self, table: str, key: str | int) -> Value:
        if table == "headers":
            name = str(key).lower().replace("_", "-").encode("latin-1", "replace")
            values = [value for field, value in self._headers if field == name]
            return b", ".join(values).decode("latin-1") if values else None
        if table == "query_params":
            value = self.query().get(str(key))
            return value[0] if isinstance(value, list) else value
        if table == "uri_captures":
            return self.captures().get(key)
        shared = self._ctx.shared().get(str(key))
        if shared is None or isinstance(shared, (str, bool)):
            return shared
        return shared.decode("latin-1") if isinstance(shared, bytes) else str(shared)

    def captures(self) -> dict[str | int, str]:
        """Kong's uri_captures: the route's regex path that matched, its groups by number (0:
        the whole match) and by name; none for a plain path."""
        if self._captures is None:
            self._captures = {}
            for pattern in self._patterns:
                found = pattern.match(self._ctx.path)
                if found is None:
                    continue
                if found.re.groups:
                    groups: dict[str | int, bytes | None] = {0: found.group(0)}
                    groups.update(enumerate(found.groups(), 1))
                    groups.update(found.groupdict())
                    self._captures = {
                        k: v.decode("utf-8", "surrogateescape")
                        for k, v in groups.items()
                        if v is not None
                    }
                break
        return self._captures


class RequestTransformer(Plugin):
    name = "request-transformer"
    priority = PRIORITY

    def __init__(self, transform: Transform, patterns: tuple[re.Pattern[bytes], ...] = ()) -> None:
        self.transform = transform
        self.config = transform.config
        # the regex paths of the route this instance serves, in the router's order
        self._patterns = patterns

    def for_route(self, service: object, route: object) -> Plugin:
        from fastgw.config.patterns import compile_path_regex, is_regex_path

        if "uri_captures" not in self.transform.tables:
            return self
        paths = getattr(route, "paths", ())
        patterns = tuple(compile_path_regex(path) for path in paths if is_regex_path(path))
        return RequestTransformer(self.transform, patterns) if patterns else self

    def status(self) -> dict[str, object]:
        return {"bodies_too_large": self.transform.bodies_too_large}

    def access(self, ctx: RequestContext) -> Awaitable[None] | None:
        transform = self.transform
        env = Env(ctx, self._patterns, "headers" in transform.tables)
        lookup: Lookup = env.lookup
        config = self.config
        if config.uri is not None and not _set_path(ctx, config.uri.render(lookup)):
            return None
        if config.http_method is not None and ctx.method != b"HEAD":
            ctx.method = config.http_method.encode()  # a HEAD stays one: its answer has no body
        edited_headers(ctx, config, lookup)
        kind = None
        if transform.needs_body or config.http_method in _QUERY_FORMS:
            kind = bodies.body_kind(ctx.get_header(_CONTENT_TYPE))
        fold = kind == bodies.FORM and config.http_method in _QUERY_FORMS
        if not transform.needs_body:
            kind = None
        if kind is None and not fold:
            self._querystring(ctx, env, None)
            return None
        if not ctx.has_body():
            self._rest(ctx, env, kind, b"", fold)
            return None
        return self._with_body(ctx, env, kind, fold)

    async def _with_body(self, ctx: RequestContext, env: Env, kind: str | None, fold: bool) -> None:
        body = await ctx.read_body(MAX_BODY_SIZE)
        if body is None:
            self.transform.bodies_too_large += 1
            self._querystring(ctx, env, None)
            return
        self._rest(ctx, env, kind, body, fold)

    def _rest(
        self, ctx: RequestContext, env: Env, kind: str | None, body: bytes, fold: bool
    ) -> None:
        """The body, then the query (with the form body's arguments when Kong folds them)."""
        lookup = env.lookup
        query: Args | None = None
        if fold:
            query = decode_args(ctx.query)
            if not bodies.merged_into_query(body, query):
                query = None
            else:
                ctx.set_query(encode_query(query))
        if kind is not None:
            content_type = ctx.get_header(_CONTENT_TYPE) or b""

            def render(template: Template) -> str:
                return template.render(lookup)

            rewritten = bodies.transform(kind, body, content_type, self.config, render)
            if rewritten is not None:
                ctx.replace_body(rewritten)
        self._querystring(ctx, env, query)

    def _querystring(self, ctx: RequestContext, env: Env, folded: Args | None) -> None:
        config = self.config
        families = config.families()
        if not any(family.querystring for family in families):
            return
        args = dict(folded) if folded is not None else dict(env.query())
        lookup = env.lookup
        for entry in config.remove.querystring:
            args.pop(entry.name, None)
        for entry in config.rename.querystring:
            assert entry.value is not None
            new_name = entry.value.render(lookup)
            if entry.name in args and new_name != entry.name:
                args[new_name] = args.pop(entry.name)
        for entry in config.replace.querystring:
            if entry.name in args:
                assert entry.value is not None
                args[entry.name] = entry.value.render(lookup)
        for entry in config.add.querystring:
            if entry.name not in args:
                assert entry.value is not None
                args[entry.name] = entry.value.render(lookup)
        for entry in config.append.querystring:
            assert entry.value is not None
            value = entry.value.render(lookup)
            existing = args.get(entry.name)
            if existing is None:
                args[entry.name] = [value]
            elif isinstance(existing, list):
                args[entry.name] = [*existing, value]
            else:
                args[entry.name] = [existing, value]
        ctx.set_query(encode_query(args))


_ERROR_BODY, _ERROR_HEADERS = error_parts(500)


def _set_path(ctx: RequestContext, path: str) -> bool:
    """Kong's set_path: the whole upstream path, escaped as Kong escapes it; a path that does
    not start with "/" fails the request (Kong's 500)."""
    if not path.startswith("/"):
        ctx.respond(500, _ERROR_BODY, _ERROR_HEADERS)
        return False
    raw = path.encode("utf-8", "surrogateescape")
    ctx.upstream_path = raw if all(b in _PATH_KEEPS for b in raw) else _escaped(raw)
    return True


def _escaped(raw: bytes) -> bytes:
    return b"".join(bytes((b,)) if b in _PATH_KEEPS else b"%%%02X" % b for b in raw)
