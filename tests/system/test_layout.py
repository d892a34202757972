"""The package's shape (issue 23): layers that only look down, no circle (imports inside
functions counted), no private name imported across modules, no module over 400 lines,
no public name that hides a submodule, and notebooks that import only what they should."""

import ast
import importlib
import json
import pkgutil
from pathlib import Path

import pytest

import nngk_lab
from tool_scripts import load_tool

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "nngk_lab"
graph_tool = load_tool("import_graph")


@pytest.fixture(scope="module")
def graph():
    return graph_tool.edges(PACKAGE)


def test_the_graph_sees_function_level_imports(tmp_path):
    """The checker itself: an import inside a function is an arrow, and a circle through
    one is found (a checker that missed them would pass any package)."""
    pkg = tmp_path / "nngk_lab"
    (pkg / "kernel").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "kernel" / "__init__.py").write_text("")
    (pkg / "errors.py").write_text("def f():\n    from .kernel import loss\n")
    (pkg / "kernel" / "loss.py").write_text("from .. import errors\nfrom ..errors import _private\n")
    g = graph_tool.edges(pkg)
    assert g["nngk_lab.errors"] == {"nngk_lab.kernel.loss"}
    assert graph_tool.circles(g) == [["nngk_lab.errors", "nngk_lab.kernel.loss", "nngk_lab.errors"]]
    assert graph_tool.upward(g) == [("nngk_lab.errors", "nngk_lab.kernel.loss")]
    assert graph_tool.private_imports(pkg) == [("nngk_lab.kernel.loss", "nngk_lab.errors._private")]


def test_no_circle_and_every_arrow_points_down(graph):
    assert graph_tool.circles(graph) == []
    assert graph_tool.upward(graph) == []
    # 17: kernel.nngk_loss (the method as one module, over the bank) sits between training and the bank.
    assert graph_tool.floors(graph) <= 17


def test_every_module_has_a_layer(graph):
    assert [m for m in graph if graph_tool.layer(m) == len(graph_tool.LAYERS) and m != "nngk_lab"] == []


def test_no_private_names_across_modules_and_no_long_module():
    assert graph_tool.private_imports(PACKAGE) == []
    assert graph_tool.long_modules(PACKAGE) == []


def test_no_public_name_hides_a_submodule():
    """``from nngk_lab.data import X`` must mean one thing: a function named like its
    package's submodule would replace the module as the package's attribute."""
    for info in pkgutil.walk_packages([str(PACKAGE)], "nngk_lab."):
        if info.ispkg:
            package = importlib.import_module(info.name)
            for sub in pkgutil.iter_modules(package.__path__):
                assert getattr(package, sub.name, None) is None or \
                    getattr(package, sub.name).__name__ == f"{info.name}.{sub.name}", (info.name, sub.name)


def test_the_library_never_imports_a_command_line(graph):
    commands = {f"nngk_lab.{name}" for name in graph_tool.LAYERS[-1]}
    assert commands <= set(graph)
    assert [(m, n) for m, targets in graph.items() for n in targets & commands if m not in commands] == []


def test_notebooks_import_only_explore_viz_widgets_and_data():
    allowed = {"nngk_lab", "nngk_lab.explore", "nngk_lab.viz", "nngk_lab.widgets", "nngk_lab.data"}
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for cell in json.loads(path.read_text())["cells"]:
            if cell["cell_type"] != "code":
                continue
            source = "\n".join(line for line in "".join(cell["source"]).splitlines() if not line.startswith("%"))
            for node in ast.walk(ast.parse(source)):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("nngk_lab"):
                    assert node.module in allowed, (path.name, node.module)
                    if node.module == "nngk_lab":
                        assert {a.name for a in node.names} <= {"data", "explore", "viz", "widgets"}, path.name
                elif isinstance(node, ast.Import):
                    assert not any(a.name.startswith("nngk_lab") for a in node.names), path.name


def test_the_top_level_names_a_users_own_loop_needs():
    assert nngk_lab.__version__
    for name in nngk_lab.__all__:
        assert getattr(nngk_lab, name) is not None
