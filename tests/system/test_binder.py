"""binder/: CPU-only torch at the project's pinned versions, the package installed by an
executable postBuild, and nothing that pins JupyterLab or ipywidgets below 4 / 8; and a
Binder-like environment (tools/binder_check.py) running a notebook within 1 CPU and 2 GiB."""

import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat

from tool_scripts import load_tool

ROOT = Path(__file__).resolve().parents[2]
binder_check = load_tool("binder_check")


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


def test_post_build_prepares_cifar100_through_a_script_that_cannot_fail_the_build():
    assert "binder/photos" in (ROOT / "binder" / "postBuild").read_text()
    photos = ROOT / "binder" / "photos"
    assert os.access(photos, os.X_OK)
    text = photos.read_text()
    assert "prepare cifar100 --download" in text and text.rstrip().endswith("exit 0")
    assert "set -e" not in text.replace("set -euo", "")  # a failed step must not end the build


def test_offline_build_falls_back_to_the_digits_and_the_notebooks_say_why(tmp_path, monkeypatch):
    # sitecustomize runs in every Python the script starts: nothing can download here even
    # where the test machine is online.
    (tmp_path / "offline").mkdir()
    (tmp_path / "offline" / "sitecustomize.py").write_text(
        "import socket\n"
        "def refuse(*args, **kwargs):\n"
        "    raise OSError(101, 'Network is unreachable (blocked in tests)')\n"
        "socket.socket.connect = refuse\nsocket.getaddrinfo = refuse\n")
    env = {**os.environ, "HOME": str(tmp_path), "NNGK_DATA": str(tmp_path / "data"), "NNGK_BINDER_PRECOMPUTE": "0",
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),
           "PYTHONPATH": os.pathsep.join([str(tmp_path / "offline"), str(ROOT)])}
    done = subprocess.run(["binder/photos"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    reason = (tmp_path / "data" / "cifar100.unavailable").read_text()
    assert reason.startswith("the Binder build could not prepare CIFAR-100 (cannot download CIFAR-100")
    assert not (tmp_path / "data" / "cifar100").exists()

    started = subprocess.run(["binder/start", "env"], cwd=ROOT, env={**env, "NNGK_DATASET": ""},
                             capture_output=True, text=True, timeout=60)
    assert "NNGK_DATASET=cifar100" in started.stdout.splitlines()
    from nngk_lab.explore import notebook as nb

    monkeypatch.setenv("NNGK_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("NNGK_DATASET", "cifar100")
    choice = nb.chosen_dataset()
    assert choice.name == "digits" and choice.data_dir is None
    assert choice.note.startswith("NNGK_DATASET=cifar100, but the Binder build could not prepare CIFAR-100")
    assert nb.settings(fast=True).main_run.name == "digits-fast"


def test_the_limits_pin_one_cpu_and_stop_a_process_that_takes_more_memory(tmp_path):
    report = tmp_path / "report"
    script = ("import os, sys, time\n"
              f"open({str(report)!r}, 'w').write(str(sorted(os.sched_getaffinity(0))))\n"
              "held = bytearray(600 * 2**20)\n"  # past the 256 MiB cap: refused (RLIMIT_DATA) or stopped
              "time.sleep(2)\n")
    measured = binder_check.run_limited([sys.executable, "-c", script], dict(os.environ), cpu=0,
                                        memory=256 * 2**20, name="allocates 600 MiB")
    assert report.read_text() == "[0]"
    assert measured.returncode != 0
    assert measured.tree_peak_mib < 256 + 64  # the allocation never became resident
    fine = binder_check.run_limited([sys.executable, "-c", "held = bytearray(64 * 2**20)"], dict(os.environ),
                                    cpu=0, memory=512 * 2**20, name="allocates 64 MiB")
    assert fine.returncode == 0 and not fine.over_memory


def test_a_binder_like_environment_runs_a_notebook_within_one_cpu_and_2_gib(tmp_path, capsys):
    """Steps of repo2docker done offline (tools/binder_check.py says what differs): a fresh
    venv, binder/requirements.txt, binder/postBuild; then notebook 1, in full mode as a
    visitor runs it, through binder/start, on one CPU and under 2 GiB. All seven take too
    long for CI: `python tools/binder_check.py` runs them (docs/notebooks.md has the numbers)."""
    lines = []
    [measured] = binder_check.check([ROOT / "notebooks" / "01_data_loading.ipynb"], fast=False, work=tmp_path,
                                    log=lines.append)
    with capsys.disabled():
        print("\n" + "\n".join(lines))
    assert measured.returncode == 0 and not measured.over_memory, "\n".join(lines)
    assert 0 < measured.tree_peak_mib < 2048
    site_packages = next((tmp_path / "venv" / "lib").glob("python*/site-packages"))
    assert list(site_packages.glob("__editable__*nngk_lab*")), "postBuild did not install the package into the venv"
    executed = nbformat.read(tmp_path / "executed" / "01_data_loading.ipynb", as_version=4)
    text = "".join(o.get("text", "") for cell in executed.cells for o in cell.get("outputs", []))
    assert "NNGK_DATASET=cifar100, but the Binder build could not prepare CIFAR-100" in text  # offline: the digits
    assert "full mode" in text
