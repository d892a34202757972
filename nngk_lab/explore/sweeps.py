"""Sigma and K sweeps: the kernel classifier at test time over (sigma, K), and short
trainings over sigma. Everything returns plain tensors, arrays or dataclasses; ``viz`` draws them
and ``widgets`` wires them to sliders."""

from __future__ import annotations

from pathlib import Path

import torch

from ..evaluation.metrics import recall_at_k
from ..kernel.classify import (
    accuracy,
    kernel_predict_log_probs,
    nearest_neighbour_predict,
)
from ..kernel.loss import class_log_probs
from .cache import cached, fingerprint
from .distance_scale import neighbour_distances
from .embeddings import Embeddings, run_embeddings
from .notebook import train_or_load

# --------------------------------------------------------------------------- classifier

def classify(emb: Embeddings, sigma: float, k: int, queries: torch.Tensor | None = None) -> torch.Tensor:
    """Class probabilities (Q, num_trained) of the kernel classifier with this sigma and K,
    for ``queries`` (default: the test images), against the run's bank and kernel weights.

    For the test images the neighbour lists found once by
    :meth:`Embeddings.sorted_test_neighbours` are reused; other queries (or a K beyond
    those lists) go through :func:`nngk_lab.kernel.classify.kernel_predict_log_probs`.
    """
    k = min(int(k), len(emb.train))
    if queries is None:
        sq_dists, idx = emb.sorted_test_neighbours()
        if k <= idx.shape[1]:
            logits = emb.log_weights[idx[:, :k]] - sq_dists[:, :k] / (2.0 * float(sigma) ** 2)
            return class_log_probs(logits, emb.train_labels[idx[:, :k]], emb.num_trained).exp()
        queries = emb.test
    if queries.shape[0] == 0:
        return torch.empty(0, emb.num_trained)
    log_probs = kernel_predict_log_probs(queries, emb.bank.features, emb.bank.labels, float(sigma), k,
                                         emb.num_trained, emb.log_weights)
    return log_probs.exp()


def test_accuracy(emb: Embeddings, sigma: float, k: int) -> float:
    """Kernel-classifier accuracy on the trained classes' test images."""
    return accuracy(classify(emb, sigma, k).argmax(1), emb.test_labels)


def recall_at_1(features: torch.Tensor, labels: torch.Tensor) -> float:
    """Recall@1 of retrieval among ``features`` (e.g. the held-out classes' images): the
    share whose nearest other item has the same label (:func:`nngk_lab.evaluation.metrics.recall_at_k`)."""
    if features.shape[0] < 2:
        return float("nan")
    return recall_at_k(features, labels, ks=(1,))[1]


def test_time_sweep(emb: Embeddings, sigmas, ks, cache_path=None) -> dict:
    """Test accuracy of one trained embedding's classifier over a grid of sigma and K.

    Only the classifier changes (the embedding and the bank stay those of the run), so
    this is cheap. Returns ``sigmas``, ``ks``, ``accuracy`` and ``errors`` (each
    len(ks) x len(sigmas); errors are counts of the ``num_test`` test images), the number
    of centres ``num_centres`` (a K at least that large uses them all), the plain 1-NN
    accuracy, the median distance from a test image to its nearest centre (the scale a
    sigma is measured against), the held-out Recall@1 (independent of sigma and K:
    retrieval uses distances only) and the sigma the run was trained with. With
    ``cache_path`` the result is saved there and reused while the embeddings and the grid
    are unchanged.
    """
    sigmas, ks = [float(s) for s in sigmas], [int(k) for k in ks]
    num_test = int(emb.test.shape[0])

    def compute() -> dict:
        grid = [[test_accuracy(emb, s, k) for s in sigmas] for k in ks]
        nn_acc = accuracy(nearest_neighbour_predict(emb.test, emb.bank), emb.test_labels) \
            if num_test else float("nan")
        nearest = emb.sorted_test_neighbours()[0][:, 0]
        return {"sigmas": sigmas, "ks": ks, "accuracy": grid, "num_test": num_test, "num_centres": len(emb.train),
                "errors": [[round((1 - a) * num_test) for a in row] for row in grid],
                "nearest_neighbour_accuracy": nn_acc,
                "median_nearest_distance": float(nearest.double().median().sqrt()) if num_test else float("nan"),
                "heldout_recall_at_1": recall_at_1(emb.heldout, emb.heldout_labels), "train_sigma": emb.sigma}

    if cache_path is None:
        return compute()
    key = fingerprint(emb.train, emb.test, emb.heldout, emb.log_weights, emb.sigma, sigmas, ks)
    return cached(cache_path, compute, {"inputs": key, "version": 2})


def training_sigma_sweep(sigmas, sweep_dir, device="cpu", **config) -> dict:
    """Short trainings at several sigmas (one run folder each, reused when finished):
    for each, the test accuracy and error count (of ``num_test`` images) with the training
    sigma and K, the held-out Recall@1, and the kernel value ``exp(-d^2 / (2 sigma^2))`` at
    the median squared distance from a centre to its K-th nearest centre (near 1: all K
    neighbours vote alike).

    ``config`` holds the other :func:`nngk_lab.training.config.make_config` settings (e.g. ``max_epochs``).
    """
    sweep_dir = Path(sweep_dir)
    rows = []
    for sigma in sigmas:
        run_dir = sweep_dir / f"sigma_{float(sigma):g}"
        run = train_or_load(run_dir, device, **{**config, "sigma": float(sigma)})
        emb = run_embeddings(run_dir, device, run)
        acc = test_accuracy(emb, emb.sigma, emb.num_neighbours)
        distances = neighbour_distances(emb.train, emb.train_labels, emb.num_neighbours)
        rows.append({"sigma": float(sigma), "epochs": len(run.history), "accuracy": acc,
                     "errors": round((1 - acc) * len(emb.test)), "num_test": len(emb.test),
                     "heldout_recall_at_1": recall_at_1(emb.heldout, emb.heldout_labels),
                     "kth_neighbour_kernel": distances.summary(emb.sigma)["kth_nearest_kernel"]})
    return {"sigmas": [r["sigma"] for r in rows], "epochs": [r["epochs"] for r in rows],
            "accuracy": [r["accuracy"] for r in rows], "errors": [r["errors"] for r in rows],
            "heldout_recall_at_1": [r["heldout_recall_at_1"] for r in rows],
            "kth_neighbour_kernel": [r["kth_neighbour_kernel"] for r in rows],
            "num_test": rows[0]["num_test"] if rows else 0}
