"""basic-auth's config: Kong's keys, types and defaults (kong/plugins/basic-auth/schema.lua).

Kong Enterprise's `brute_force_protection` and Konnect's `principals` are accepted empty or null,
as a decK dump writes them, and refused otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastgw.config.schema import EMPTY, Boolean, Reader, Text, Unsupported, read_declared

DEFAULT_REALM = "service"  # Kong's (3.6+)
_ENTERPRISE = "not supported (Kong Enterprise)"
_KONNECT = "not supported (Kong Konnect's centrally managed consumers)"


@dataclass(frozen=True, slots=True)
class BasicAuthConfig:
    anonymous: Annotated[str | None, Text()]
    hide_credentials: Annotated[bool, Boolean(False)]
    realm: Annotated[str, Text(DEFAULT_REALM)]
    brute_force_protection: Annotated[None, Unsupported(_ENTERPRISE, accepts=EMPTY)] = None
    principals: Annotated[None, Unsupported(_KONNECT, accepts=EMPTY)] = None


def parse(reader: Reader) -> BasicAuthConfig:
    config = BasicAuthConfig(**read_declared(reader, BasicAuthConfig))
    reader.finish()
    return config
