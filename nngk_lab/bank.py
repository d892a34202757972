"""The feature bank: stored embeddings (centres) of every training image, their labels
and each one's K nearest other centres, plus an exact neighbour search in bounded memory."""

from __future__ import annotations

import torch
from torch import nn
from tqdm.auto import tqdm

from .checkpoint import atomic_save, safe_load
from .errors import CheckpointError, ConfigError

CPU_SEARCH_BUDGET_BYTES = 256 * 2**20
SEARCH_BACKENDS = ("torch", "faiss")


def _auto_chunk_rows(num_centres: int, device: torch.device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        budget = min(free // 4, 4 * 2**30)
    else:
        budget = CPU_SEARCH_BUDGET_BYTES
    # One (rows, N) float32 distance block plus about as much again for topk's workspace.
    return max(1, int(budget // (num_centres * 4 * 2)))


@torch.no_grad()
def nearest_neighbours(queries: torch.Tensor, centres: torch.Tensor, k: int, exclude_self: bool = False,
                       chunk_size: int | None = None, backend: str = "torch") -> tuple[torch.Tensor, torch.Tensor]:
    """Exact k nearest centres of each query by squared Euclidean distance.

    Queries are processed ``chunk_size`` rows at a time (chosen from a memory budget when
    None: 256 MiB on the CPU, a quarter of free memory on a GPU), so memory stays
    bounded: never an N x N matrix. ``exclude_self=True`` when the queries *are* the
    centres (row i never returns centre i). Returns ``(sq_dists, indices)``, each
    (Q, k), sorted nearest first. Ties may be returned in any order.

    ``backend="faiss"`` hands the search to faiss's exact ``IndexFlatL2`` on the CPU
    (``pip install faiss-cpu``; results come back on the centres' device).
    ``"torch"``, the default, was faster on the CPUs measured in docs/performance.md
    and runs on any device.
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
    extra = int(exclude_self)  # the query itself, dropped by drop_self
    if backend == "faiss":
        d, i = _faiss_search(queries, centres, k + extra)
        return drop_self(d, i) if exclude_self else (d, i)
    if backend != "torch":
        raise ConfigError(f"search backend {backend!r} is not one of {', '.join(SEARCH_BACKENDS)}")
    rows = chunk_size or _auto_chunk_rows(num_c, centres.device)
    centre_sq = centres.square().sum(1)
    out_d = torch.empty(num_q, k, dtype=centres.dtype, device=centres.device)
    out_i = torch.empty(num_q, k, dtype=torch.long, device=centres.device)
    for start in range(0, num_q, rows):
        q = queries[start:start + rows]
        # ||q||^2 is the same along a row, so ranking needs only ||c||^2 - 2 q.c.
        partial = torch.addmm(centre_sq.unsqueeze(0), q, centres.T, beta=1.0, alpha=-2.0)
        d, i = torch.topk(partial, k + extra, dim=1, largest=False, sorted=True)
        d = (d + q.square().sum(1, keepdim=True)).clamp_min_(0.0)
        out_d[start:start + rows], out_i[start:start + rows] = drop_self(d, i, start) if exclude_self else (d, i)
    return out_d, out_i


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


def _faiss_search(queries: torch.Tensor, centres: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
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


@torch.no_grad()
def embed(model: nn.Module, loader, device: torch.device | str, progress: bool = True,
          desc: str = "embedding") -> tuple[torch.Tensor, torch.Tensor]:
    """Embed every item of a loader over an index-returning dataset, in eval mode.

    Each embedding is stored at its dataset index, whatever order the loader visits
    the items in. Returns ``(features (N, D), labels (N,))`` on ``device``; the model's
    train/eval mode is restored afterwards.
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    n = len(loader.dataset)
    features = labels = None
    seen = torch.zeros(n, dtype=torch.bool, device=device)
    try:
        for images, targets, index in tqdm(loader, desc=desc, disable=not progress, leave=False):
            out = model(images.to(device, non_blocking=True)).float()
            index = index.to(device)
            if features is None:
                features = torch.empty(n, out.shape[1], device=device)
                labels = torch.empty(n, dtype=torch.long, device=device)
            features[index] = out
            labels[index] = targets.to(device)
            seen[index] = True
    finally:
        model.train(was_training)
    if features is None or not bool(seen.all()):
        raise RuntimeError("the loader did not visit every dataset index once; use an index-returning dataset")
    return features, labels


class FeatureBank:
    """Centres (N, D), their labels (N,) and each centre's K nearest other centres (N, K).

    ``refresh`` recomputes every centre with the model in eval mode and no gradient, then
    finds every training example's K nearest other centres; those neighbour lists stay
    fixed until the next refresh (the distances to them are recomputed each step).
    """

    def __init__(self, features: torch.Tensor, labels: torch.Tensor,
                 neighbours: torch.Tensor | None = None, refreshed_at_epoch: int = -1):
        self.features = features
        self.labels = labels
        self.neighbours = neighbours
        self.refreshed_at_epoch = refreshed_at_epoch
        self.sq_norms = features.square().sum(1)

    def __len__(self) -> int:
        return self.features.shape[0]

    @property
    def num_neighbours(self) -> int:
        return 0 if self.neighbours is None else self.neighbours.shape[1]

    @classmethod
    def build(cls, model: nn.Module, loader, device, num_neighbours: int, epoch: int = -1,
              progress: bool = True, chunk_size: int | None = None) -> "FeatureBank":
        """Embed the whole training set and find each example's neighbours."""
        features, labels = embed(model, loader, device, progress, desc="refreshing bank")
        bank = cls(features, labels, refreshed_at_epoch=epoch)
        bank.update_neighbours(num_neighbours, chunk_size)
        return bank

    def update_neighbours(self, num_neighbours: int, chunk_size: int | None = None,
                          backend: str = "torch") -> None:
        _, self.neighbours = nearest_neighbours(self.features, self.features, num_neighbours,
                                                exclude_self=True, chunk_size=chunk_size, backend=backend)

    @torch.no_grad()
    def move_centres(self, index: torch.Tensor, fresh: torch.Tensor, momentum: float) -> None:
        """Move centres ``index`` (distinct) towards ``fresh`` embeddings of the same images:
        ``momentum * old + (1 - momentum) * fresh``; the neighbour lists stay as they are."""
        moved = self.features[index].mul_(momentum).add_(fresh.to(self.features.dtype), alpha=1 - momentum)
        self.features[index] = moved
        self.sq_norms[index] = moved.square().sum(1)

    def to(self, device) -> "FeatureBank":
        nb = None if self.neighbours is None else self.neighbours.to(device)
        return FeatureBank(self.features.to(device), self.labels.to(device), nb, self.refreshed_at_epoch)

    def state_dict(self) -> dict:
        return {"features": self.features.cpu(), "labels": self.labels.cpu(),
                "neighbours": None if self.neighbours is None else self.neighbours.cpu(),
                "refreshed_at_epoch": self.refreshed_at_epoch}

    @classmethod
    def from_state_dict(cls, state: dict, device="cpu") -> "FeatureBank":
        try:
            bank = cls(state["features"], state["labels"], state["neighbours"], int(state["refreshed_at_epoch"]))
        except (KeyError, TypeError) as e:
            raise CheckpointError(f"feature bank state is incomplete ({e})") from e
        return bank.to(device)

    def save(self, path) -> None:
        atomic_save({"kind": "nngk_lab.FeatureBank", **self.state_dict()}, path)

    @classmethod
    def load(cls, path, device="cpu") -> "FeatureBank":
        state = safe_load(path, expected_kind="nngk_lab.FeatureBank")
        return cls.from_state_dict(state, device)
