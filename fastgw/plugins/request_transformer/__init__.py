"""`request-transformer`: Kong's plugin of that name: the upstream request's path, method,
headers, query and body (JSON, form, multipart) rewritten before it is proxied.

The config is `schema.py`, Kong's `$(...)` templates `templates.py`, the step `handler.py`
(headers in `headers.py`, bodies in `bodies.py`).
"""

from __future__ import annotations

from fastgw.config.schema import Reader, read_schema
from fastgw.plugins.building import SpecBase

from .handler import MAX_BODY_SIZE, PRIORITY, RequestTransformer, Transform
from .schema import TRANSFORMER, TransformerConfig

__all__ = ["MAX_BODY_SIZE", "PRIORITY", "SPEC", "RequestTransformer", "TransformerConfig"]


class _Spec(SpecBase):
    name = "request-transformer"

    def parse_config(self, reader: Reader) -> TransformerConfig:
        return read_schema(reader, TRANSFORMER)

    def build(self, config: TransformerConfig, runtime: object) -> RequestTransformer:
        return RequestTransformer(Transform(config))


SPEC = _Spec()
