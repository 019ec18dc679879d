"""Which build is running: the hot modules compiled with mypyc, or all pure Python.

Stdlib only: setup.py reads COMPILED_MODULES from here before anything is installed.
"""

from __future__ import annotations

# The modules on every request's path (DESIGN.md "Compiled hot path"); the rest stays Python.
COMPILED_MODULES = (
    "fastgw.http.server",
    "fastgw.http.exchange",
    "fastgw.http.upstream",
    "fastgw.http.vocabulary",
    "fastgw.http.flow",
    "fastgw.http.response_head",
    "fastgw.http.timers",
    "fastgw.http.responses",
    "fastgw.dispatch",
    "fastgw.pipeline",
    "fastgw.routing",
    "fastgw.balancer.retry",
    "fastgw.balancer.target",
    "fastgw.plugins.openid_connect.plugin",
)
