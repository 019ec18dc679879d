"""The `tcp-log` config: Kong's keys and defaults (kong/plugins/tcp-log/schema.lua), read into
`TcpLogConfig`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from fastgw.config.schema import Boolean, Declared, Integer, Reader, Schema, Text, read_schema
from fastgw.plugins.kong_log.settings import Milliseconds, refuse_lua

DEFAULT_TIMEOUT_MS: Final = 10_000
DEFAULT_KEEPALIVE_MS: Final = 60_000
MAX_PORT: Final = 65535


@dataclass(frozen=True, slots=True)
class TcpLogConfig:
    host: str
    port: int
    timeout: float  # seconds, for connecting and for each write
    keepalive: float  # seconds an idle connection is kept; 0: closed after each batch
    tls: bool
    tls_sni: str | None

    @property
    def label(self) -> str:
        """Where the records go, for logs and metrics."""
        scheme = "tls" if self.tls else "tcp"
        name = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{name}:{self.port}"


FIELDS: Final[dict[str, Declared]] = {
    "host": Text(required=True),
    "port": Integer(required=True, minimum=0, maximum=MAX_PORT),
    "timeout": Milliseconds(DEFAULT_TIMEOUT_MS, positive=True),
    "keepalive": Milliseconds(DEFAULT_KEEPALIVE_MS, positive=False),
    "tls": Boolean(False),
    "tls_sni": Text(),
}


def _values(reader: Reader, values: dict[str, Any]) -> dict[str, Any]:
    return values


_SCHEMA: Final = Schema(FIELDS, build=_values)


def read_config(reader: Reader) -> TcpLogConfig | None:
    """The config, or None when it has problems (recorded on `reader`)."""
    refuse_lua(reader)
    before = len(reader.problems)
    values = read_schema(reader, _SCHEMA)
    if len(reader.problems) > before:
        return None
    return TcpLogConfig(
        host=values["host"],
        port=values["port"],
        timeout=values["timeout"],
        keepalive=values["keepalive"],
        tls=values["tls"],
        tls_sni=values["tls_sni"],
    )
