"""`tcp-log`: Kong's plugin of that name: each request's log record as one JSON line (NDJSON)
over TCP, or TLS with `tls` (not verified, as Kong's; `tls_sni` the name sent).

Kong sends each record in a timer of its own, once, on a pooled connection: a receiver that is
down costs every record of the while, and records waiting are not bounded. Here the records
go through Kong's queue with fixed parameters (tcp-log has no `queue` keys): bounded at
QUEUE.max_entries (oldest dropped, counted), written in batches on one kept-alive connection,
retried with Kong's backoff for up to QUEUE.max_retry_time when the receiver cannot be reached.
"""

from __future__ import annotations

from typing import Any

from fastgw.config.schema import Reader
from fastgw.plugins.building import SpecBase

from .handler import TcpLog
from .schema import TcpLogConfig, read_config

__all__ = ["SPEC", "TcpLog"]


class _Spec(SpecBase):
    name = "tcp-log"

    def parse_config(self, reader: Reader) -> TcpLogConfig | None:
        return read_config(reader)

    def build(self, config: TcpLogConfig, runtime: Any) -> TcpLog:
        return TcpLog(config)


SPEC = _Spec()
