"""The feature bank: stored embeddings (centres) of every training image, their labels
and each one's K nearest other centres (found by :mod:`nngk_lab.kernel.search`)."""

from __future__ import annotations

import torch
from torch import nn
from tqdm.auto import tqdm

from .. import distributed
from ..errors import CheckpointError
from ..files import atomic_save, safe_load
from .search import drop_self, nearest_neighbours


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


def embed_shared(model: nn.Module, loader, device: torch.device | str, progress: bool = True,
                 desc: str = "embedding") -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`embed`, with the work shared by the processes of a distributed run: each
    embeds whole batches in turn, exactly as one process would, and every process gets
    all the embeddings. On one process (or with fewer batches than processes) it is
    :func:`embed` itself."""
    dealt = distributed.deal(loader) if distributed.world_size() > 1 else None
    if dealt is None:
        return embed(model, loader, device, progress, desc)
    mine, rows = dealt
    features, labels = embed(model, mine, device, progress, desc)
    return distributed.gather_rows(features, rows), distributed.gather_rows(labels, rows)


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
        features, labels = embed_shared(model, loader, device, progress, desc="refreshing bank")
        bank = cls(features, labels, refreshed_at_epoch=epoch)
        bank.update_neighbours(num_neighbours, chunk_size)
        return bank

    def update_neighbours(self, num_neighbours: int, chunk_size: int | None = None,
                          backend: str = "auto") -> None:
        """Find each centre's ``num_neighbours`` nearest other centres (``backend`` as in
        :func:`nngk_lab.kernel.search.nearest_neighbours`); in a distributed run each process
        searches for its share of the rows and all get every row's."""
        if distributed.world_size() == 1:
            _, self.neighbours = nearest_neighbours(self.features, self.features, num_neighbours,
                                                    exclude_self=True, chunk_size=chunk_size, backend=backend)
            return
        rows = distributed.query_rows(len(self))
        _, mine = drop_self(*nearest_neighbours(self.features[rows], self.features, num_neighbours + 1,
                                                chunk_size=chunk_size, backend=backend), rows.start)
        self.neighbours = torch.cat(distributed.all_gather_rows(mine))

    @torch.no_grad()
    def move_centres(self, index: torch.Tensor, fresh: torch.Tensor, momentum: float, unit: bool = False) -> None:
        """Move centres ``index`` (distinct) towards ``fresh`` embeddings of the same images:
        ``momentum * old + (1 - momentum) * fresh``; the neighbour lists stay as they are.
        With ``unit`` the moved centres are scaled back to unit length, as the embeddings of
        a network that normalises are: the mean of two unit vectors is shorter than both."""
        moved = self.features[index].mul_(momentum).add_(fresh.to(self.features.dtype), alpha=1 - momentum)
        if unit:
            moved = torch.nn.functional.normalize(moved, dim=1)
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
