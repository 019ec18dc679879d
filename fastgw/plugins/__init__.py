"""The plugin registry: plugin names and the module of each.

A plugin package exposes a `SPEC` object satisfying `fastgw.plugins.building.PluginSpec`; the
registry imports it lazily so a config that does not use a plugin does not pay for importing it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastgw.plugins.building import PluginSpec

# name -> module holding `SPEC`
_MODULES: dict[str, str] = {
    "acl": "fastgw.plugins.acl",
    "basic-auth": "fastgw.plugins.basic_auth",
    "correlation-id": "fastgw.plugins.correlation_id",
    "cors": "fastgw.plugins.cors",
    "file-log": "fastgw.plugins.file_log",
    "http-log": "fastgw.plugins.http_log",
    "ip-restriction": "fastgw.plugins.ip_restriction",
    "jwt": "fastgw.plugins.jwt",
    "key-auth": "fastgw.plugins.key_auth",
    "openid-connect": "fastgw.plugins.openid_connect",
    "prometheus": "fastgw.plugins.prometheus",
    "proxy-cache": "fastgw.plugins.proxy_cache",
    "rate-limiting": "fastgw.plugins.rate_limiting",
    "request-size-limiting": "fastgw.plugins.request_size_limiting",
    "request-termination": "fastgw.plugins.request_termination",
    "request-transformer": "fastgw.plugins.request_transformer",
    "tcp-log": "fastgw.plugins.tcp_log",
}


def names() -> tuple[str, ...]:
    return tuple(sorted(_MODULES))


def spec(name: str) -> PluginSpec | None:
    module = _MODULES.get(name)
    if module is None:
        return None
    return importlib.import_module(module).SPEC  # type: ignore[no-any-return]
