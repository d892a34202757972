"""Time and peak memory of each notebook, run top to bottom as a student would.

    python bench/notebook_resources.py            # full mode, fresh runs folder
    NNGK_FAST=1 python bench/notebook_resources.py  # fast mode (what the tests run)

Each notebook runs in its own `jupyter nbconvert --execute` (a fresh kernel), in reading
order, all sharing one runs folder (a new temporary one unless --runs is given), so
notebook 2 trains and notebooks 3-5 load its run. Peak memory is the largest resident set
size of the kernel process and of the whole process tree (nbconvert + kernel), sampled
every 0.1 s; CPU s is the user + system time of that tree (wall time on a busy shared
machine overstates what an idle one needs). Prints a table; --executed DIR keeps the executed copies;
--only 02 03 runs just those notebooks.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a file: the checkout's nngk_lab, as the notebooks measured get

from nngk_lab.device import available_cores
from nngk_lab.explore.notebook import fast_mode


def run_notebook(path: Path, out_dir: Path, env: dict) -> tuple[float, float, float, float, int]:
    command = [sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute",
               "--ExecutePreprocessor.timeout=1800", "--output-dir", str(out_dir), str(path)]
    start = time.monotonic()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    parent = psutil.Process(proc.pid)
    kernel_peak = tree_peak = 0
    cpu = {}  # pid -> the latest user + system seconds seen
    while proc.poll() is None:
        try:
            children = parent.children(recursive=True)
            rss = {p.pid: p.memory_info().rss for p in [parent, *children]}
            for p in [parent, *children]:
                times = p.cpu_times()
                cpu[p.pid] = times.user + times.system
        except psutil.Error:
            continue
        tree_peak = max(tree_peak, sum(rss.values()))
        kernel_peak = max([kernel_peak] + [rss[p.pid] for p in children if p.pid in rss])
        time.sleep(0.1)
    _, stderr = proc.communicate()
    if proc.returncode:
        print(stderr[-3000:], file=sys.stderr)
    return time.monotonic() - start, sum(cpu.values()), kernel_peak / 2**20, tree_peak / 2**20, proc.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", help="runs folder (default: a new temporary folder)")
    parser.add_argument("--executed", help="keep the executed notebooks in this folder")
    parser.add_argument("--only", nargs="+", metavar="PREFIX",
                        help="run only the notebooks whose names start with these, e.g. --only 02 03 (03 then loads "
                             "the run 02 trained, as in a full pass)")
    args = parser.parse_args()
    runs = Path(args.runs or tempfile.mkdtemp(prefix="nngk-runs-"))
    out_dir = Path(args.executed or tempfile.mkdtemp(prefix="nngk-executed-"))
    env = {**os.environ, "NNGK_RUNS": str(runs),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    mode = "fast" if fast_mode() else "full"
    print(f"mode: {mode}; runs folder: {runs}; executed copies: {out_dir}; cores: {available_cores()}")
    print(f"{'notebook':32s} {'wall s':>8s} {'CPU s':>8s} {'kernel peak MiB':>16s} {'tree peak MiB':>14s}")
    total, total_cpu, failed = 0.0, 0.0, 0
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        if args.only and not path.name.startswith(tuple(args.only)):
            continue
        seconds, cpu, kernel, tree, rc = run_notebook(path, out_dir, env)
        total, total_cpu = total + seconds, total_cpu + cpu
        failed += rc != 0
        print(f"{path.name:32s} {seconds:8.1f} {cpu:8.1f} {kernel:16.0f} {tree:14.0f}{'  FAILED' if rc else ''}",
              flush=True)
    print(f"{'total':32s} {total:8.1f} {total_cpu:8.1f}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
