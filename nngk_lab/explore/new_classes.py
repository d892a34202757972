"""Adding classes to a trained run: what a nearest-neighbour classifier allows.

A few images of each held-out class are embedded and *stored* as centres (weight 1); the
kernel classifier then names those classes with no training at all. A softmax classifier
has one output per class it was trained on, so new classes need a new head, trained on
the same images (here: a linear head on the frozen embedding). Both are measured among the
new classes only (the shots are the whole bank) and among all classes (the shots join the
trained bank, where a handful of new centres compete with hundreds of old ones inside
each query's K neighbours: the kernel sums count class sizes).
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
    """Accuracy on the held-out images that were not shots: among the new (held-out)
    classes only, with the shots as the whole bank, and among all classes, with the shots
    added to the trained bank."""

    shots: int
    num_queries: int
    kernel_new: float   # kernel classifier, bank = the shots (nothing trained)
    head_new: float     # a new linear softmax head trained on the shots
    kernel_all: float   # kernel classifier, bank = the trained centres plus the shots
    head_all: float     # a new head over all classes, trained on that bank
    head_steps: int

    def text(self) -> str:
        return (f"{self.shots} images of each held-out class stored; {self.num_queries} other held-out images "
                "classified\n  among the held-out classes only: kernel classifier (nothing trained) "
                f"{self.kernel_new:.3f}, new softmax head ({self.head_steps} Adam steps) {self.head_new:.3f}\n"
                f"  among all classes (shots added to the trained bank): kernel classifier {self.kernel_all:.3f}, "
                f"new head {self.head_all:.3f}")


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


def predict_among(head: torch.nn.Linear, queries: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """The head's predicted class for each query, among ``classes`` only (a head trained
    on some classes can still score the others highest far from its training points)."""
    with torch.no_grad():
        logits = head(queries.double())
    allowed = torch.zeros(logits.shape[1], dtype=torch.bool)
    allowed[classes] = True
    return logits.masked_fill(~allowed, -torch.inf).argmax(1)


def _accuracies(centres, labels, log_weights, queries, truth, sigma, k, num_classes, steps, seed):
    """(kernel classifier, new head) accuracy of ``queries`` against one bank."""
    k = min(k, len(centres))
    kernel = kernel_predict_log_probs(queries, centres, labels, sigma, k, num_classes, log_weights).argmax(1)
    head = train_head(centres, labels, num_classes, steps, seed)
    by_head = predict_among(head, queries, labels.unique())
    return float((kernel == truth).double().mean()), float((by_head == truth).double().mean())


def few_shot(emb: Embeddings, shots: int = 5, seed: int = 0, head_steps: int = HEAD_STEPS) -> FewShot:
    """Store ``shots`` images of each held-out class and classify the other held-out images
    with the kernel classifier (the run's sigma and K; new centres weight 1, trained ones
    their learnt weights) and with a new softmax head, against two banks: the shots alone
    (the new classes only) and the trained centres plus the shots (all classes)."""
    if shots < 1:
        raise ValueError(f"shots must be at least 1, got {shots}")
    chosen = pick_shots(emb.heldout_labels, shots, seed)
    if chosen.all():
        raise ValueError(f"every held-out class has at most {shots} images: none would be left to classify")
    shot_features, shot_labels = emb.heldout[chosen], emb.heldout_labels[chosen]
    queries, truth = emb.heldout[~chosen], emb.heldout_labels[~chosen]
    num_classes = len(emb.class_names)
    common = (queries, truth, emb.sigma, emb.num_neighbours, num_classes, head_steps, seed)
    kernel_new, head_new = _accuracies(shot_features, shot_labels, torch.zeros(len(shot_labels)), *common)
    kernel_all, head_all = _accuracies(torch.cat([emb.train, shot_features]), torch.cat([emb.train_labels, shot_labels]),
                                       torch.cat([emb.log_weights, torch.zeros(len(shot_labels))]), *common)
    return FewShot(shots, len(truth), kernel_new, head_new, kernel_all, head_all, head_steps)
