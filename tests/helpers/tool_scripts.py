"""Import a script from tools/ (not a package) as a module, for its tests."""

import importlib.util
from pathlib import Path


def load_tool(name: str):
    """The module ``tools/<name>.py``."""
    path = Path(__file__).resolve().parents[2] / "tools" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
