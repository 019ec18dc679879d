"""The `cors` config: Kong's keys, types, defaults and checks (kong/plugins/cors/schema.lua),
declared once and read into `CorsConfig`.

An origin is "*" or a regex that compiles (Kong's is_regex: a plain origin is a regex too).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastgw.config.schema import Boolean, Checked, Number, Reader, Schema, Strings, join

from .origins import OriginError, compile_origin

# Kong's `methods` default and its one_of (the order is the Access-Control-Allow-Methods value).
METHODS = ("GET", "HEAD", "PUT", "PATCH", "POST", "DELETE", "OPTIONS", "TRACE", "CONNECT")


@dataclass(frozen=True, slots=True)
class CorsConfig:
    origins: tuple[str, ...]
    headers: tuple[str, ...]
    exposed_headers: tuple[str, ...]
    methods: tuple[str, ...]
    max_age: float | None
    credentials: bool
    private_network: bool
    preflight_continue: bool
    allow_origin_absent: bool


def _valid_origins(reader: Reader, values: dict[str, Any]) -> None:
    """Kong's validate_asterisk_or_regex on each origin; a bad one is left out."""
    kept = []
    for index, origin in enumerate(values["origins"]):
        try:
            compile_origin(origin)
        except OriginError:
            reader.problems.append(
                (join(reader.key_path("origins"), index), f"'{origin}' is not a valid regex")
            )
            continue
        kept.append(origin)
    values["origins"] = tuple(kept)


def _config(reader: Reader, values: dict[str, Any]) -> CorsConfig:
    return CorsConfig(**values)


CORS: Schema[CorsConfig] = Schema(
    {
        "origins": Checked(Strings(), _valid_origins),
        "headers": Strings(),
        "exposed_headers": Strings(),
        "methods": Strings(METHODS, one_of=METHODS),
        "max_age": Number(),
        "credentials": Boolean(False),
        "private_network": Boolean(False),
        "preflight_continue": Boolean(False),
        "allow_origin_absent": Boolean(True),
    },
    build=_config,
)
