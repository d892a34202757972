"""Classification with a feature bank: the kernel classifier (each query's K nearest
centres, argmax of the per-class kernel sums), plain 1-nearest-neighbour, and accuracy.
Training measures its test images with it and :mod:`nngk_lab.evaluation.run` a saved run."""

from __future__ import annotations

import torch
from torch import nn

from .bank import FeatureBank
from .loss import kernel_log_probs
from .search import nearest_neighbours

LOSS_CHUNK_ROWS = 1024


def _kernel_neighbours(queries: torch.Tensor, centres: torch.Tensor, num_neighbours: int,
                       chunk_size: int | None = None) -> torch.Tensor:
    """Indices (Q, K) of each query's K nearest centres, nearest first; K is capped at the
    number of centres."""
    k = min(num_neighbours, len(centres))
    return nearest_neighbours(queries, centres, k, chunk_size=chunk_size)[1]


def _kernel_log_probs(queries: torch.Tensor, centres: torch.Tensor, labels: torch.Tensor, neighbours: torch.Tensor,
                      log_weights: torch.Tensor | None, sigma: float, num_classes: int) -> torch.Tensor:
    if log_weights is None:  # every kernel weight 1 (a softmax run has none)
        log_weights = torch.zeros(len(centres), dtype=centres.dtype, device=centres.device)
    log_weights = log_weights.to(centres.device)
    return torch.cat([
        kernel_log_probs(queries[s:s + LOSS_CHUNK_ROWS], centres, labels, neighbours[s:s + LOSS_CHUNK_ROWS],
                         log_weights, sigma, num_classes)
        for s in range(0, queries.shape[0], LOSS_CHUNK_ROWS)])


@torch.no_grad()
def kernel_predict_log_probs(queries: torch.Tensor, centres: torch.Tensor, labels: torch.Tensor, sigma: float,
                             num_neighbours: int, num_classes: int, log_weights: torch.Tensor | None = None,
                             chunk_size: int | None = None) -> torch.Tensor:
    """Test-time classification: each query's K nearest ``centres`` (with ``labels`` and
    kernel ``log_weights``, all 0 if None), then the per-class kernel sums as
    log-probabilities (Q, num_classes). K is capped at the number of centres. Any points
    and centres work: a bank's, or the 2-D toy problem's."""
    neighbours = _kernel_neighbours(queries, centres, num_neighbours, chunk_size)
    return _kernel_log_probs(queries, centres, labels, neighbours, log_weights, sigma, num_classes)


@torch.no_grad()
def nearest_neighbour_predict(queries: torch.Tensor, bank: FeatureBank) -> torch.Tensor:
    """Label of each query's single nearest centre (plain 1-NN)."""
    _, idx = nearest_neighbours(queries, bank.features, 1)
    return bank.labels[idx[:, 0]]


def accuracy(predictions: torch.Tensor, labels: torch.Tensor) -> float:
    if labels.numel() == 0:
        return float("nan")
    return float((predictions.to(labels.device) == labels).float().mean())


@torch.no_grad()
def classification_metrics(queries: torch.Tensor, labels: torch.Tensor, bank: FeatureBank,
                           log_weights: torch.Tensor | None, sigma: float, num_neighbours: int,
                           num_classes: int, head: nn.Module | None = None) -> dict[str, float]:
    """Accuracy of the kernel classifier, of 1-NN on the bank, and of ``head`` if given
    (a softmax run's classifier), for query embeddings ``queries`` with true ``labels``.
    ``log_weights`` None means every kernel weight is 1 (a softmax run has none)."""
    neighbours = _kernel_neighbours(queries, bank.features, num_neighbours)  # one search: 1-NN is the first
    log_probs = _kernel_log_probs(queries, bank.features, bank.labels, neighbours, log_weights, sigma, num_classes)
    result = {"kernel_accuracy": accuracy(log_probs.argmax(1), labels),
              "nearest_neighbour_accuracy": accuracy(bank.labels[neighbours[:, 0]], labels)}
    if head is not None:
        result["softmax_accuracy"] = accuracy(head(queries).argmax(1), labels)
    return result
