"""`correlation-id`: Kong's plugin of that name: an id per request, sent upstream in
`header_name`, written to the log record (`correlation_id`), echoed to the client on request.

The config is `schema.py`, the step `handler.py`. A logger reads the id with
`fastgw.plugins.api.serialize_values(ctx)` (Kong's kong.log.set_serialize_value).
"""

from __future__ import annotations

from fastgw.config.schema import Reader, read_schema
from fastgw.plugins.building import PluginRuntime, SpecBase

from .handler import LOG_KEY, PRIORITY, CorrelationId
from .schema import CORRELATION_ID, CorrelationIdConfig

__all__ = ["LOG_KEY", "PRIORITY", "SPEC", "CorrelationId", "CorrelationIdConfig"]


class _Spec(SpecBase):
    name = "correlation-id"

    def parse_config(self, reader: Reader) -> CorrelationIdConfig:
        return read_schema(reader, CORRELATION_ID)

    def build(self, config: CorrelationIdConfig, runtime: PluginRuntime) -> CorrelationId:
        return CorrelationId(config, runtime.server_address)


SPEC = _Spec()
