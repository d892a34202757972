"""An installed wheel, not only the editable install, holds every subpackage and runs
``make train``'s command and a notebook, from a folder outside the checkout."""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[2]


def test_the_wheel_holds_the_package_and_runs_training_and_a_notebook(tmp_path, monkeypatch):
    # Built from a copy: setuptools leaves a build/ folder next to the sources it builds.
    source = tmp_path / "source"
    shutil.copytree(ROOT / "nngk_lab", source / "nngk_lab", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp_path / "dist"), str(source)], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    wheel = next((tmp_path / "dist").glob("nngk_lab-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    in_wheel = {name for name in names if name.endswith(".py")}
    in_tree = {str(p.relative_to(ROOT)) for p in (ROOT / "nngk_lab").rglob("*.py")}
    assert in_wheel == in_tree
    assert {"nngk_lab/data/fashion_small.npz", "nngk_lab/data/fashion_small.LICENSE"} <= set(names)  # package data

    site = tmp_path / "site"
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site),
                                str(wheel)], capture_output=True, text=True)
    assert installed.returncode == 0, installed.stderr
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "NNGK_DATA": str(tmp_path / "data"),
           "NNGK_RUNS": str(tmp_path / "runs"), "NNGK_FAST": "1", "OMP_NUM_THREADS": "1"}
    where = subprocess.run([sys.executable, "-c", "import nngk_lab.train; print(nngk_lab.train.__file__)"],
                           cwd=outside, env=env, capture_output=True, text=True)
    assert where.stdout.startswith(str(site)), where.stdout + where.stderr

    trained = subprocess.run([sys.executable, "-m", "nngk_lab.train", "--save_dir", str(tmp_path / "digits"),
                              "--max_epochs", "1", "--no_progress"], cwd=outside, env=env, capture_output=True,
                             text=True, timeout=300)
    assert trained.returncode == 0, trained.stderr
    assert "kernel_accuracy" in trained.stdout and (tmp_path / "digits" / "eval.json").is_file()
    photos = subprocess.run([sys.executable, "-m", "nngk_lab.datasets", "export-fashion", str(tmp_path / "fashion")],
                            cwd=outside, env=env, capture_output=True, text=True, check=False)
    assert photos.returncode == 0 and len(list((tmp_path / "fashion").rglob("*.png"))) == 1200, photos.stderr

    notebook = nbformat.read(ROOT / "notebooks" / "01_data_loading.ipynb", as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell(f"import nngk_lab\nassert nngk_lab.__file__.startswith({str(site)!r})"))
    for key in ("PYTHONPATH", "NNGK_DATA", "NNGK_RUNS", "NNGK_FAST"):
        monkeypatch.setenv(key, env[key])  # the kernel inherits them: nngk_lab comes from the wheel only
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(outside)}}).execute()
