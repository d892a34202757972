"""How fast, and in how much memory, are each bank centre's k nearest other centres found?

Three exact methods, each run in a fresh process so that its peak resident memory is its
own: ``nngk_lab.bank.nearest_neighbours`` (chunked matrix products + top-k), the
original's full N x N distance matrix + full argsort, and faiss-cpu's ``IndexFlatL2``
(only if faiss is installed).

    python -m bench.bench_search                      # N = 10k, 50k, 200k (several minutes on 2 cores)
    python -m bench.bench_search --sizes 2000 --quick # seconds: checks the script runs

Centres are random normal vectors (D = 512, k = 200). Up to ``--max_queries`` of them are
searched (all of them, excluding self, when N is no larger): every method handles the
queries in independent blocks, so its time grows linearly with their number, and the
``full search s`` column scales the measured time to all N queries.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

from nngk_lab.bank import _auto_chunk_rows, nearest_neighbours
from nngk_lab.device import available_cores

from .common import (available_memory_bytes, chunked_matmul, current_rss_bytes, format_table, machine_summary,
                     peak_rss_bytes)

METHODS = ("nngk_lab", "full_matrix", "faiss")
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


def child(method: str, num_centres: int, num_queries: int, k: int, dim: int) -> dict:
    """Run one search in this process and report its time and memory."""
    torch.set_num_threads(available_cores())
    centres = torch.randn(num_centres, dim, generator=torch.Generator().manual_seed(0))
    queries = centres[:num_queries]
    exclude_self = num_queries == num_centres
    rss_before = current_rss_bytes()
    start = time.perf_counter()
    if method == "full_matrix":
        d, i = full_matrix_search(queries, centres, k, exclude_self)
    else:
        backend = "torch" if method == "nngk_lab" else "faiss"
        d, i = nearest_neighbours(queries, centres, k, exclude_self=exclude_self, backend=backend)
    seconds = time.perf_counter() - start
    peak = peak_rss_bytes()
    matmul = None
    if method == "nngk_lab":
        start = time.perf_counter()
        chunked_matmul(queries, centres, _auto_chunk_rows(num_centres, centres.device))
        matmul = time.perf_counter() - start
    return {"seconds": seconds, "matmul": matmul, "peak_rss": peak, "extra": peak - rss_before,
            "dist_sum": float(d.double().sum()), "first_ok": bool((i[:, 0] != torch.arange(num_queries)).all())
            if exclude_self else True}


def run_in_subprocess(method, num_centres, num_queries, k, dim) -> dict:
    cmd = [sys.executable, "-m", "bench.bench_search", "--child", method, str(num_centres), str(num_queries),
           str(k), str(dim)]
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


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.bench_search", description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000, 200_000], help="numbers of centres N")
    p.add_argument("--max_queries", type=int, default=10_000, help="search at most this many of the centres")
    p.add_argument("--neighbours", type=int, default=200)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS),
                   help="faiss is skipped when it is not installed")
    p.add_argument("--quick", action="store_true", help="small k and D, to check that the script runs")
    p.add_argument("--child", nargs=5, metavar=("METHOD", "N", "Q", "K", "D"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        method, *numbers = args.child
        print(json.dumps(child(method, *map(int, numbers))))
        return
    k, dim = (10, 32) if args.quick else (args.neighbours, args.dim)
    # nngk_lab first, so that the others have their reference when it is among them.
    methods = sorted((m for m in args.methods if m != "faiss" or faiss_installed()), key=lambda m: m != "nngk_lab")
    rows = []
    for n in args.sizes:
        q = min(n, args.max_queries)
        results = {}
        for method in methods:
            need = full_matrix_bytes(q, n)
            if method == "full_matrix" and need > 0.7 * available_memory_bytes():
                rows.append({"N": n, "queries": q, "method": method,
                             "note": f"not run: {q} queries need {need / 2**30:.0f} GiB (matrix + argsort)"})
                continue
            r = run_in_subprocess(method, n, q, k, dim)
            row = {"N": n, "queries": q, "method": method}
            if "error" in r:
                rows.append({**row, "note": r["error"][:80]})
                continue
            results[method] = r
            ref = results.get("nngk_lab")
            note = comparison_note(r, ref)
            if method == "full_matrix" and q < n:
                note += f"; all N queries need {full_matrix_bytes(n, n) / 2**30:.0f} GiB"
            rows.append({**row, "search s": r["seconds"], "full search s": r["seconds"] * n / q,
                         "peak RSS GiB": r["peak_rss"] / 2**30, "search extra GiB": r["extra"] / 2**30,
                         "/ nngk_lab": r["seconds"] / ref["seconds"] if ref else None, "note": note,
                         "/ matmul alone": r["seconds"] / r["matmul"] if r["matmul"] else None})
    print(f"exact k-nearest-neighbour search, N centres x D = {dim}, k = {k}, float32 -- {machine_summary()}")
    print(format_table(rows, ["N", "queries", "method", "search s", "full search s", "/ nngk_lab",
                              "/ matmul alone", "peak RSS GiB", "search extra GiB", "note"]))
    print("peak RSS: the whole process (python + torch + centres + search); search extra: its rise "
          "during the search. 'same distances': the sum of the k distances matches nngk_lab's ('no reference': "
          "nngk_lab was not run). "
          "/ matmul alone: nngk_lab's search over the time of its chunked matrix products without the top-k.")


if __name__ == "__main__":
    main()
