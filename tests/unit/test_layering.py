"""The layers of docs/ARCHITECTURE.md, checked on the imports themselves: each layer imports only
the layers below it, the wire nothing of fastgw outside itself but leaves, and no module
imports another in a circle.

An import under `if TYPE_CHECKING:` counts too: it is an arrow a reader follows.
"""

from __future__ import annotations

import ast
from pathlib import Path

import fastgw

PACKAGE = Path(fastgw.__file__).parent

# lowest first; a module may import its own layer and any layer before it in this list
LAYERS = (
    ("observability", ("fastgw.observability",)),
    ("config", ("fastgw.config",)),
    ("wire", ("fastgw.http",)),
    ("balancer", ("fastgw.balancer",)),
    ("plugins", ("fastgw.plugins",)),
    ("proxy", ("fastgw.proxy",)),
    ("process", ("fastgw.process",)),
    ("entry", ("fastgw.cli", "fastgw.gateway", "fastgw.admin", "fastgw.__main__")),
)
# modules anyone may import: they import nothing of fastgw but each other
LEAVES = ("fastgw", "fastgw.errors", "fastgw.build_info")
# the wire imports these leaves and nothing else outside fastgw.http
WIRE_LEAVES = (*LEAVES, "fastgw.observability.ratelog")
# the one arrow up (docs/ARCHITECTURE.md "Layers"): a plugin's config is read with its schema
UPWARD = {("fastgw.config.entities.plugins", "fastgw.plugins")}
# the one circle kept, for type checking only: a connection's reader is the connection's own part
# and its httptools callbacks call the connection directly (a trait the reader declared would cost
# ~211 instructions a request on the compiled build: docs/ARCHITECTURE.md "Layers")
KNOWN_CIRCLES = {"fastgw.http.server -> fastgw.http.request_reader -> fastgw.http.server"}
# which build runs is told by where the wire's server module was loaded from
PROBE = ("fastgw.build_info", "fastgw.http.server")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "fastgw":
                for alias in node.names:
                    sub = PACKAGE / alias.name
                    is_module = sub.is_dir() or sub.with_suffix(".py").is_file()
                    names.add(f"fastgw.{alias.name}" if is_module else "fastgw")
            elif node.module.startswith("fastgw."):
                names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names if alias.name.startswith("fastgw"))
    return names


def layer_of(name: str) -> int | None:
    if name in LEAVES:
        return None
    for rank, (_, prefixes) in enumerate(LAYERS):
        if any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes):
            return rank
    raise AssertionError(f"{name} is in no layer: add it to LAYERS or LEAVES")


def graph() -> dict[str, set[str]]:
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {
        name: imports(path) & set(modules) | (imports(path) - set(modules))
        for name, path in modules.items()
    }


def test_every_layer_imports_only_the_layers_below_it() -> None:
    upward = set()
    for module, targets in graph().items():
        own = layer_of(module)
        for target in targets:
            theirs = layer_of(target)
            if own is None:
                assert target in LEAVES or (module, target) == PROBE, (module, target)
            elif theirs is not None and theirs > own:
                upward.add((module, target))
    assert upward == UPWARD


def test_the_wire_imports_nothing_of_fastgw_outside_itself_but_leaves() -> None:
    outside = {
        (module, target)
        for module, targets in graph().items()
        if module.startswith("fastgw.http")
        for target in targets
        if not target.startswith("fastgw.http") and target not in WIRE_LEAVES
    }
    assert outside == set()


def circles_of(edges: dict[str, set[str]]) -> list[str]:
    """Every circle a depth-first walk of the import graph meets, as "a -> b -> a"."""
    state: dict[str, int] = {}  # 1: on the path being walked, 2: done
    circles: list[str] = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(edges.get(module, ())):
            if target not in edges or target == module:
                continue
            if state.get(target) == 1:
                circles.append(" -> ".join([*path[path.index(target) :], target]))
            elif target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    return circles


def test_no_circle_between_modules() -> None:
    assert set(circles_of(graph())) <= KNOWN_CIRCLES


def test_the_package_root_holds_at_most_six_modules() -> None:
    root = sorted(
        path.name
        for path in PACKAGE.glob("*.py")
        if path.name not in ("__init__.py", "__main__.py")
    )
    assert len(root) <= 6, root


# docs/ARCHITECTURE.md "Style": a class a reader can hold, a function that fits a screen or two
MAX_CLASS_LINES = 450
MAX_FUNCTION_LINES = 80


def oversized(package: Path) -> list[str]:
    """Classes and functions of the package longer than the limits, as "path:name lines"."""
    found: list[str] = []
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                limit = MAX_CLASS_LINES
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                limit = MAX_FUNCTION_LINES
            else:
                continue
            lines = (node.end_lineno or node.lineno) - node.lineno + 1
            if lines > limit:
                found.append(f"{path.relative_to(package.parent)}:{node.name} {lines}")
    return found


def test_no_class_or_function_outgrows_its_limit() -> None:
    assert oversized(PACKAGE) == []


def summary(package: Path = PACKAGE) -> dict[str, object]:
    """Modules, internal imports, circles and root modules of a checkout's fastgw package."""
    global PACKAGE
    saved, PACKAGE = PACKAGE, package
    try:
        edges = graph()
        internal = {(module, target) for module, targets in edges.items() for target in targets}
        internal = {(a, b) for a, b in internal if b in edges and a != b}
        root = [
            p.name for p in package.glob("*.py") if p.name not in ("__init__.py", "__main__.py")
        ]
        return {
            "modules": len(edges),
            "imports": len(internal),
            "circles": circles_of(edges),
            "root modules": sorted(root),
            "oversized": oversized(package),
        }
    finally:
        PACKAGE = saved


if __name__ == "__main__":  # python -m tests.unit.test_layering [path/to/fastgw]
    import sys

    target = Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else PACKAGE
    for key, value in summary(target).items():
        print(f"{key}: {value}")
