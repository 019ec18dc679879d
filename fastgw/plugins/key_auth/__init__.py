"""`key-auth`: Kong's API-key authentication against the config's `keyauth_credentials`.

The declaration is schema.py, the access step handler.py; this module links a config to the
credentials and the `anonymous` consumer, and builds the plugin.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastgw.config.consumers import Consumer
from fastgw.config.credentials import KeyAuthCredential
from fastgw.config.model import Entities
from fastgw.config.schema import Reader
from fastgw.plugins.auth_config import anonymous_consumer, missing_anonymous
from fastgw.plugins.building import PluginRuntime, SpecBase
from fastgw.plugins.identity import anonymous_identity

from .handler import KeyAuth, KeyTable
from .schema import KeyAuthConfig, parse


@dataclass(frozen=True, slots=True)
class Linked:
    """A config with what it names in other entities."""

    config: KeyAuthConfig
    credentials: tuple[KeyAuthCredential, ...]
    anonymous: Consumer | None


class _Spec(SpecBase):
    name = "key-auth"
    no_consumer = True  # Kong's typedefs.no_consumer
    reusable = False  # holds the credentials: a reload builds it again (it keeps no state)

    def parse_config(self, reader: Reader) -> KeyAuthConfig:
        return parse(reader)

    def link(
        self,
        config: KeyAuthConfig,
        entities: Entities,
        path: str,
        problems: list[tuple[str, str]],
    ) -> Linked:
        anonymous = anonymous_consumer(config.anonymous, entities)
        return Linked(config, entities.credentials.keyauth_credentials, anonymous)

    def build(self, linked: Linked, runtime: PluginRuntime) -> KeyAuth:
        config = linked.config
        return KeyAuth(
            config.key_names,
            KeyTable(linked.credentials),
            in_header=config.key_in_header,
            in_query=config.key_in_query,
            in_body=config.key_in_body,
            hide_credentials=config.hide_credentials,
            run_on_preflight=config.run_on_preflight,
            realm=config.realm,
            anonymous=anonymous_identity(linked.anonymous) if linked.anonymous else None,
            anonymous_missing=missing_anonymous(config.anonymous, linked.anonymous),
        )


SPEC = _Spec()
