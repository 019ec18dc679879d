"""key-auth's config: Kong's keys, types and defaults (kong/plugins/key-auth/schema.lua).

Kong Enterprise's and Konnect's `identity_realms` and `principals` (consumers kept in Konnect)
are accepted empty or null, as a decK dump writes them, and refused otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastgw.config.schema import EMPTY, Boolean, Reader, Text, Unsupported, read_declared
from fastgw.plugins.auth_config import HeaderNames

DEFAULT_KEY_NAMES = ("apikey",)  # Kong's
_KONNECT = "not supported (Kong Konnect's centrally managed consumers)"


@dataclass(frozen=True, slots=True)
class KeyAuthConfig:
    key_names: Annotated[tuple[str, ...], HeaderNames(DEFAULT_KEY_NAMES)]
    hide_credentials: Annotated[bool, Boolean(False)]
    anonymous: Annotated[str | None, Text()]
    key_in_header: Annotated[bool, Boolean(True)]
    key_in_query: Annotated[bool, Boolean(True)]
    key_in_body: Annotated[bool, Boolean(False)]
    run_on_preflight: Annotated[bool, Boolean(True)]
    realm: Annotated[str | None, Text()]
    identity_realms: Annotated[None, Unsupported(_KONNECT, accepts=EMPTY)] = None
    principals: Annotated[None, Unsupported(_KONNECT, accepts=EMPTY)] = None


def parse(reader: Reader) -> KeyAuthConfig:
    config = KeyAuthConfig(**read_declared(reader, KeyAuthConfig))
    reader.finish()
    return config
