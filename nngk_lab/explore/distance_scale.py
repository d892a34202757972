"""The scales that decide what the kernel does in practice: the embedding's squared
distances measured against sigma, and how far Adam can move the kernel weights.

The embedding is not normalised, so a sigma means nothing on its own: with
``d^2 / (2 sigma^2)`` near 0 for every neighbour, all K neighbours vote equally; with it
large for all but the nearest, the nearest centre decides alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..kernel.search import nearest_neighbours


@dataclass
class NeighbourDistances:
    """Squared distances from each query (a training image, itself left out) to centres
    of the same embedding, each row sorted nearest first."""

    same: torch.Tensor    # (Q, k) to its k nearest centres of its own class
    other: torch.Tensor   # (Q, k) to its k nearest centres of the other classes
    k: int

    def kth_nearest(self) -> torch.Tensor:
        """(Q,) squared distance to the k-th nearest centre of any class: the farthest
        neighbour the kernel classifier with K = k looks at."""
        return torch.cat([self.same, self.other], 1).sort(1).values[:, self.k - 1]

    def summary(self, sigma: float) -> dict[str, float]:
        """Medians over the queries of the squared distance to the nearest same-class
        centre, the k-th nearest centre and the nearest other-class centre, and the kernel
        value ``exp(-d^2 / (2 sigma^2))`` (weight 1) at each."""
        out = {}
        for name, values in (("nearest_same", self.same[:, 0]), ("kth_nearest", self.kth_nearest()),
                             ("nearest_other", self.other[:, 0])):
            d2 = float(values.double().median())
            out[name] = d2
            out[f"{name}_kernel"] = math.exp(-d2 / (2.0 * sigma ** 2))
        return out

    def describe(self, sigma: float) -> str:
        """:meth:`summary` as one line of text."""
        s = self.summary(sigma)
        parts = [f"{what} {s[key]:.3g} (kernel {s[key + '_kernel']:.3g})"
                 for key, what in (("nearest_same", "nearest same-class centre"),
                                   ("kth_nearest", f"{self.k}th nearest centre"),
                                   ("nearest_other", "nearest other-class centre"))]
        return "median d\u00b2 to the " + ", to the ".join(parts)


def neighbour_distances(features: torch.Tensor, labels: torch.Tensor, k: int) -> NeighbourDistances:
    """For every row of ``features`` (the centres of one embedding), the squared
    distances to its ``k`` nearest same-class centres (itself excluded) and its ``k``
    nearest other-class centres, searched class by class in bounded memory.

    ``k`` is capped by the smallest class (minus the query itself) and by the number of
    other-class centres, so that every row has the same length.
    """
    features, labels = features.float(), torch.as_tensor(labels)
    classes, counts = labels.unique(return_counts=True)
    if len(classes) < 2:
        raise ValueError("neighbour_distances needs centres of at least two classes")
    k = min(int(k), int(counts.min()) - 1, len(labels) - int(counts.max()))
    if k < 1:
        raise ValueError("every class needs at least two centres to have a same-class neighbour")
    same = torch.empty(len(labels), k)
    other = torch.empty(len(labels), k)
    for c in classes:
        members = labels == c
        queries = features[members]
        same[members] = nearest_neighbours(queries, queries, k, exclude_self=True)[0].cpu()
        other[members] = nearest_neighbours(queries, features[~members], k)[0].cpu()
    return NeighbourDistances(same, other, k)


# torch.optim.Adam's defaults, which nngk_lab.train uses.
ADAM_BETAS = (0.9, 0.999)


@dataclass
class WeightMovement:
    """How far the kernel weights moved in a run, against how far Adam could move them.

    Adam's step on one parameter is about its learning rate at most (Kingma & Ba 2015,
    section 2.1); only a gradient that reappears after a run of zeros (a centre that was
    nobody's neighbour for a while) can take a step of up to lr (1 - beta1) / sqrt(1 - beta2).
    """

    steps: int                 # optimiser steps taken
    learning_rate: float       # of the kernel weights
    largest_move: float        # max |v| over the centres (v starts at 0)
    weights: torch.Tensor      # w = exp(v), one per centre

    @property
    def bound(self) -> float:
        """steps x lr: about the most a log-weight v can move."""
        return self.steps * self.learning_rate

    @property
    def worst_case(self) -> float:
        """The bound with every step at Adam's largest possible step."""
        beta1, beta2 = ADAM_BETAS
        return self.bound * (1 - beta1) / math.sqrt(1 - beta2)

    def text(self) -> str:
        w = self.weights
        return (f"kernel weights w = exp(v): min {float(w.min()):.4f}, median {float(w.median()):.4f}, "
                f"max {float(w.max()):.4f}; largest |v| = {self.largest_move:.4f}\n"
                f"Adam moves v by about its learning rate per step at most: {self.steps} steps x "
                f"{self.learning_rate:g} = {self.bound:.4g}, so w stays within about "
                f"[{math.exp(-self.bound):.3g}, {math.exp(self.bound):.3g}] "
                f"(never beyond [{math.exp(-self.worst_case):.3g}, {math.exp(self.worst_case):.3g}])")


def weight_movement(run) -> WeightMovement:
    """:class:`WeightMovement` of a loaded run (``nngk_lab.training.runs.LoadedRun``) with kernel
    weights: its steps are its finished epochs x batches per epoch (the last batch may be
    smaller; a run stopped mid-epoch by ``--max_time`` took a few more, not counted)."""
    if run.kernel_weights is None:
        raise ValueError("this run has no kernel weights (it was trained with the softmax loss)")
    config = run.config
    steps = len(run.history) * math.ceil(len(run.bank) / config.batch_size)
    lr = config.weight_learning_rate or config.learning_rate
    log_weights = run.kernel_weights.log_weights.detach().cpu()
    return WeightMovement(steps, float(lr), float(log_weights.abs().max()), log_weights.exp())
