"""Where the kernel loss moves an embedding: its gradient in closed form.

With ``p_i = k_i / sum_j k_j`` over the K neighbours and ``q_i = k_i / sum_{j: y_j = y} k_j``
over the neighbours of the query's own class,

    d loss / d x = (sum_i p_i c_i - sum_{i: y_i = y} q_i c_i) / sigma^2,

so a gradient step moves ``x`` from the kernel-weighted mean of all K neighbours towards
the kernel-weighted mean of those of its own class, by their distance over sigma^2.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..kernel.search import nearest_neighbours


def loss_gradient(queries: torch.Tensor, targets: torch.Tensor, centres: torch.Tensor, centre_labels: torch.Tensor,
                  neighbours: torch.Tensor, log_weights: torch.Tensor, sigma: float) -> torch.Tensor:
    """``d(-log p(y | x)) / dx`` (Q, D) for each query, from the closed form above; the
    neighbours (Q, K) index ``centres``. A query with no neighbour of its own class has
    no gradient (zeros), as in :func:`nngk_lab.kernel.loss.kernel_nll`."""
    gathered = centres[neighbours]                                           # (Q, K, D)
    logits = log_weights[neighbours] - ((queries.unsqueeze(1) - gathered) ** 2).sum(-1) / (2 * sigma ** 2)
    own = centre_labels[neighbours] == targets.unsqueeze(1)
    p_all = torch.softmax(logits, 1)
    p_own = torch.softmax(logits.masked_fill(~own, -torch.inf), 1).nan_to_num(0.0)
    gradient = ((p_all - p_own).unsqueeze(-1) * gathered).sum(1) / sigma ** 2
    return torch.where(own.any(1, keepdim=True), gradient, 0.0)


@dataclass(frozen=True)
class TrainingSteps:
    """For every centre taken as a query (itself excluded from its neighbours, as in
    training): the direction one gradient step of its own loss moves it."""

    points: torch.Tensor   # (N, D)
    steps: torch.Tensor    # (N, D) minus the gradient
    sigma: float
    k: int


def training_steps(centres: torch.Tensor, labels: torch.Tensor, sigma: float, k: int) -> TrainingSteps:
    """Each centre's step under the loss against its ``k`` nearest other centres, all weights 1."""
    centres = centres.double()
    k = max(1, min(int(k), len(centres) - 1))
    _, neighbours = nearest_neighbours(centres, centres, k, exclude_self=True, backend="torch")
    gradient = loss_gradient(centres, labels, centres, labels, neighbours,
                             torch.zeros(len(centres), dtype=torch.float64), float(sigma))
    return TrainingSteps(centres, -gradient, float(sigma), k)
