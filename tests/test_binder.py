"""binder/: CPU-only torch at the project's pinned versions, the package installed by an
executable postBuild, and nothing that pins JupyterLab or ipywidgets below 4 / 8."""

import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _requirements(path: Path) -> dict[str, str]:
    reqs = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            name, spec = re.match(r"([A-Za-z0-9_.\-]+)\s*(.*)", line).groups()
            reqs[name.lower()] = spec
    return reqs


def test_binder_torch_is_cpu_only_and_pinned_like_the_project():
    text = (ROOT / "binder" / "requirements.txt").read_text()
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in text
    binder, project = _requirements(ROOT / "binder" / "requirements.txt"), _requirements(ROOT / "requirements.txt")
    for name in ("torch", "torchvision"):
        assert binder[name] == project[name]


def test_binder_installs_what_the_notebooks_import_and_no_old_jupyter():
    binder = _requirements(ROOT / "binder" / "requirements.txt")
    for name in ("numpy", "scikit-learn", "tqdm", "matplotlib", "umap-learn", "ipywidgets"):
        assert name in binder
    assert not binder["ipywidgets"].startswith(("==7", "<8", "~=7"))
    assert "jupyterlab" not in binder and "notebook" not in binder  # the base image's JupyterLab 4 stays


def test_post_build_installs_the_package_and_warms_umap():
    post_build = ROOT / "binder" / "postBuild"
    assert os.access(post_build, os.X_OK)
    text = post_build.read_text()
    assert text.startswith("#!/bin/bash") and "pip install --no-deps -e ." in text
    assert "import umap" in text and "export_digits" in text
