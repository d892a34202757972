"""How sure the kernel classifier is, and where that certainty means nothing.

The ratio of two kernels, ``k_i / k_j = (w_i / w_j) exp(-(d_i^2 - d_j^2) / (2 sigma^2))``,
depends on the *difference* of squared distances, and ``d_i^2 - d_j^2 = 2 x.(c_j - c_i) +
|c_i|^2 - |c_j|^2`` grows linearly as the query ``x`` moves away from the data. So a query
far from every centre is classified *more* confidently, not less: the classifier has no
"don't know". :func:`confidence_along_ray` shows it on the 2-D toy problem, and
:func:`heldout_confidence` on real images of classes the bank does not hold.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..kernel.classify import kernel_predict_log_probs
from .embeddings import Embeddings
from .sweeps import classify


@dataclass(frozen=True)
class Ray:
    """The classifier's answer along a ray from the centres' mean: at each ``distance``,
    the ``predicted`` class and its probability ``confidence``."""

    distances: torch.Tensor    # (S,)
    confidence: torch.Tensor   # (S,) largest class probability
    predicted: torch.Tensor    # (S,) its class


def confidence_along_ray(centres: torch.Tensor, labels: torch.Tensor, sigma: float, k: int,
                         direction: tuple[float, ...], distances) -> Ray:
    """Classify queries at ``distances`` from the centres' mean along ``direction``
    (any non-zero vector; it is scaled to unit length), all kernel weights 1."""
    centres = centres.double()
    direction = torch.as_tensor(direction, dtype=torch.float64)
    if direction.shape != centres.shape[1:] or float(direction.norm()) == 0.0:
        raise ValueError(f"direction must be a non-zero vector of {centres.shape[1]} numbers, got {direction.tolist()}")
    distances = torch.as_tensor(distances, dtype=torch.float64)
    queries = centres.mean(0) + distances.unsqueeze(1) * (direction / direction.norm())
    probs = kernel_predict_log_probs(queries, centres, labels, float(sigma), int(k), int(labels.max()) + 1).exp()
    confidence, predicted = probs.max(1)
    return Ray(distances, confidence, predicted)


@dataclass(frozen=True)
class HeldoutConfidence:
    """The classifier's largest class probability for the trained classes' test images
    and for the held-out classes' images. A held-out image's true class has no centre in
    the bank, so every label it gets is wrong, however sure the classifier is."""

    sigma: float
    k: int
    test: torch.Tensor               # (T,) largest probability per test image
    test_correct: torch.Tensor       # (T,) bool: its prediction is the true class
    heldout: torch.Tensor            # (H,) largest probability per held-out image
    heldout_predicted: torch.Tensor  # (H,) the trained class it was given

    def share_at_least(self, threshold: float) -> tuple[float, float]:
        """The shares of test and of held-out images classified with probability >= threshold."""
        def share(values: torch.Tensor) -> float:
            return float((values >= threshold).double().mean()) if values.numel() else float("nan")
        return share(self.test), share(self.heldout)

    def text(self, threshold: float = 0.9) -> str:
        test, heldout = self.share_at_least(threshold)
        return (f"sigma = {self.sigma:g}, K = {self.k}: p >= {threshold:g} for {test:.0%} of the "
                f"{self.test.numel()} test images of trained classes and for {heldout:.0%} of the "
                f"{self.heldout.numel()} held-out images, every one of which gets a wrong label")


def heldout_confidence(emb: Embeddings, sigma: float | None = None, k: int | None = None) -> HeldoutConfidence:
    """Classify the test images and the held-out images with the run's bank (default: the
    run's sigma and K) and keep each one's largest class probability."""
    sigma = emb.sigma if sigma is None else float(sigma)
    k = emb.num_neighbours if k is None else int(k)
    test_probs = classify(emb, sigma, k)
    heldout_probs = classify(emb, sigma, k, queries=emb.heldout)
    test_max, test_pred = test_probs.max(1) if len(test_probs) else (torch.empty(0), torch.empty(0, dtype=torch.long))
    held_max, held_pred = heldout_probs.max(1) if len(heldout_probs) \
        else (torch.empty(0), torch.empty(0, dtype=torch.long))
    return HeldoutConfidence(sigma, k, test_max, test_pred == emb.test_labels, held_max, held_pred)


def most_confident(values: torch.Tensor, n: int) -> list[int]:
    """Indices of the ``n`` largest values, largest first (ties in index order)."""
    return torch.argsort(values, descending=True, stable=True)[:n].tolist()
