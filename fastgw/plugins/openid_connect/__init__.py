"""`openid-connect`: Kong's OAuth 2.0 client credentials grant at the edge, and its embedding API.

The gateway uses `SPEC`; other asyncio services use `ClientCredentialsAuthenticator` directly.
"""

from __future__ import annotations

from fastgw.plugins import Entities, PluginRuntime
from fastgw.schema import Reader

from .authenticator import ClientCredentialsAuthenticator
from .cache import Token
from .credentials import ClientCredentials, CredentialError, parse_basic
from .errors import (
    AuthError,
    IdpTimeout,
    IdpTokenRejected,
    IdpUnavailable,
    InsufficientScope,
    InvalidCredentials,
)
from .plugin import OpenIdConnect
from .schema import OidcConfig, parse

__all__ = [
    "SPEC",
    "AuthError",
    "ClientCredentials",
    "ClientCredentialsAuthenticator",
    "CredentialError",
    "IdpTimeout",
    "IdpTokenRejected",
    "IdpUnavailable",
    "InsufficientScope",
    "InvalidCredentials",
    "OidcConfig",
    "OpenIdConnect",
    "Token",
    "parse_basic",
]


class _Spec:
    name = "openid-connect"

    def parse_config(self, reader: Reader) -> OidcConfig:
        return parse(reader)

    def link(
        self,
        config: OidcConfig,
        entities: Entities,
        path: str,
        problems: list[tuple[str, str]],
    ) -> OidcConfig:
        return config

    async def probe(self, config: OidcConfig, runtime: PluginRuntime) -> list[str]:
        return []

    def build(self, config: OidcConfig, runtime: PluginRuntime) -> OpenIdConnect:
        # the runtime owns the client it hands out (it may share it): the plugin never closes it
        http_client = runtime.http_client(config.ssl_verify, config.keepalive)
        authenticator = ClientCredentialsAuthenticator(config, http_client, spawn=runtime.spawn)
        return OpenIdConnect(config, authenticator)


SPEC = _Spec()
