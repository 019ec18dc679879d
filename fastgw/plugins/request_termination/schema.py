"""request-termination's config: Kong's keys, types, defaults and checks
(kong/plugins/request-termination/schema.lua)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastgw.config.schema import Boolean, Integer, Reader, Text, read_declared
from fastgw.plugins.auth_config import HeaderName

DEFAULT_STATUS = 503  # Kong's


@dataclass(frozen=True, slots=True)
class TerminationConfig:
    status_code: Annotated[int, Integer(DEFAULT_STATUS, minimum=100, maximum=599)]
    message: Annotated[str | None, Text(allow_empty=True)]
    content_type: Annotated[str | None, Text(allow_empty=True)]
    body: Annotated[str | None, Text(allow_empty=True)]
    echo: Annotated[bool, Boolean(False)]
    trigger: Annotated[str | None, HeaderName()]


def parse(reader: Reader) -> TerminationConfig:
    values = read_declared(reader, TerminationConfig)
    # Kong's custom validator: an empty string counts as not given
    message, content_type, body = (
        values[key] or None for key in ("message", "content_type", "body")
    )
    if message is not None and (content_type is not None or body is not None):
        reader.error("", "message cannot be used with content_type or body")
    elif content_type is not None and body is None:
        reader.error("", "content_type requires a body")
    elif values["echo"] and (content_type is not None or body is not None):
        reader.error("", "echo cannot be used with content_type and body")
    reader.finish()
    return TerminationConfig(**values)
