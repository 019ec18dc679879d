"""`cors`: Kong's plugin of that name: preflights answered at the gateway, CORS fields on every
other response (origins exact or regex, credentials, private network, Vary: Origin).

The config is `schema.py`, the step `handler.py`, the origins' matching `origins.py`.
"""

from __future__ import annotations

from fastgw.config.schema import Reader, read_schema
from fastgw.plugins.building import SpecBase

from .handler import PRIORITY, Cors
from .schema import CORS, CorsConfig

__all__ = ["PRIORITY", "SPEC", "Cors", "CorsConfig"]


class _Spec(SpecBase):
    name = "cors"
    no_consumer = True  # Kong's typedefs.no_consumer

    def parse_config(self, reader: Reader) -> CorsConfig:
        return read_schema(reader, CORS)

    def build(self, config: CorsConfig, runtime: object) -> Cors:
        return Cors(config)


SPEC = _Spec()
