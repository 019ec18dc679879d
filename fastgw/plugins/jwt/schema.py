"""jwt's config: Kong's keys, types and defaults (kong/plugins/jwt/schema.lua), with its check
that a `maximum_expiration` needs `exp` verified."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastgw.config.schema import Boolean, Number, Reader, Strings, Text, read_declared

REGISTERED_CLAIMS = ("exp", "nbf")  # what claims_to_verify may name (Kong's)
MAX_EXPIRATION = 31_536_000  # seconds (a year): Kong's bound of maximum_expiration


@dataclass(frozen=True, slots=True)
class JwtConfig:
    uri_param_names: Annotated[tuple[str, ...], Strings(("jwt",))]
    cookie_names: Annotated[tuple[str, ...], Strings()]
    key_claim_name: Annotated[str, Text("iss")]
    secret_is_base64: Annotated[bool, Boolean(False)]
    claims_to_verify: Annotated[tuple[str, ...], Strings(one_of=REGISTERED_CLAIMS)]
    anonymous: Annotated[str | None, Text()]
    run_on_preflight: Annotated[bool, Boolean(True)]
    maximum_expiration: Annotated[float, Number(0, minimum=0, maximum=MAX_EXPIRATION)]
    header_names: Annotated[tuple[str, ...], Strings(("authorization",))]
    realm: Annotated[str | None, Text()]


def parse(reader: Reader) -> JwtConfig:
    values = read_declared(reader, JwtConfig)
    # Kong's sets: a repeated name counts once
    for key in ("uri_param_names", "cookie_names", "claims_to_verify", "header_names"):
        values[key] = tuple(dict.fromkeys(values[key]))
    if values["maximum_expiration"] > 0 and "exp" not in values["claims_to_verify"]:
        reader.error("claims_to_verify", "expected to contain: exp (maximum_expiration is set)")
    reader.finish()
    return JwtConfig(**values)
