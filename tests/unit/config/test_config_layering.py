"""Config is data: it imports nothing of the layers above it (the wire, the balancer, the proxy,
the processes), except the plugin registry, where each plugin's config schema is declared."""

from __future__ import annotations

import ast
from pathlib import Path

import fastgw.config

CONFIG = Path(fastgw.config.__file__).parent
# the one import upward, and the one module that makes it
REGISTRY = "fastgw.plugins"
REGISTRY_USER = "entities/plugins.py"


def fastgw_imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fastgw"):
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names if alias.name.startswith("fastgw"))
    return names


def test_config_imports_only_itself_the_errors_and_the_plugin_registry() -> None:
    outside: dict[str, set[str]] = {}
    for path in sorted(CONFIG.rglob("*.py")):
        where = path.relative_to(CONFIG).as_posix()
        allowed = {REGISTRY} if where == REGISTRY_USER else set()
        others = {
            name
            for name in fastgw_imports(path)
            if not name.startswith("fastgw.config") and name != "fastgw.errors"
        }
        if others - allowed:
            outside[where] = others - allowed
    assert outside == {}
    assert fastgw_imports(CONFIG / REGISTRY_USER) >= {REGISTRY}
