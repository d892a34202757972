"""Exact k-nearest-neighbour search by squared Euclidean distance, in bounded memory.

Two exact backends: ``torch`` (chunked matrix products and a top-k, on any device) and
``faiss`` (faiss-cpu's ``IndexFlatL2``, optional). ``backend="auto"``, the default, takes
whichever :mod:`nngk_lab.kernel.search_choice` finds faster on this machine.
"""

from __future__ import annotations

import math
import time

import torch

from ..errors import ConfigError
from .search_choice import choose_backend

CPU_SEARCH_BUDGET_BYTES = 256 * 2**20
SEARCH_BACKENDS = ("auto", "torch", "faiss")
# Below this many centres per neighbour asked for, one top-k over the whole row was as fast
# as selecting by groups (docs/performance.md, "The neighbour search").
GROUPED_TOPK_MIN_CENTRES_PER_NEIGHBOUR = 40


def auto_chunk_rows(num_centres: int, device: torch.device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        budget = min(free // 4, 4 * 2**30)
    else:
        budget = CPU_SEARCH_BUDGET_BYTES
    # One (rows, N) float32 distance block plus about as much again for topk's workspace.
    return max(1, int(budget // (num_centres * 4 * 2)))


@torch.no_grad()
def nearest_neighbours(queries: torch.Tensor, centres: torch.Tensor, k: int, exclude_self: bool = False,
                       chunk_size: int | None = None, backend: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """Exact k nearest centres of each query by squared Euclidean distance.

    Returns ``(sq_dists, indices)``, each (Q, k), sorted nearest first; ties may be
    returned in any order. ``exclude_self=True`` when the queries *are* the centres (row
    i never returns centre i).

    ``backend``: ``"torch"`` processes the queries ``chunk_size`` rows at a time (chosen
    from a memory budget when None: 256 MiB on the CPU, a quarter of free memory on a
    GPU), so memory stays bounded: never an N x N matrix. ``"faiss"`` hands the search to
    faiss's exact ``IndexFlatL2`` on the CPU (``pip install faiss-cpu``; results come back
    on the centres' device). ``"auto"`` uses whichever of the two was measured faster on
    this machine (:func:`nngk_lab.kernel.search_choice.choose_backend`); both are exact, so only
    float32 rounding at near-ties can tell their answers apart.
    """
    if queries.dim() != 2 or centres.dim() != 2 or queries.shape[1] != centres.shape[1]:
        raise ValueError(f"queries {tuple(queries.shape)} and centres {tuple(centres.shape)} "
                         "must be (Q, D) and (N, D) with the same D")
    num_q, num_c = queries.shape[0], centres.shape[0]
    if exclude_self and num_q != num_c:
        raise ValueError("exclude_self=True needs the queries to be the centres (same number of rows)")
    available = num_c - 1 if exclude_self else num_c
    if not 1 <= k <= available:
        raise ValueError(f"k = {k} neighbours asked for, but only {available} centres are available")
    if backend not in SEARCH_BACKENDS:
        raise ConfigError(f"search backend {backend!r} is not one of {', '.join(SEARCH_BACKENDS)}")
    if backend == "auto":
        backend = choose_backend(queries, centres, k, calibrate=time_backends)
    if backend == "faiss":
        d, i = faiss_search(queries, centres, k + int(exclude_self))
        return drop_self(d, i) if exclude_self else (d, i)
    return torch_search(queries, centres, k, exclude_self, chunk_size)


def torch_search(queries: torch.Tensor, centres: torch.Tensor, k: int, exclude_self: bool = False,
                 chunk_size: int | None = None,
                 stage_seconds: dict[str, float] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``torch`` backend of :func:`nearest_neighbours` (arguments already checked).

    ``stage_seconds``, when given, accumulates the wall time of each stage ("distances":
    the matrix products, "top-k": the selection, "copies": adding ||q||^2 back, dropping
    self, writing the output), for bench/bench_search.py.
    """
    num_q, num_c = queries.shape[0], centres.shape[0]
    extra = int(exclude_self)  # the query itself, dropped by drop_self
    rows = min(chunk_size or auto_chunk_rows(num_c, centres.device), num_q)
    clock = _StageClock(stage_seconds, centres.device)
    centre_sq = centres.square().sum(1)
    out_d = torch.empty(num_q, k, dtype=centres.dtype, device=centres.device)
    out_i = torch.empty(num_q, k, dtype=torch.long, device=centres.device)
    # One block reused by every chunk: a fresh (rows, N) allocation each time pays the
    # kernel's page faults again (10% of the matrix products at N = 50k, 671 rows, in
    # docs/performance.md).
    block = torch.empty(rows, num_c, dtype=centres.dtype, device=centres.device)
    for start in range(0, num_q, rows):
        q = queries[start:start + rows]
        # ||q||^2 is the same along a row, so ranking needs only ||c||^2 - 2 q.c.
        partial = torch.addmm(centre_sq.unsqueeze(0), q, centres.T, beta=1.0, alpha=-2.0, out=block[:q.shape[0]])
        clock.lap("distances")
        d, i = smallest(partial, k + extra)
        clock.lap("top-k")
        d = (d + q.square().sum(1, keepdim=True)).clamp_min_(0.0)
        out_d[start:start + rows], out_i[start:start + rows] = drop_self(d, i, start) if exclude_self else (d, i)
        clock.lap("copies")
    return out_d, out_i


class _StageClock:
    """Adds the time since the previous lap to ``seconds[stage]``; does nothing (no device
    synchronisation either) when ``seconds`` is None."""

    def __init__(self, seconds: dict[str, float] | None, device: torch.device):
        self.seconds, self.device = seconds, device
        self.last = time.perf_counter()

    def lap(self, stage: str) -> None:
        if self.seconds is None:
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + now - self.last
        self.last = now


def smallest(block: torch.Tensor, k: int, grouped: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The k smallest entries of each row of ``block``, sorted, and their column indices.

    On the CPU one top-k over a long row costs several times the row's length in
    comparisons through a copied (value, index) array, so long rows are cut into g
    groups of columns j, j + m, j + 2m, ... (m = N // g): only the k groups with the
    smallest minima can hold the k smallest entries (any entry elsewhere is at least
    the k-th of those minima, and they are k entries), so a top-k over the m minima and
    one over those k groups' k * g entries (plus the < g columns left over) give the same
    values as one top-k over the row, at about 2 sqrt(N k) entries instead of N. A block
    holding a NaN goes through the plain top-k, which ranks NaN last.

    ``grouped`` forces either way (for bench/bench_search.py, which measures where groups
    pay); None groups on the CPU from GROUPED_TOPK_MIN_CENTRES_PER_NEIGHBOUR * k columns.
    """
    num_rows, n = block.shape
    if grouped is None:
        grouped = block.device.type == "cpu" and n >= GROUPED_TOPK_MIN_CENTRES_PER_NEIGHBOUR * k
    g = round(math.sqrt(n / k))  # balances the two top-k's: m = N / g minima, k * g entries
    if not grouped or g < 2:
        return torch.topk(block, k, dim=1, largest=False, sorted=True)
    m = n // g
    minima = block[:, :g * m].view(num_rows, g, m).amin(1)
    if bool(minima.isnan().any()):
        return torch.topk(block, k, dim=1, largest=False, sorted=True)
    groups = torch.topk(minima, k, dim=1, largest=False, sorted=False).indices
    columns = (groups.unsqueeze(2) + m * torch.arange(g, device=block.device)).view(num_rows, k * g)
    if g * m < n:
        columns = torch.cat([columns, torch.arange(g * m, n, device=block.device).expand(num_rows, -1)], 1)
    d, j = torch.topk(block.gather(1, columns), k, dim=1, largest=False, sorted=True)
    return d, columns.gather(1, j)


def drop_self(sq_dists: torch.Tensor, indices: torch.Tensor,
              first_row: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The k nearest *other* centres, from a search for k + 1 whose queries are the centres
    ``first_row``, ``first_row + 1``, ...: each row's own index is removed, order kept.

    Exact duplicates tie with a query at distance 0 and can push it out of its k + 1; then
    the farthest is removed instead, which leaves the same k nearest others. Gathers rather
    than boolean masks, so that a GPU search does not wait for the host.
    """
    k = indices.shape[1] - 1
    own = torch.arange(first_row, first_row + indices.shape[0], device=indices.device).unsqueeze(1)
    is_own = indices == own
    dropped = torch.where(is_own.any(1), is_own.int().argmax(1), k).unsqueeze(1)
    columns = torch.arange(k, device=indices.device).unsqueeze(0)
    columns = columns + (columns >= dropped)
    return sq_dists.gather(1, columns), indices.gather(1, columns)


def faiss_search(queries: torch.Tensor, centres: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``faiss`` backend: the k nearest centres by faiss's exact ``IndexFlatL2``."""
    try:
        import faiss
    except ImportError as e:
        raise ConfigError("the faiss search backend needs faiss: pip install faiss-cpu "
                          "(or use backend='torch', which needs nothing more)") from e
    index = faiss.IndexFlatL2(centres.shape[1])
    index.add(centres.detach().float().cpu().contiguous().numpy())
    d, i = index.search(queries.detach().float().cpu().contiguous().numpy(), k)
    device = centres.device
    return torch.from_numpy(d).clamp_min_(0.0).to(device), torch.from_numpy(i).to(device)


def time_backends(num_centres: int, num_queries: int, dim: int, k: int) -> dict[str, float]:
    """Seconds each backend takes on one random CPU problem of this size, timed in turns
    (torch, faiss, torch, faiss) and the better of two kept, so that load from other
    processes hits both alike; the calibration of ``backend="auto"``."""
    centres = torch.randn(num_centres, dim, generator=torch.Generator().manual_seed(0))
    queries = centres[:num_queries]
    runs = {"torch": lambda: torch_search(queries, centres, k),
            "faiss": lambda: faiss_search(queries, centres, k)}
    best = dict.fromkeys(runs, math.inf)
    for _ in range(2):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - start)
    return best
