"""`openid-connect`: Kong's OAuth 2.0 client credentials grant at the edge, and its embedding API.

The gateway uses `SPEC`; other asyncio services use `ClientCredentialsAuthenticator` directly.
"""

from __future__ import annotations

import asyncio
import dataclasses

from fastgw.config.schema import Reader
from fastgw.plugins.building import Entities, PluginRuntime

from .authenticator import ClientCredentialsAuthenticator, discovery_for
from .cache import Token
from .credentials import ClientCredentials, CredentialError, parse_basic
from .discovery import IssuerMismatch
from .errors import (
    AuthError,
    IdpBusy,
    IdpTimeout,
    IdpTokenRejected,
    IdpUnavailable,
    InsufficientScope,
    InvalidCredentials,
    TooManyWaiting,
)
from .plugin import OpenIdConnect, OpenIdConnectSkippingPreflight
from .schema import OidcConfig, parse

# `fastgw check` waits at most this long for an IdP (the plugin's own timeout may be longer)
PROBE_TIMEOUT_SECONDS = 5.0

__all__ = [
    "SPEC",
    "AuthError",
    "ClientCredentials",
    "ClientCredentialsAuthenticator",
    "CredentialError",
    "IdpBusy",
    "IdpTimeout",
    "IdpTokenRejected",
    "IdpUnavailable",
    "InsufficientScope",
    "InvalidCredentials",
    "OidcConfig",
    "OpenIdConnect",
    "Token",
    "TooManyWaiting",
    "parse_basic",
]


class _Spec:
    name = "openid-connect"
    no_consumer = True  # Kong's typedefs.no_consumer

    def parse_config(self, reader: Reader) -> OidcConfig:
        return parse(reader)

    def link(
        self,
        config: OidcConfig,
        entities: Entities,
        path: str,
        problems: list[tuple[str, str]],
    ) -> OidcConfig:
        if config.anonymous is None:
            return config
        consumer = entities.consumers.reference(config.anonymous)
        if consumer is None:
            problems.append(
                (
                    f"{path}.config.anonymous",
                    f'no consumer has the id or username "{config.anonymous}"',
                )
            )
            return config
        return dataclasses.replace(config, anonymous_consumer=consumer)

    async def probe(self, config: OidcConfig, runtime: PluginRuntime) -> list[tuple[str, str, str]]:
        """The discovery document, when the IdP answers: its issuer must be one this config
        accepts (else every request would fail); an unreachable IdP is only a note."""
        http = runtime.http_client(config.ssl_verify, config.keepalive)
        discovery = discovery_for(config, http)
        try:
            async with asyncio.timeout(min(config.timeout_seconds, PROBE_TIMEOUT_SECONDS)):
                await discovery.refresh()
        except IssuerMismatch as mismatch:
            return [("issuer", "error", mismatch.reason)]
        except AuthError as error:
            return [("issuer", "note", f"not checked: {error.reason}")]
        except TimeoutError:
            return [("issuer", "note", f"not checked: {config.discovery_url} did not answer")]
        finally:
            await discovery.close()
        return []

    def build(self, config: OidcConfig, runtime: PluginRuntime) -> OpenIdConnect:
        # the runtime owns the client it hands out (it may share it): the plugin never closes it
        http_client = runtime.http_client(config.ssl_verify, config.keepalive)
        authenticator = ClientCredentialsAuthenticator(
            config, http_client, spawn=runtime.spawn, consumers=runtime.consumers
        )
        bearer = None
        if config.bearer_enabled or config.introspection_enabled:
            # imported on first use: a client-credentials-only config does not load it
            from .resource_server import BearerAuthenticator

            bearer = BearerAuthenticator(
                config,
                http_client,
                authenticator.discovery,
                authenticator.identity,
                authenticator.token_prefix,
                keys=authenticator.cache.keys,
                admission=authenticator.admission,
                clock=authenticator.clock,
            )
        plugin = OpenIdConnect if config.run_on_preflight else OpenIdConnectSkippingPreflight
        return plugin(config, authenticator, bearer)


SPEC = _Spec()
