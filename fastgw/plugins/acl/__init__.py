"""`acl`: Kong's access control by group, over the config's `acls` and the groups
openid-connect authenticates (`authenticated_groups_claim`).

The declaration is schema.py, the access step handler.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastgw.config.credentials import AclGroup
from fastgw.config.model import Entities
from fastgw.config.schema import Reader
from fastgw.plugins.building import PluginRuntime, SpecBase

from .handler import Acl
from .schema import AclConfig, parse


@dataclass(frozen=True, slots=True)
class Linked:
    config: AclConfig
    acls: tuple[AclGroup, ...]


class _Spec(SpecBase):
    name = "acl"
    no_consumer = True  # Kong's typedefs.no_consumer
    reusable = False  # holds the groups: a reload builds it again (it keeps no state)

    def parse_config(self, reader: Reader) -> AclConfig:
        return parse(reader)

    def link(
        self, config: AclConfig, entities: Entities, path: str, problems: list[tuple[str, str]]
    ) -> Linked:
        return Linked(config, entities.credentials.acls)

    def build(self, linked: Linked, runtime: PluginRuntime) -> Acl:
        config = linked.config
        return Acl(
            config.allow,
            config.deny,
            linked.acls,
            hide_groups_header=config.hide_groups_header,
            always_use_authenticated_groups=config.always_use_authenticated_groups,
        )


SPEC = _Spec()
