"""`ip-restriction`: Kong's plugin of that name: `allow` and `deny` lists of IPs and CIDR blocks
(v4 and v6) against the client address as Kong computes it; a rejection is Kong's 403
`IP address not allowed: <address>` unless `status` / `message` say otherwise.

The config is `schema.py`, the step `handler.py`.
"""

from __future__ import annotations

from fastgw.config.schema import Reader, read_schema
from fastgw.plugins.building import PluginRuntime, SpecBase

from .handler import PRIORITY, IpRestriction
from .schema import IP_RESTRICTION, IpRestrictionConfig

__all__ = ["PRIORITY", "SPEC", "IpRestriction", "IpRestrictionConfig"]


class _Spec(SpecBase):
    name = "ip-restriction"

    def parse_config(self, reader: Reader) -> IpRestrictionConfig:
        return read_schema(reader, IP_RESTRICTION)

    def build(self, config: IpRestrictionConfig, runtime: PluginRuntime) -> IpRestriction:
        return IpRestriction(config, runtime.client_address)


SPEC = _Spec()
