"""One training step (forward, loss, backward, optimiser step) and the epoch's running sums."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ..kernel.bank import FeatureBank
from ..kernel.loss import (
    KernelLoss,
    KernelWeights,
    class_log_probs,
    kernel_nll,
    kernel_nll_with_batch,
)

EPOCH_SUMS = ("loss", "correct", "absent", "present")


@dataclass
class StepResult:
    """What one training step leaves for the epoch's running sums. All of it stays on the
    device: reading a value would make the host wait for the device at every step."""

    loss: torch.Tensor         # the batch's loss, detached
    present: torch.Tensor      # (B,) bool: the query had a neighbour of its own class
    predictions: torch.Tensor  # (B,) predicted classes, for the running accuracy
    labels: torch.Tensor       # (B,) true classes


@dataclass
class TrainStep:
    """One optimiser step on one batch, exactly as :func:`nngk_lab.train.train` takes it; the benchmarks
    in bench/ time this same object.

    An NNGK run passes ``kernel_weights`` and the loss function ``nll``
    (:func:`nngk_lab.kernel.loss.kernel_nll` or the fused one), a softmax run its ``head``, a
    pytorch-metric-learning run its ``criterion`` (:class:`nngk_lab.models.baselines.BaselineLoss`).
    ``amp`` runs the network under bf16 autocast. With ``centre_momentum`` m, each
    image's centre in the bank moves to m * centre + (1 - m) * its new embedding after the
    step (an online update, as memory-bank methods keep their bank fresh), back on the unit
    sphere with ``unit_centres`` (for a network that normalises). With ``batch_kernels``
    the loss is :func:`nngk_lab.kernel.loss.kernel_nll_with_batch`, where the batch's own images
    are centres too, at their current embeddings. In a distributed
    run ``model`` is the DistributedDataParallel wrapper, ``loss_share`` scales this
    process's loss (given its ``present`` samples) so that the averaged gradient is the
    global batch's, and ``gather`` collects every process's (index, embeddings) so that all
    banks move alike.
    """

    model: nn.Module
    optimiser: torch.optim.Optimizer
    kernel_weights: KernelWeights | None
    head: nn.Linear | None
    sigma: float
    num_classes: int
    device: torch.device
    amp: bool = False
    nll: Callable[..., KernelLoss] = kernel_nll
    criterion: nn.Module | None = None
    centre_momentum: float | None = None
    unit_centres: bool = False
    batch_kernels: bool = False
    loss_share: Callable[[torch.Tensor], torch.Tensor] | None = None
    gather: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None

    def __post_init__(self):
        self._autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The network's float32 embeddings of ``images`` (already on the device)."""
        with self._autocast:
            features = self.model(images)
        return features.float()

    def loss(self, features: torch.Tensor, labels: torch.Tensor, index: torch.Tensor,
             bank: FeatureBank | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(loss, present, predictions)`` of a batch of embeddings with true ``labels``;
        ``index`` gives each image's place in the bank, whose neighbour lists the NNGK loss
        uses (the other losses need neither)."""
        if self.criterion is not None:
            return self.criterion(features, labels)
        if self.kernel_weights is None:
            logits = self.head(features)
            return (nn.functional.cross_entropy(logits, labels), torch.ones_like(labels, dtype=torch.bool),
                    logits.argmax(1))
        index = index.to(self.device, non_blocking=True)
        neighbours = bank.neighbours[index]
        if self.batch_kernels:
            out = kernel_nll_with_batch(features, labels, index, bank.features, bank.labels, neighbours,
                                        self.kernel_weights.log_weights, self.sigma, self.num_classes, bank.sq_norms)
        else:
            out = self.nll(features, labels, bank.features, bank.labels, neighbours,
                           self.kernel_weights.log_weights, self.sigma, bank.sq_norms)
        predictions = out.predictions
        if predictions is None:
            with torch.no_grad():
                predictions = class_log_probs(out.logits.detach(), bank.labels[neighbours],
                                              self.num_classes).argmax(1)
        return out.loss, out.present, predictions

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, index: torch.Tensor,
                 bank: FeatureBank | None) -> StepResult:
        """Forward, loss, backward and optimiser step on one batch from the loader."""
        images = images.to(self.device, non_blocking=True)
        labels = labels.to(self.device, non_blocking=True)
        features = self.features(images)
        loss, present, predictions = self.loss(features, labels, index, bank)
        self.optimiser.zero_grad(set_to_none=True)
        (loss if self.loss_share is None else loss * self.loss_share(present)).backward()
        self.optimiser.step()
        if self.centre_momentum is not None and bank is not None:  # after backward, which reads the centres
            index, fresh = index.to(self.device, non_blocking=True), features.detach()
            if self.gather is not None:
                index, fresh = self.gather(index, fresh)
            bank.move_centres(index, fresh, self.centre_momentum, self.unit_centres)
        return StepResult(loss.detach(), present, predictions, labels)


def add_to_sums(sums: dict[str, torch.Tensor], step: StepResult) -> None:
    """Add one step to the running sums of :data:`EPOCH_SUMS` (tensors on the device), in place."""
    n_present = step.present.sum()
    sums["loss"] += step.loss * n_present
    sums["present"] += n_present
    sums["absent"] += step.labels.numel() - n_present
    sums["correct"] += (step.predictions == step.labels).sum()
