"""`basic-auth`: Kong's HTTP Basic authentication against the config's `basicauth_credentials`.

The declaration is schema.py, the access step handler.py; this module links a config to the
credentials and the `anonymous` consumer, and builds the plugin.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastgw.config.consumers import Consumer
from fastgw.config.credentials import BasicAuthCredential
from fastgw.config.model import Entities
from fastgw.config.schema import Reader
from fastgw.plugins.auth_config import anonymous_consumer, missing_anonymous
from fastgw.plugins.building import PluginRuntime, SpecBase
from fastgw.plugins.identity import anonymous_identity

from .handler import BasicAuth, Users
from .schema import BasicAuthConfig, parse


@dataclass(frozen=True, slots=True)
class Linked:
    config: BasicAuthConfig
    credentials: tuple[BasicAuthCredential, ...]
    anonymous: Consumer | None


class _Spec(SpecBase):
    name = "basic-auth"
    no_consumer = True  # Kong's typedefs.no_consumer
    reusable = False  # holds the credentials: a reload builds it again (it keeps no state)

    def parse_config(self, reader: Reader) -> BasicAuthConfig:
        return parse(reader)

    def link(
        self,
        config: BasicAuthConfig,
        entities: Entities,
        path: str,
        problems: list[tuple[str, str]],
    ) -> Linked:
        anonymous = anonymous_consumer(config.anonymous, entities)
        return Linked(config, entities.credentials.basicauth_credentials, anonymous)

    def build(self, linked: Linked, runtime: PluginRuntime) -> BasicAuth:
        config = linked.config
        return BasicAuth(
            Users(linked.credentials),
            hide_credentials=config.hide_credentials,
            realm=config.realm,
            anonymous=anonymous_identity(linked.anonymous) if linked.anonymous else None,
            anonymous_missing=missing_anonymous(config.anonymous, linked.anonymous),
        )


SPEC = _Spec()
