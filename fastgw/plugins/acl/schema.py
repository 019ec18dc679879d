"""acl's config: Kong's keys, types, defaults and checks (kong/plugins/acl/schema.lua).

Kong Enterprise's `include_consumer_groups` (consumer groups' names as ACL groups) is accepted
at its default, false, and refused otherwise: fastgw has no consumer groups.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastgw.config.schema import FALSY, Boolean, Reader, Strings, Unsupported, read_declared

_BOTH = "exactly one of these fields must be non-empty: 'config.allow', 'config.deny'"
_NEITHER = "at least one of these fields must be non-empty: 'config.allow', 'config.deny'"


@dataclass(frozen=True, slots=True)
class AclConfig:
    allow: Annotated[tuple[str, ...], Strings()]
    deny: Annotated[tuple[str, ...], Strings()]
    hide_groups_header: Annotated[bool, Boolean(False)]
    always_use_authenticated_groups: Annotated[bool, Boolean(False)]
    include_consumer_groups: Annotated[
        None, Unsupported("not supported (Kong Enterprise's consumer groups)", accepts=FALSY)
    ] = None


def parse(reader: Reader) -> AclConfig:
    values = read_declared(reader, AclConfig)
    if values["allow"] and values["deny"]:
        reader.error("", _BOTH)
    elif not values["allow"] and not values["deny"]:
        reader.error("", _NEITHER)
    reader.finish()
    return AclConfig(**values)
