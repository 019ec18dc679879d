"""`request-size-limiting`: Kong's plugin of that name: request bodies over `allowed_payload_size`
(in `size_unit`s) answered 413, or 411 without a Content-Length when `require_content_length`.

The config is `schema.py`, the step `handler.py`.
"""

from __future__ import annotations

from fastgw.config.schema import Reader, read_schema
from fastgw.plugins.building import SpecBase

from .handler import PRIORITY, RequestSizeLimiting
from .schema import REQUEST_SIZE_LIMITING, SizeLimitConfig

__all__ = ["PRIORITY", "SPEC", "RequestSizeLimiting", "SizeLimitConfig"]


class _Spec(SpecBase):
    name = "request-size-limiting"

    def parse_config(self, reader: Reader) -> SizeLimitConfig:
        return read_schema(reader, REQUEST_SIZE_LIMITING)

    def build(self, config: SizeLimitConfig, runtime: object) -> RequestSizeLimiting:
        return RequestSizeLimiting(config)


SPEC = _Spec()
