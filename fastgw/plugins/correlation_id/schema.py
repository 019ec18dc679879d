"""The `correlation-id` config: Kong's keys, types and defaults
(kong/plugins/correlation-id/schema.lua), declared once and read into `CorrelationIdConfig`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from fastgw.config.schema import Boolean, Checked, Reader, Schema, Text

DEFAULT_HEADER_NAME = "Kong-Request-ID"  # Kong's
GENERATORS = ("uuid", "uuid#counter", "tracker")
DEFAULT_GENERATOR = "uuid#counter"  # Kong's
# a field name (RFC 9110 token): Kong takes any string, which only a valid name survives
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


@dataclass(frozen=True, slots=True)
class CorrelationIdConfig:
    header_name: str
    generator: str
    echo_downstream: bool


def _valid_header_name(reader: Reader, values: dict[str, Any]) -> None:
    name = values["header_name"]
    if not _HEADER_NAME.match(name):
        reader.error("header_name", f"must be a header name; got {name!r}")
        values["header_name"] = DEFAULT_HEADER_NAME


def _config(reader: Reader, values: dict[str, Any]) -> CorrelationIdConfig:
    return CorrelationIdConfig(**values)


CORRELATION_ID: Schema[CorrelationIdConfig] = Schema(
    {
        # Kong's spec writes `header_name: null`: the default, as for any key left out
        "header_name": Checked(Text(DEFAULT_HEADER_NAME), _valid_header_name),
        "generator": Text(DEFAULT_GENERATOR, one_of=GENERATORS),
        "echo_downstream": Boolean(False),
    },
    build=_config,
)
