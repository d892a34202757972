"""Evaluation metrics, pure functions of embeddings and labels, measured the same way
for every run:

- **Classification** of test images of the trained classes: the kernel classifier (each
  query's K nearest centres, argmax of the per-class kernel sums), plain 1-nearest-
  neighbour, and for a softmax run its classifier head.
- **Retrieval** on the held-out classes, never seen in training: Recall@K (a query is a
  hit when at least one of its K nearest *other* images shares its class), MAP@R and NMI
  (k-means with as many clusters as classes, from scikit-learn).

Every neighbour search goes through :func:`nngk_lab.kernel.search.nearest_neighbours` a chunk of
queries at a time, so memory stays bounded (never an N x N matrix)."""

from __future__ import annotations

import warnings
from typing import Iterator, Sequence

import torch
from tqdm.auto import tqdm

from ..kernel.search import auto_chunk_rows, drop_self, nearest_neighbours

RECALL_KS = (1, 2, 4, 8)


# ---------------------------------------------------------------------------------------
# Retrieval metrics


def _check_retrieval_inputs(features: torch.Tensor, labels: torch.Tensor) -> None:
    if features.dim() != 2 or labels.dim() != 1 or features.shape[0] != labels.shape[0]:
        raise ValueError(f"features {tuple(features.shape)} and labels {tuple(labels.shape)} "
                         "must be (N, D) and (N,)")
    if features.shape[0] < 2:
        raise ValueError(f"retrieval needs at least 2 items, got {features.shape[0]}")


def _neighbour_labels(features: torch.Tensor, labels: torch.Tensor, k: int, chunk_size: int | None,
                      progress: bool, desc: str, backend: str) -> Iterator[tuple[slice, torch.Tensor]]:
    """Yield ``(rows, labels of the k nearest other items of each query in rows)``, a
    chunk of queries at a time, nearest first.

    Each chunk asks :func:`nearest_neighbours` for k + 1 neighbours and
    :func:`nngk_lab.kernel.search.drop_self` removes the query itself, so the output of one chunk
    (rows, k) is never larger than the search's own (rows, N) distance block.
    """
    n = features.shape[0]
    labels = labels.to(features.device)
    rows = chunk_size or auto_chunk_rows(n, features.device)
    for start in tqdm(range(0, n, rows), desc=desc, disable=not progress, leave=False):
        stop = min(start + rows, n)
        _, idx = drop_self(*nearest_neighbours(features[start:stop], features, k + 1, chunk_size=rows,
                                               backend=backend), start)
        yield slice(start, stop), labels[idx]


def recall_at_k(features: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = RECALL_KS,
                chunk_size: int | None = None, progress: bool = False, backend: str = "auto") -> dict[int, float]:
    """Recall@K for each K in ``ks``: the share of queries with at least one item of their
    own class among their K nearest *other* items (squared Euclidean distance).

    Every item is a query and every other item is in the database. A query whose class
    has no other item can never hit and still counts (the standard definition).
    ``backend``: the neighbour search's (:func:`nngk_lab.kernel.search.nearest_neighbours`).
    """
    _check_retrieval_inputs(features, labels)
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1 or ks[-1] > features.shape[0] - 1:
        raise ValueError(f"each K must be in 1..{features.shape[0] - 1} (items - 1), got {ks}")
    hits = torch.zeros(len(ks), dtype=torch.float64)
    for rows, neighbour_labels in _neighbour_labels(features, labels, ks[-1], chunk_size, progress, "recall@K",
                                                    backend):
        same = neighbour_labels == labels[rows].to(neighbour_labels.device).unsqueeze(1)
        hit_within = same.cumsum(1) > 0  # hit_within[:, j]: a match among the first j + 1
        hits += hit_within[:, [k - 1 for k in ks]].sum(0).double().cpu()
    return {k: float(h) / features.shape[0] for k, h in zip(ks, hits)}


def map_at_r(features: torch.Tensor, labels: torch.Tensor, chunk_size: int | None = None,
             progress: bool = False, backend: str = "auto") -> float:
    """MAP@R (Musgrave et al., "A Metric Learning Reality Check", 2020).

    For a query whose class has R other items, take its R nearest other items; its score
    is ``(1/R) * sum_{i<=R} P(i) * rel(i)``, where rel(i) says whether the i-th is of its
    class and P(i) is the precision among the first i. MAP@R is the mean over queries;
    queries whose class has no other item (R = 0) are left out. NaN if every query is.
    """
    _check_retrieval_inputs(features, labels)
    _, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    r_all = (counts[inverse] - 1).to(features.device)
    r_max = int(r_all.max())
    if r_max == 0:
        return float("nan")
    ranks = torch.arange(1, r_max + 1, device=features.device, dtype=torch.float64)
    total, valid = 0.0, int((r_all > 0).sum())
    for rows, neighbour_labels in _neighbour_labels(features, labels, r_max, chunk_size, progress, "MAP@R",
                                                    backend):
        r = r_all[rows]
        same = neighbour_labels == labels[rows].to(neighbour_labels.device).unsqueeze(1)
        relevant = (same & (ranks <= r.unsqueeze(1))).double()
        precision = relevant.cumsum(1) / ranks
        total += float(((precision * relevant).sum(1) / r.clamp_min(1)).sum())  # R = 0 rows add 0
    return total / valid


def nmi(features: torch.Tensor, labels: torch.Tensor, seed: int = 0, n_init: int = 3) -> float:
    """Normalised mutual information between the labels and a k-means clustering of the
    features into as many clusters as there are classes (scikit-learn's ``KMeans``,
    ``n_init`` k-means++ starts from ``seed``; arithmetic-mean normalisation)."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import normalized_mutual_info_score

    _check_retrieval_inputs(features, labels)
    labels = labels.cpu().numpy()
    num_clusters = len(set(labels.tolist()))
    clusters = KMeans(n_clusters=num_clusters, n_init=n_init, random_state=seed).fit_predict(
        features.detach().float().cpu().numpy())
    return float(normalized_mutual_info_score(labels, clusters))


def retrieval_metrics(features: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = RECALL_KS,
                      seed: int = 0, chunk_size: int | None = None, progress: bool = False,
                      with_nmi: bool = True, backend: str = "auto") -> dict[str, float]:
    """Recall@K (for the K in ``ks`` that are below the number of items), MAP@R and NMI,
    as ``{"recall@1": ..., "map@r": ..., "nmi": ...}``; without ``with_nmi``, no NMI (its
    k-means into as many clusters as classes takes long on thousands of classes).

    With fewer than two classes every neighbour shares the query's class, so each measure
    would be a perfect 1.0 whatever the features: they are NaN instead, with a warning.
    """
    _check_retrieval_inputs(features, labels)
    ks = [k for k in ks if k <= features.shape[0] - 1]
    if labels.unique().numel() < 2:
        warnings.warn("retrieval needs at least 2 classes to mean anything, but all images are of one class; "
                      "Recall@K, MAP@R and NMI are NaN (hold out more classes: a smaller --num_classes)",
                      stacklevel=2)
        return {**{f"recall@{k}": float("nan") for k in ks}, "map@r": float("nan"),
                **({"nmi": float("nan")} if with_nmi else {})}
    result = {f"recall@{k}": v for k, v in recall_at_k(features, labels, ks, chunk_size, progress, backend).items()} \
        if ks else {}
    result["map@r"] = map_at_r(features, labels, chunk_size, progress, backend)
    if with_nmi:
        result["nmi"] = nmi(features, labels, seed)
    return result
