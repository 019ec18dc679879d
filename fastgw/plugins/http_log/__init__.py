"""`http-log`: Kong's plugin of that name: each request's log record sent to an HTTP endpoint,
through Kong's queue (batched, retried, bounded; a slow or dead endpoint costs records, counted,
never a request).

schema.py declares the config, handler.py is the plugin (the log step and the sender).
"""

from __future__ import annotations

from fastgw.config.schema import Reader
from fastgw.plugins.building import PluginRuntime, SpecBase

from .handler import HttpLog
from .schema import HttpLogConfig, read_config

__all__ = ["SPEC", "HttpLog"]


class _Spec(SpecBase):
    name = "http-log"

    def parse_config(self, reader: Reader) -> HttpLogConfig | None:
        return read_config(reader)

    def build(self, config: HttpLogConfig, runtime: PluginRuntime) -> HttpLog:
        return HttpLog(config, runtime.ca_pem)


SPEC = _Spec()
