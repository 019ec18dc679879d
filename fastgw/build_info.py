"""Which build is running: the hot modules compiled with mypyc, or all pure Python.

Stdlib only: setup.py reads COMPILED_MODULES from here before anything is installed. With
FASTGW_PURE=1 in the environment, a compiled install runs the Python sources of those modules
instead (they ship beside the compiled ones), which is how the test suite runs both builds.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Sequence
from types import ModuleType

# The modules on every request's path (docs/ARCHITECTURE.md "The compiled build"); the rest
# stays Python.
COMPILED_MODULES = (
    "fastgw.http.server",
    "fastgw.http.client_states",
    "fastgw.http.upgrade",
    "fastgw.http.request_reader",
    "fastgw.http.request",
    "fastgw.http.exchange",
    "fastgw.http.hop",
    "fastgw.http.tunnel",
    "fastgw.http.upstream",
    "fastgw.http.vocabulary",
    "fastgw.http.flow",
    "fastgw.http.response_head",
    "fastgw.http.timers",
    "fastgw.http.responses",
    "fastgw.http.edits",
    "fastgw.http.tls_transport",
    "fastgw.proxy.dispatch",
    "fastgw.proxy.forwarding",
    "fastgw.plugins.api",
    "fastgw.proxy.chain",
    "fastgw.proxy.routing",
    "fastgw.observability.counters",
    "fastgw.balancer.retry",
    "fastgw.proxy.targets",
    "fastgw.balancer.balancer",
    "fastgw.balancer.ring",
    "fastgw.balancer.health",
    "fastgw.plugins.openid_connect.plugin",
    "fastgw.plugins.openid_connect.cache",
    "fastgw.plugins.openid_connect.stats",
    "fastgw.plugins.common.client_address",
    "fastgw.plugins.common.clock",
    "fastgw.plugins.common.networks",
    "fastgw.plugins.rate_limiting.handler",
    "fastgw.plugins.rate_limiting.counters",
    "fastgw.plugins.rate_limiting.windows",
    "fastgw.plugins.rate_limiting.stats",
    "fastgw.plugins.ip_restriction.handler",
    "fastgw.plugins.request_size_limiting.handler",
    "fastgw.plugins.correlation_id.handler",
    "fastgw.plugins.kong_log.record",
    "fastgw.plugins.kong_log.line",
    "fastgw.plugins.file_log.handler",
    "fastgw.plugins.http_log.handler",
    "fastgw.plugins.tcp_log.handler",
    "fastgw.plugins.identity",
    "fastgw.plugins.key_auth.handler",
    "fastgw.plugins.proxy_cache.handler",
    "fastgw.plugins.proxy_cache.key",
    "fastgw.plugins.proxy_cache.store",
)

PURE_ENV = "FASTGW_PURE"


class _SourceFirst(importlib.abc.MetaPathFinder):
    """Finds the `.py` file of a compiled module, so that the Python source is what runs."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in COMPILED_MODULES or path is None:
            return None
        name = fullname.rpartition(".")[2]
        for entry in path:
            source = os.path.join(entry, name + ".py")
            if os.path.isfile(source):
                return importlib.util.spec_from_file_location(fullname, source)
        return None


def prefer_sources() -> None:
    """Make the hot modules import from their Python sources (before any of them is imported)."""
    if not any(isinstance(finder, _SourceFirst) for finder in sys.meta_path):
        sys.meta_path.insert(0, _SourceFirst())


def build() -> str:
    """`compiled with mypyc` when the hot modules run compiled, else "pure Python"."""
    import fastgw.http.server as probe

    origin = probe.__file__ or ""
    compiled = origin.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))
    return "compiled with mypyc" if compiled else "pure Python"


if os.environ.get(PURE_ENV) == "1":
    prefer_sources()
