"""How fast, and in how much memory, are each bank centre's k nearest other centres found,
and where does the time go?

Exact methods, each run in a fresh process so that its peak resident memory is its own,
all of them in turns, ``--repeat`` times (median reported): ``nngk_lab`` (the default,
``nearest_neighbours(..., backend="auto")``), ``torch`` and ``faiss`` (the two backends
forced; faiss only if installed), and the original's full N x N distance matrix + full
argsort (``full_matrix``).

    python -m bench.bench_search                      # N = 10k, 50k, 200k (minutes on 2 cores)
    python -m bench.bench_search --sizes 2000 --quick # seconds: checks the script runs

Centres are random normal vectors (D = 512, k = 200). Up to ``--max_queries`` of them are
searched (all of them, excluding self, when N is no larger): every method handles the
queries in independent blocks, so its time grows linearly with their number, and the
``full search s`` column scales the measured time to all N queries. In the first round
the torch backend's time is split into its stages and faiss's into a search for k = 1
(its distance products and a trivial selection) and the rest.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from nngk_lab.device import available_cores, cpu_description
from nngk_lab.kernel.search import (GROUPED_TOPK_MIN_CENTRES_PER_NEIGHBOUR, faiss_search, nearest_neighbours,
    smallest, time_backends, torch_search)
from nngk_lab.kernel.search_choice import cached_choice, choose_backend

from .common import (available_memory_bytes, best_times, current_rss_bytes, format_table, machine_summary,
                     peak_rss_bytes)

METHODS = ("nngk_lab", "torch", "faiss", "full_matrix")
REPO_ROOT = Path(__file__).resolve().parents[1]


def full_matrix_search(queries: torch.Tensor, centres: torch.Tensor, k: int, exclude_self: bool):
    """The original's search: every distance at once, then every row fully sorted."""
    dists = torch.cdist(queries, centres)
    if exclude_self:
        dists.fill_diagonal_(float("inf"))
    order = torch.argsort(dists, dim=1)[:, :k]
    return dists.gather(1, order).square(), order


def full_matrix_bytes(num_queries: int, num_centres: int) -> int:
    # The float32 matrix, argsort's int64 result and its float32 working copy.
    return num_queries * num_centres * (4 + 8 + 4)


def child(method: str, num_centres: int, num_queries: int, k: int, dim: int, split: bool = False) -> dict:
    """Run one search in this process and report its time and memory; with ``split``,
    time its parts too (after the search, so that its peak memory stays its own)."""
    torch.set_num_threads(available_cores())
    centres = torch.randn(num_centres, dim, generator=torch.Generator().manual_seed(0))
    queries = centres[:num_queries]
    exclude_self = num_queries == num_centres
    rss_before = current_rss_bytes()
    start = time.perf_counter()
    if method == "full_matrix":
        d, i = full_matrix_search(queries, centres, k, exclude_self)
    else:
        backend = "auto" if method == "nngk_lab" else method
        d, i = nearest_neighbours(queries, centres, k, exclude_self=exclude_self, backend=backend)
    seconds = time.perf_counter() - start
    peak = peak_rss_bytes()
    stages = {}
    if split and method == "torch":
        torch_search(queries, centres, k, exclude_self, stage_seconds=stages)
    elif split and method == "faiss":
        start = time.perf_counter()
        faiss_search(queries, centres, 1)
        stages["distances"] = time.perf_counter() - start
        stages["top-k"] = max(0.0, seconds - stages["distances"])
    used = (choose_backend(queries, centres, k, calibrate=time_backends) if method == "nngk_lab" else method)
    return {"seconds": seconds, "stages": stages, "backend": used, "peak_rss": peak, "extra": peak - rss_before,
            "dist_sum": float(d.double().sum()), "first_ok": bool((i[:, 0] != torch.arange(num_queries)).all())
            if exclude_self else True}


def run_in_subprocess(method, num_centres, num_queries, k, dim, split) -> dict:
    cmd = [sys.executable, "-m", "bench.bench_search", "--child", method, str(num_centres), str(num_queries),
           str(k), str(dim), str(int(split))]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def comparison_note(result: dict, reference: dict | None) -> str:
    """How a child's result compares with nngk_lab's (``reference``, None when nngk_lab was
    not among the methods run): the same sum of distances, with no query its own neighbour."""
    if reference is None:  # only the self-exclusion can be checked
        return "no reference" if result["first_ok"] else "SELF NOT EXCLUDED"
    agree = abs(result["dist_sum"] - reference["dist_sum"]) <= 1e-5 * abs(reference["dist_sum"])
    return "same distances" if agree and result["first_ok"] else "DIFFERENT RESULT"


def faiss_installed() -> bool:
    return importlib.util.find_spec("faiss") is not None


def calibrate_auto(sizes: list[int], max_queries: int, k: int, dim: int) -> str:
    """Let ``backend="auto"`` calibrate now (if it has not on this machine), outside any
    timed search, and say what it chose for each size."""
    torch.set_num_threads(available_cores())
    start = time.perf_counter()
    chosen = {n: choose_backend(torch.empty(min(n, max_queries), dim), torch.empty(n, dim), k,
                                calibrate=time_backends) for n in sizes}
    took = time.perf_counter() - start
    entry = cached_choice(dim, k)
    measured = (", calibration " + ", ".join(f"{b} {s:.3f} s" for b, s in entry["seconds"].items())
                if entry else " (no calibration: small search, no faiss, or the cache cannot be written)")
    return (f"backend='auto' chose {', '.join(f'{b} at N = {n}' for n, b in chosen.items())}"
            f"{measured} (this call {took:.1f} s)")


def selection_rows(sizes: list[int], k: int, rows: int = 256) -> list[dict]:
    """The top-k alone on a (rows, N) block: one top-k over each row against the grouped
    selection of ``nngk_lab.kernel.search.smallest``, best of 5 in turns; where groups pay."""
    torch.set_num_threads(available_cores())
    out = []
    for n in sizes:
        block = torch.randn(rows, n, generator=torch.Generator().manual_seed(n))
        best = best_times({"plain": lambda: smallest(block, k, grouped=False),
                           "grouped": lambda: smallest(block, k, grouped=True)}, repeat=5)
        out.append({"N": n, "N / k": n / k, "one top-k ms": best["plain"] * 1e3, "by groups ms": best["grouped"] * 1e3,
                    "groups / one": best["grouped"] / best["plain"],
                    "search uses": "groups" if n >= GROUPED_TOPK_MIN_CENTRES_PER_NEIGHBOUR * k else "one top-k"})
    return out


def summarise(n: int, q: int, method: str, runs: list[dict], reference: dict | None, faiss: dict | None) -> dict:
    """One table row: the median of the runs, the stages from the first one."""
    row = {"N": n, "queries": q, "method": method}
    errors = [r["error"] for r in runs if "error" in r]
    if errors:
        return {**row, "note": errors[0][:80]}
    seconds = statistics.median(r["seconds"] for r in runs)
    stages = runs[0]["stages"]
    note = comparison_note(runs[0], reference)
    if method == "nngk_lab":
        note += f"; auto -> {runs[0]['backend']}"
    if method == "full_matrix" and q < n:
        note += f"; all N queries need {full_matrix_bytes(n, n) / 2**30:.0f} GiB"
    return {**row, "median s": seconds, "runs s": " ".join(f"{r['seconds']:.3g}" for r in runs),
            "full search s": seconds * n / q,
            "/ faiss": seconds / statistics.median(r["seconds"] for r in faiss) if faiss else None,
            "distances s": stages.get("distances"), "top-k s": stages.get("top-k"), "copies s": stages.get("copies"),
            "peak RSS GiB": max(r["peak_rss"] for r in runs) / 2**30,
            "search extra GiB": max(r["extra"] for r in runs) / 2**30, "note": note}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.bench_search", description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000, 200_000], help="numbers of centres N")
    p.add_argument("--max_queries", type=int, default=2_000, help="search at most this many of the centres")
    p.add_argument("--neighbours", type=int, default=200)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--repeat", type=int, default=3, help="runs of each method, in turns; the median is shown")
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS),
                   help="faiss is skipped when it is not installed")
    p.add_argument("--selection_sizes", type=int, nargs="*", default=[2_000, 4_000, 8_000, 16_000, 50_000, 200_000],
                   help="row lengths N of the top-k-alone table (none: skip it)")
    p.add_argument("--quick", action="store_true", help="small k and D, one run each, to check that the script runs")
    p.add_argument("--child", nargs=6, metavar=("METHOD", "N", "Q", "K", "D", "SPLIT"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        method, *numbers = args.child
        print(json.dumps(child(method, *map(int, numbers[:4]), split=bool(int(numbers[4])))))
        return
    k, dim, repeat = (10, 32, 1) if args.quick else (args.neighbours, args.dim, args.repeat)
    selection_sizes = [n for n in args.selection_sizes if n >= k and (not args.quick or n <= 2_000)]
    # nngk_lab first, so that the others have their reference when it is among them.
    methods = sorted((m for m in args.methods if m != "faiss" or faiss_installed()), key=lambda m: m != "nngk_lab")
    auto_line = calibrate_auto(args.sizes, args.max_queries, k, dim) if "nngk_lab" in methods else ""
    rows = []
    for n in args.sizes:
        q = min(n, args.max_queries)
        runs = {m: [] for m in methods}
        need = full_matrix_bytes(q, n)
        if "full_matrix" in runs and need > 0.7 * available_memory_bytes():
            del runs["full_matrix"]
            rows.append({"N": n, "queries": q, "method": "full_matrix",
                         "note": f"not run: {q} queries need {need / 2**30:.0f} GiB (matrix + argsort)"})
        for round_ in range(repeat):
            for method in runs:
                runs[method].append(run_in_subprocess(method, n, q, k, dim, split=round_ == 0))
        ok = {m: r for m, r in runs.items() if not any("error" in x for x in r)}
        reference = ok["nngk_lab"][0] if "nngk_lab" in ok else None
        rows += [summarise(n, q, m, r, reference, ok.get("faiss")) for m, r in runs.items()]
    cpu = cpu_description()
    print(f"exact k-nearest-neighbour search, N centres x D = {dim}, k = {k}, float32 -- {machine_summary()}")
    print(f"CPU vendor {cpu['vendor'] or 'unknown'}; vector extensions (/proc/cpuinfo): "
          f"{' '.join(cpu['vector_extensions']) or 'none listed'}")
    if auto_line:
        print(auto_line)
    print(format_table(rows, ["N", "queries", "method", "median s", "runs s", "full search s", "/ faiss",
                              "distances s", "top-k s", "copies s", "peak RSS GiB", "search extra GiB", "note"]))
    print(f"median s: median of {repeat} runs, each method in a fresh process, methods in turns (runs s: each run, "
          "in order). / faiss: median over faiss's median. distances / top-k / copies (first run, timed again "
          "after it): torch's matrix products, selection, and adding ||q||^2 back + dropping self + writing "
          "the output; for faiss, 'distances' is a search for k = 1 and 'top-k' the rest of its time. "
          "peak RSS: the whole process (python + torch + centres + search); search extra: its rise during the "
          "search. 'same distances': the sum of the k "
          "distances matches nngk_lab's ('no reference': nngk_lab was not run).")
    if selection_sizes:
        print(f"\nthe top-k alone, (256, N) random block, k = {k}: one top-k per row vs by groups "
              "(nngk_lab.kernel.search.smallest); best of 5, in turns")
        print(format_table(selection_rows(selection_sizes, k)))


if __name__ == "__main__":
    main()
