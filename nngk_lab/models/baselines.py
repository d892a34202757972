"""Peers of the kernel loss from pytorch-metric-learning (PML): NCA, ProxyNCA, Multi-
Similarity (with its miner) and contrastive (with a pair miner), each with PML's own
defaults, behind one module that a training step calls like the softmax head.

Every one of these losses measures distances between L2-normalised embeddings (PML's
default distances normalise), so a run with one of them normalises its network's output
(:func:`nngk_lab.models.build_model` ``normalise``): the embedding that evaluation and
retrieval see is the one the loss trained.

A mined loss can meet a batch in which its miner finds no pair (all pairs already
satisfy its margins, or no two images share a class), and NCA one in which no two images
share a class. Such a batch has loss 0 and a zero gradient (PML's NCA would give NaN);
:class:`BaselineLoss` counts such batches so that training can report them
(:meth:`BaselineLoss.take_report`) instead of silently taking empty steps.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError

PML_LOSSES = ("nca", "proxy_nca", "multi_similarity", "contrastive")
# The losses that pick pairs with a miner (the others use every pair or proxy).
MINED_LOSSES = ("multi_similarity", "contrastive")


def pml_parts(name: str, num_classes: int, embedding_dim: int, loss_options: dict | None = None,
              miner_options: dict | None = None) -> tuple[nn.Module, nn.Module | None]:
    """PML's loss (and miner) for ``name``: PML's default settings, with ``loss_options``
    and ``miner_options`` (keyword arguments of their constructors) over them."""
    from pytorch_metric_learning import losses, miners

    kinds = {"nca": (losses.NCALoss, None), "proxy_nca": (losses.ProxyNCALoss, None),
             "multi_similarity": (losses.MultiSimilarityLoss, miners.MultiSimilarityMiner),
             "contrastive": (losses.ContrastiveLoss, miners.PairMarginMiner)}
    if name not in kinds:
        raise ValueError(f"unknown baseline loss {name!r}; choose one of {', '.join(PML_LOSSES)}")
    loss_kind, miner_kind = kinds[name]
    loss_args = (num_classes, embedding_dim) if name == "proxy_nca" else ()
    loss = _construct(loss_kind, loss_args, loss_options or {}, "--loss_options")
    miner = _construct(miner_kind, (), miner_options or {}, "--miner_options") if miner_kind else None
    return loss, miner


def _construct(kind: type, args: tuple, options: dict, flag: str) -> nn.Module:
    try:
        return kind(*args, **options)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{flag} {options} do not fit pytorch-metric-learning's {kind.__name__}: "
                          f"{error}") from None


def in_batch_nearest_neighbour(features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Each image's prediction by 1-NN among the *other* images of its batch (Euclidean
    distance, which on unit vectors orders neighbours as cosine similarity does); -1,
    never a class, when the batch has a single image."""
    if features.shape[0] < 2:
        return torch.full_like(labels, -1)
    distances = torch.cdist(features.detach(), features.detach())
    distances.fill_diagonal_(float("inf"))
    return labels[distances.argmin(1)]


def pair_members(indices_tuple, batch_size: int, device) -> torch.Tensor:
    """(B,) bool: which images of the batch are in at least one mined pair."""
    member = torch.zeros(batch_size, dtype=torch.bool, device=device)
    for idx in indices_tuple:
        member[idx] = True
    return member


class BaselineLoss(nn.Module):
    """One PML loss (and its miner), called as ``loss(features, labels)`` and returning
    ``(loss, present, predictions)`` as :meth:`nngk_lab.training.step.TrainStep.loss` does:

    - ``present``: the images that contributed to the loss (in a mined pair; for NCA,
      having another image of their class in the batch; for ProxyNCA, all);
    - ``predictions``: in-batch 1-NN, for the running training accuracy.

    Its parameters (ProxyNCA's proxies) train with the network; its ``state_dict`` is
    saved in the checkpoint.
    """

    def __init__(self, name: str, num_classes: int, embedding_dim: int, loss_options: dict | None = None,
                 miner_options: dict | None = None):
        super().__init__()
        self.name = name
        self.loss, self.miner = pml_parts(name, num_classes, embedding_dim, loss_options, miner_options)
        self.batches = 0
        self.batches_without_pairs = 0

    def forward(self, features: torch.Tensor, labels: torch.Tensor):
        self.batches += 1
        pairs = self.miner(features, labels) if self.miner is not None else None
        if pairs is not None:
            present = pair_members(pairs, labels.shape[0], features.device)
        elif self.name == "nca":
            present = (labels.unsqueeze(0) == labels.unsqueeze(1)).sum(1) > 1
        else:
            present = torch.ones_like(labels, dtype=torch.bool)
        if not bool(present.any()):
            # PML's NCA averages over no terms here (NaN); every loss gets an exact zero
            # that still reaches the network, so the step runs like any other.
            self.batches_without_pairs += 1
            loss = (features * 0).sum()
        else:
            loss = self.loss(features, labels, pairs)
        return loss, present, in_batch_nearest_neighbour(features, labels)

    def take_report(self) -> str | None:
        """A sentence on the batches since the last call in which the miner found no pair
        (None when there were none); the counts start again from zero."""
        empty, total = self.batches_without_pairs, self.batches
        self.batches = self.batches_without_pairs = 0
        if not empty:
            return None
        what = "the miner found no pair" if self.miner is not None else "no two images shared a class"
        return (f"{self.name}: {what} in {empty} of {total} batches, so those steps had loss 0 "
                "and no gradient (their images count as absent in the history)")
