"""The notebooks as a Binder user gets them: a fresh environment built from binder/ the way
repo2docker builds it, as far as can be done offline, then every notebook executed inside
Binder's limits (1 CPU, 2 GB), with its time and peak memory.

    python tools/binder_check.py                          # all seven, full mode (what a visitor runs)
    python tools/binder_check.py --notebooks 01_data_loading --fast

Steps, and what differs from repo2docker:

1. A fresh virtual environment (``python -m venv``). repo2docker starts from its base image,
   which already holds JupyterLab, ipykernel and nbconvert; here the project's own
   environment plays that part: a ``.pth`` file puts its site-packages behind the new
   environment's own. So nothing is downloaded, and torch is the build installed here
   (the CUDA one, larger in memory), not the CPU-only build binder/requirements.txt asks for.
2. ``pip install --no-index -r binder/requirements.txt``: every requirement must already be
   satisfied at the pinned versions (pip fails otherwise); it installs nothing new.
3. ``binder/postBuild``, run as it is, with the new environment first on PATH, HOME a fresh
   folder and the network blocked in every Python it starts (so binder/photos cannot
   download CIFAR-100: it takes its offline path, and the notebooks use the digits and say
   why). Its ``pip install -e .`` installs the checkout into the new environment, without
   build isolation (build isolation would download setuptools).
4. Each notebook runs through ``binder/start`` (``NNGK_DATASET=cifar100``, as on Binder) in
   ``jupyter nbconvert --execute``, pinned to one CPU (``sched_setaffinity``, as ``taskset -c``)
   and with each process's data segment capped at 2 GiB (``RLIMIT_DATA``: ``RLIMIT_AS`` cannot
   be used, as torch's CUDA build maps over 4 GiB of address space it never touches). Binder's
   own limit is on the container's memory: the resident memory of the whole process tree is
   sampled every 0.1 s and the run is stopped if it passes 2 GiB.

Prints one line per notebook (wall s, CPU s, peak resident MiB of the kernel and of the
tree) and a total; exits 1 if a notebook failed or passed a limit.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import site
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import psutil

ROOT = Path(__file__).resolve().parents[1]
GIB = 2**30
OFFLINE = ("import socket\n"
           "def refuse(*args, **kwargs):\n"
           "    raise OSError(101, 'Network is unreachable (blocked by tools/binder_check.py)')\n"
           "socket.socket.connect = refuse\nsocket.getaddrinfo = refuse\n")


class Measured(NamedTuple):
    notebook: str
    returncode: int
    wall_s: float
    cpu_s: float
    kernel_peak_mib: float
    tree_peak_mib: float
    over_memory: bool


def make_environment(work: Path) -> tuple[Path, dict[str, str]]:
    """Steps 1-3: the fresh environment with binder/'s requirements and postBuild; returns
    its python and the environment variables a Binder session has."""
    venv = work / "venv"
    # No pip or setuptools of its own: ensurepip's older setuptools would shadow the one torch needs.
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    # postBuild calls plain `pip`: the shared pip, run by this environment's python.
    (venv / "bin" / "pip").write_text(f'#!/bin/sh\nexec "{python}" -m pip "$@"\n')
    (venv / "bin" / "pip").chmod(0o755)
    own_site = subprocess.run([str(python), "-c", "import site; print(site.getsitepackages()[0])"],
                              check=True, capture_output=True, text=True).stdout.strip()
    (Path(own_site) / "_binder_base_image.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    (work / "offline").mkdir()
    (work / "offline" / "sitecustomize.py").write_text(OFFLINE)
    (work / "home").mkdir()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("NNGK_", "PYTHON", "VIRTUAL_ENV", "OMP_", "MPLBACKEND", "JUPYTER"))}
    env.update(HOME=str(work / "home"), PATH=os.pathsep.join([str(venv / "bin"), env["PATH"]]),
               PYTHONPATH=str(work / "offline"), VIRTUAL_ENV=str(venv), PIP_NO_INDEX="1",
               PIP_NO_BUILD_ISOLATION="0")
    subprocess.run([str(python), "-m", "pip", "install", "-q", "-r", str(ROOT / "binder" / "requirements.txt")],
                   env=env, check=True)
    subprocess.run([str(ROOT / "binder" / "postBuild")], cwd=ROOT, env=env, check=True)
    return python, env


def _limits(cpu: int, memory: int):
    def apply() -> None:
        os.sched_setaffinity(0, {cpu})
        resource.setrlimit(resource.RLIMIT_DATA, (memory, memory))
    return apply


def _tree(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return []


def run_limited(command: list[str], env: dict[str, str], cpu: int, memory: int, name: str) -> Measured:
    """Run ``command`` on one CPU under the memory caps, sampling its tree's resident memory."""
    start = time.monotonic()
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, preexec_fn=_limits(cpu, memory))
    root = psutil.Process(proc.pid)
    kernel_peak = tree_peak = 0
    cpu_s: dict[int, float] = {}
    over = False
    while proc.poll() is None:
        resident = {}
        for p in _tree(root):
            try:
                resident[p.pid] = p.memory_info().rss
                times = p.cpu_times()
                cpu_s[p.pid] = times.user + times.system
            except psutil.Error:
                continue
        tree_peak = max(tree_peak, sum(resident.values()))
        kernel_peak = max([kernel_peak] + [rss for pid, rss in resident.items() if pid != proc.pid])
        if tree_peak > memory:
            over = True
            for p in reversed(_tree(root)):
                p.kill()
        time.sleep(0.1)
    stderr = proc.stderr.read()
    if proc.returncode:
        print(stderr[-3000:], file=sys.stderr)
    return Measured(name, proc.returncode, time.monotonic() - start, sum(cpu_s.values()),
                    kernel_peak / 2**20, tree_peak / 2**20, over)


def check(notebooks: list[Path], fast: bool, cpu: int = 0, memory: int = 2 * GIB, work: Path | None = None,
          log=print) -> list[Measured]:
    """Build the environment in ``work`` (a new temporary folder if None), then execute
    ``notebooks`` in order under the limits; returns what each took."""
    with contextlib.nullcontext(work) if work else tempfile.TemporaryDirectory(prefix="nngk-binder-") as where:
        work = Path(where)
        start = time.monotonic()
        python, env = make_environment(work)
        log(f"environment built in {time.monotonic() - start:.0f} s (fresh venv, binder/requirements.txt, "
            f"binder/postBuild); notebooks on CPU {cpu}, {memory / GIB:g} GiB, {'fast' if fast else 'full'} mode")
        # A fresh runs folder, as a new visitor's: the notebooks would otherwise write runs/ in this checkout.
        env = {**env, "NNGK_FAST": "1" if fast else "0", "NNGK_RUNS": str(work / "runs")}
        executed = work / "executed"
        results = []
        log(f"{'notebook':32} {'wall s':>8} {'CPU s':>8} {'kernel peak MiB':>16} {'tree peak MiB':>14}")
        for path in notebooks:
            command = [str(ROOT / "binder" / "start"), str(python), "-m", "nbconvert", "--to", "notebook",
                       "--execute", "--ExecutePreprocessor.timeout=3600", "--output-dir", str(executed), str(path)]
            m = run_limited(command, env, cpu, memory, path.name)
            results.append(m)
            status = "" if m.returncode == 0 else ("  STOPPED: over the memory limit" if m.over_memory
                                                    else f"  FAILED (exit {m.returncode})")
            log(f"{m.notebook:32} {m.wall_s:8.1f} {m.cpu_s:8.1f} {m.kernel_peak_mib:16.0f} {m.tree_peak_mib:14.0f}"
                f"{status}")
        log(f"{'total':32} {sum(m.wall_s for m in results):8.1f} {sum(m.cpu_s for m in results):8.1f} "
            f"{max(m.kernel_peak_mib for m in results):16.0f} {max(m.tree_peak_mib for m in results):14.0f}")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--notebooks", nargs="*", help="stems to run (default: all, in reading order)")
    parser.add_argument("--fast", action="store_true", help="fast mode (NNGK_FAST=1) instead of full mode")
    parser.add_argument("--cpu", type=int, default=0, help="the CPU to pin to (default 0)")
    parser.add_argument("--memory_gib", type=float, default=2.0, help="the memory limit (default 2)")
    parser.add_argument("--work", type=Path, help="keep the environment and executed notebooks here")
    args = parser.parse_args(argv)
    notebooks = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if args.notebooks:
        notebooks = [p for p in notebooks if p.stem in args.notebooks]
        if len(notebooks) != len(args.notebooks):
            parser.error(f"--notebooks: not every name is one of notebooks/: {args.notebooks}")
    if args.work:
        args.work.mkdir(parents=True, exist_ok=False)
    results = check(notebooks, args.fast, args.cpu, int(args.memory_gib * GIB), args.work)
    return 0 if all(m.returncode == 0 for m in results) else 1


if __name__ == "__main__":
    sys.exit(main())
