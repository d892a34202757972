"""Adding classes to a trained run: what a nearest-neighbour classifier allows.

A few images of each held-out class are embedded and *added to the bank* as centres
(weight 1); the kernel classifier then names those classes with no training at all. A
softmax classifier has one output per class it was trained on, so new classes need a new
head, trained on the same few images (here: a linear head on the frozen embedding, fitted
to the whole bank, trained centres and shots alike).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..kernel.classify import kernel_predict_log_probs
from .embeddings import Embeddings

HEAD_STEPS = 300
HEAD_LEARNING_RATE = 0.05


@dataclass(frozen=True)
class FewShot:
    """Accuracy on the held-out images that were not shots, among all classes."""

    shots: int
    num_queries: int
    kernel_accuracy: float   # the bank plus the shots, nothing trained
    head_accuracy: float     # a new linear softmax head, trained on the bank plus the shots
    head_steps: int

    def text(self) -> str:
        return (f"{self.shots} images of each held-out class added; {self.num_queries} other held-out images "
                f"classified among all classes: kernel classifier (nothing trained) {self.kernel_accuracy:.3f}, "
                f"new softmax head ({self.head_steps} Adam steps) {self.head_accuracy:.3f}")


def pick_shots(labels: torch.Tensor, shots: int, seed: int = 0) -> torch.Tensor:
    """A boolean mask choosing ``shots`` random items of each label (all of a label with fewer)."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(len(labels), dtype=torch.bool)
    for label in labels.unique():
        members = (labels == label).nonzero().squeeze(1)
        mask[members[torch.randperm(len(members), generator=g)[:shots]]] = True
    return mask


def train_head(features: torch.Tensor, labels: torch.Tensor, num_classes: int, steps: int = HEAD_STEPS,
               seed: int = 0) -> torch.nn.Linear:
    """A linear softmax head fitted to frozen features by full-batch Adam (cross-entropy)."""
    torch.manual_seed(seed)
    head = torch.nn.Linear(features.shape[1], num_classes).double()
    optimiser = torch.optim.Adam(head.parameters(), lr=HEAD_LEARNING_RATE)
    features = features.double()
    for _ in range(steps):
        optimiser.zero_grad()
        torch.nn.functional.cross_entropy(head(features), labels).backward()
        optimiser.step()
    return head


def few_shot(emb: Embeddings, shots: int = 5, seed: int = 0, head_steps: int = HEAD_STEPS) -> FewShot:
    """Add ``shots`` images of each held-out class to the bank and classify the other
    held-out images with the kernel classifier (the run's sigma, K and weights; the new
    centres weight 1) and with a new softmax head."""
    if shots < 1:
        raise ValueError(f"shots must be at least 1, got {shots}")
    chosen = pick_shots(emb.heldout_labels, shots, seed)
    if chosen.all():
        raise ValueError(f"every held-out class has at most {shots} images: none would be left to classify")
    centres = torch.cat([emb.train, emb.heldout[chosen]])
    labels = torch.cat([emb.train_labels, emb.heldout_labels[chosen]])
    log_weights = torch.cat([emb.log_weights, torch.zeros(int(chosen.sum()), dtype=emb.log_weights.dtype)])
    queries, truth = emb.heldout[~chosen], emb.heldout_labels[~chosen]
    num_classes = len(emb.class_names)
    k = min(emb.num_neighbours, len(centres))
    kernel = kernel_predict_log_probs(queries, centres, labels, emb.sigma, k, num_classes, log_weights).argmax(1)
    head = train_head(centres, labels, num_classes, head_steps, seed)
    with torch.no_grad():
        by_head = head(queries.double()).argmax(1)
    return FewShot(shots, len(truth), float((kernel == truth).double().mean()),
                   float((by_head == truth).double().mean()), head_steps)
