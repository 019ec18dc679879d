"""The `request-size-limiting` step (Kong's access phase): a body bigger than allowed is answered
413 (417 to a client that waits with Expect: 100-continue) and never reaches the upstream.

A Content-Length is checked as it is, without reading the body: the hot path. A chunked body has
no size up front: it is read, at most `allowed_bytes` of it (Kong reads it whole, to a file past
nginx's buffer), and answered as soon as it grows past the limit, so what a request holds in
memory is bounded by the limit the config sets.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Final

from fastgw.http.responses import error_parts
from fastgw.plugins.api import Plugin, RequestContext

from .schema import SizeLimitConfig

PRIORITY: Final = 951  # Kong's
# Kong's answers
TOO_LARGE: Final = "Request size limit exceeded"
LENGTH_REQUIRED: Final = "A valid Content-Length header is required"


class RequestSizeLimiting(Plugin):
    name = "request-size-limiting"
    priority = PRIORITY

    def __init__(self, config: SizeLimitConfig) -> None:
        self.config = config
        self.allowed = config.allowed_bytes
        self._require_length = config.require_content_length

    def access(self, ctx: RequestContext) -> Awaitable[None] | None:
        length = ctx.content_length
        if length >= 0:
            if length > self.allowed:
                _too_large(ctx)
            return None
        chunked = ctx.has_body()  # without a Content-Length, a body is chunked
        if self._require_length and not chunked:
            # Kong's check reads Transfer-Encoding only: a bodiless GET without a length too
            status = 411
            body, headers = error_parts(status, LENGTH_REQUIRED)
            ctx.respond(status, body, headers)
            return None
        if not chunked:
            return None  # no body at all (Kong: "missing request body", let through)
        return self._read_chunked(ctx)

    async def _read_chunked(self, ctx: RequestContext) -> None:
        if await ctx.read_body(self.allowed) is None:
            _too_large(ctx)


def _too_large(ctx: RequestContext) -> None:
    status = 417 if ctx.expect_continue else 413
    body, headers = error_parts(status, TOO_LARGE)
    ctx.respond(status, body, headers)
