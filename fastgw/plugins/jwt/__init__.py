"""`jwt`: Kong's JWT authentication against the config's `jwt_secrets`.

The declaration is schema.py, the access step handler.py; this module links a config to the
secrets and the `anonymous` consumer, and builds the plugin.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastgw.config.consumers import Consumer
from fastgw.config.credentials import JwtSecret
from fastgw.config.model import Entities
from fastgw.config.schema import Reader
from fastgw.plugins.auth_config import anonymous_consumer, missing_anonymous
from fastgw.plugins.building import PluginRuntime, SpecBase
from fastgw.plugins.identity import anonymous_identity

from .handler import Jwt
from .schema import JwtConfig, parse


@dataclass(frozen=True, slots=True)
class Linked:
    config: JwtConfig
    secrets: tuple[JwtSecret, ...]
    anonymous: Consumer | None


class _Spec(SpecBase):
    name = "jwt"
    no_consumer = True  # Kong's typedefs.no_consumer
    reusable = False  # holds the secrets: a reload builds it again (it keeps no state)

    def parse_config(self, reader: Reader) -> JwtConfig:
        return parse(reader)

    def link(
        self, config: JwtConfig, entities: Entities, path: str, problems: list[tuple[str, str]]
    ) -> Linked:
        anonymous = anonymous_consumer(config.anonymous, entities)
        return Linked(config, entities.credentials.jwt_secrets, anonymous)

    def build(self, linked: Linked, runtime: PluginRuntime) -> Jwt:
        config = linked.config
        return Jwt(
            linked.secrets,
            uri_param_names=config.uri_param_names,
            cookie_names=config.cookie_names,
            header_names=config.header_names,
            key_claim_name=config.key_claim_name,
            secret_is_base64=config.secret_is_base64,
            claims_to_verify=config.claims_to_verify,
            maximum_expiration=config.maximum_expiration,
            run_on_preflight=config.run_on_preflight,
            realm=config.realm,
            anonymous=anonymous_identity(linked.anonymous) if linked.anonymous else None,
            anonymous_missing=missing_anonymous(config.anonymous, linked.anonymous),
        )


SPEC = _Spec()
