"""The import graph of the nngk_lab package: every import, also those inside functions.

    python tools/import_graph.py [PACKAGE_DIR]

prints the number of floors (the longest chain of imports), every circle, every arrow that
points up the layers below, every import of another module's private name and every module
over 400 lines. tests/system/test_layout.py asserts that there are none.

Layers, lowest first: a module may import only from its own layer or lower ones. The
command lines (``python -m nngk_lab.X``) sit on top, and nothing imports them.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

LAYERS = [("errors",), ("device", "files", "progress"), ("data",), ("distributed",), ("kernel",), ("models",),
          ("training",), ("evaluation",), ("explore",), ("viz",), ("widgets",),
          ("train", "evaluate", "compare", "datasets", "weights_study")]
MAX_LINES = 400


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports(root: Path) -> dict[str, list[tuple[str, str]]]:
    """Each module of the package -> [(imported module, imported name or "")], counting
    every ``import`` statement in the file (inside functions too)."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        name = _module_name(path, root)
        found = []
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found += [(a.name, "") for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                target = _resolve(name, path.name == "__init__.py", node)
                found += [(target, a.name) for a in node.names]
        modules[name] = found
    return modules


def edges(root: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (``from . import x`` names module x)."""
    mods = imports(root)
    graph = {m: set() for m in mods}
    for m, found in mods.items():
        for target, name in found:
            if f"{target}.{name}" in mods:
                graph[m].add(f"{target}.{name}")
            elif target in mods and target != m:
                graph[m].add(target)
    return graph


def layer(module: str) -> int:
    parts = module.split(".")
    key = parts[1] if len(parts) > 1 else ""
    for i, names in enumerate(LAYERS):
        if key in names:
            return i
    return len(LAYERS)  # the package's own __init__: above everything but the command lines


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, state, stack = [], {}, []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                found.append(stack[stack.index(n):] + [n])
            elif n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    return found


def floors(graph: dict[str, set[str]]) -> int:
    """Modules on the longest chain of imports (the graph must have no circle)."""
    memo = {}

    def depth(m):
        if m not in memo:
            memo[m] = 1 + max((depth(n) for n in graph[m]), default=0)
        return memo[m]

    return max(depth(m) for m in graph)


def upward(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """Arrows from a module to one in a higher layer (a subpackage's own __init__ and the
    top package's are exempt from nothing: they too may only look down)."""
    top = len(LAYERS) - 1
    return [(m, n) for m, targets in graph.items() for n in targets
            if layer(n) > layer(m) or (layer(n) == top and m != n and layer(m) != top)]


def private_imports(root: Path) -> list[tuple[str, str]]:
    """``from X import _name`` across modules (a module's own privates stay inside it)."""
    return [(m, f"{target}.{name}") for m, found in imports(root).items() for target, name in found
            if name.startswith("_") and name != "__version__" and target.startswith(root.name)]


def long_modules(root: Path) -> list[tuple[str, int]]:
    return [(str(p.relative_to(root.parent)), n) for p in sorted(root.rglob("*.py"))
            if (n := len(p.read_text().splitlines())) > MAX_LINES]


def main(argv=None) -> int:
    root = Path((argv or sys.argv[1:] or [Path(__file__).resolve().parents[1] / "nngk_lab"])[0]).resolve()
    if not (root / "__init__.py").is_file():
        print(f"error: {root} is not a package folder (no __init__.py)", file=sys.stderr)
        return 2
    graph = edges(root)
    found = circles(graph)
    print(f"{len(graph)} modules, {sum(map(len, graph.values()))} arrows")
    print(f"floors: {floors(graph) if not found else 'undefined (circles)'}")
    for title, rows in (("circle", [" -> ".join(c) for c in found]),
                        ("upward", [f"{a} -> {b}" for a, b in upward(graph)]),
                        ("private", [f"{a} imports {b}" for a, b in private_imports(root)]),
                        ("long", [f"{p}: {n} lines" for p, n in long_modules(root)])):
        for row in rows:
            print(f"{title}: {row}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
