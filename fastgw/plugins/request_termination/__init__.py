"""`request-termination`: answer every request on its routes with a fixed response (Kong's)."""

from __future__ import annotations

from typing import Any

import orjson

from fastgw.config.schema import Reader
from fastgw.plugins.api import Plugin, RequestContext
from fastgw.plugins.building import SpecBase

PRIORITY = 2  # Kong's priority for request-termination


class RequestTermination(Plugin):
    name = "request-termination"
    priority = PRIORITY

    def __init__(self, status: int, body: bytes, content_type: bytes) -> None:
        self._status = status
        self._body = body
        self._headers = ((b"content-type", content_type),)

    def access(self, ctx: RequestContext) -> None:
        ctx.respond(self._status, self._body, self._headers)


class _Spec(SpecBase):
    name = "request-termination"

    def parse_config(self, reader: Reader) -> dict[str, Any]:
        status = reader.integer("status_code", 503, minimum=100, maximum=599)
        message = reader.string("message")
        body = reader.string("body", allow_empty=True)
        content_type = reader.string("content_type")
        if message is not None and body is not None:
            reader.error("body", "cannot be set together with message")
        reader.finish()
        return {"status": status, "message": message, "body": body, "content_type": content_type}

    def build(self, config: dict[str, Any], runtime: object) -> RequestTermination:
        if config["body"] is not None:
            body = config["body"].encode()
            content_type = (config["content_type"] or "text/plain; charset=utf-8").encode()
        else:
            message = config["message"] or "Service unavailable"
            body = orjson.dumps({"message": message})
            content_type = b"application/json; charset=utf-8"
        return RequestTermination(config["status"], body, content_type)


SPEC = _Spec()
