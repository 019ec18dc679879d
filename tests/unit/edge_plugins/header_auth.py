"""A small real authentication plugin for the tests (`header-auth`): `X-Key: <username>`
authenticates that consumer, `X-Token: <id>` a credential with no consumer, anything else is
answered 401. Registered in the plugin registry by the tests that need it."""

from __future__ import annotations

from typing import Any

from fastgw.config.schema import Reader
from fastgw.plugins.api import Authenticated, Credential, Plugin, RequestContext
from fastgw.plugins.building import PluginRuntime, SpecBase

NAME = "header-auth"


class HeaderAuth(Plugin):
    name = NAME
    priority = 1250  # key-auth's

    def __init__(self, runtime: PluginRuntime) -> None:
        self.consumers = runtime.consumers

    def access(self, ctx: RequestContext) -> None:
        key = ctx.get_header(b"x-key")
        token = ctx.get_header(b"x-token")
        consumer = self.consumers.find(key.decode(), "username") if key else None
        if consumer is not None:
            ctx.principal = Authenticated(consumer, Credential("keyauth_credentials", "k1"))
        elif token is not None:
            ctx.principal = Authenticated(None, Credential("openid-connect", token.decode()))
        else:
            ctx.respond(401, b'{"message":"No API key found in request"}')


class _Spec(SpecBase):
    name = NAME

    def parse_config(self, reader: Reader) -> dict[str, Any]:
        reader.finish()
        return {}

    def build(self, config: dict[str, Any], runtime: PluginRuntime) -> HeaderAuth:
        return HeaderAuth(runtime)


SPEC = _Spec()
