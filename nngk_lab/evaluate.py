"""Evaluation: the kernel classifier on test images, and nearest-neighbour accuracy."""

from __future__ import annotations

import torch

from .bank import FeatureBank, nearest_neighbours
from .loss import kernel_log_probs

LOSS_CHUNK_ROWS = 1024


@torch.no_grad()
def kernel_predict_log_probs(queries: torch.Tensor, bank: FeatureBank, log_weights: torch.Tensor,
                             sigma: float, num_neighbours: int, num_classes: int,
                             chunk_size: int | None = None) -> torch.Tensor:
    """Test-time classification: each query's K nearest centres in the whole bank, then
    the per-class kernel sums as log-probabilities (Q, num_classes). K is capped at the
    bank size."""
    k = min(num_neighbours, len(bank))
    _, neighbours = nearest_neighbours(queries, bank.features, k, chunk_size=chunk_size)
    log_weights = log_weights.to(bank.features.device)
    return torch.cat([
        kernel_log_probs(queries[s:s + LOSS_CHUNK_ROWS], bank.features, bank.labels,
                         neighbours[s:s + LOSS_CHUNK_ROWS], log_weights, sigma, num_classes)
        for s in range(0, queries.shape[0], LOSS_CHUNK_ROWS)])


@torch.no_grad()
def nearest_neighbour_predict(queries: torch.Tensor, bank: FeatureBank) -> torch.Tensor:
    """Label of each query's single nearest centre (plain 1-NN)."""
    _, idx = nearest_neighbours(queries, bank.features, 1)
    return bank.labels[idx[:, 0]]


def accuracy(predictions: torch.Tensor, labels: torch.Tensor) -> float:
    if labels.numel() == 0:
        return float("nan")
    return float((predictions.to(labels.device) == labels).float().mean())
