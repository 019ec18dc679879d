"""The `request-size-limiting` config: Kong's keys, types and defaults
(kong/plugins/request-size-limiting/schema.lua), declared once and read into `SizeLimitConfig`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastgw.config.schema import Boolean, Integer, Reader, Schema, Text

DEFAULT_ALLOWED_PAYLOAD_SIZE = 128  # Kong's, in `size_unit`s
# Kong's units and factors: binary, though Kong's description says "128000000 bytes"
UNIT_FACTORS = {"megabytes": 1048576, "kilobytes": 1024, "bytes": 1}
SIZE_UNITS = tuple(UNIT_FACTORS)
DEFAULT_SIZE_UNIT = "megabytes"


@dataclass(frozen=True, slots=True)
class SizeLimitConfig:
    allowed_payload_size: int
    size_unit: str
    require_content_length: bool

    @property
    def allowed_bytes(self) -> int:
        return self.allowed_payload_size * UNIT_FACTORS[self.size_unit]


def _config(reader: Reader, values: dict[str, Any]) -> SizeLimitConfig:
    return SizeLimitConfig(**values)


REQUEST_SIZE_LIMITING: Schema[SizeLimitConfig] = Schema(
    {
        "allowed_payload_size": Integer(DEFAULT_ALLOWED_PAYLOAD_SIZE),
        "size_unit": Text(DEFAULT_SIZE_UNIT, one_of=SIZE_UNITS),
        "require_content_length": Boolean(False),
    },
    build=_config,
)
