"""One training step (forward, loss, backward, optimiser step) and the epoch's running sums."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

# "grad_norm" and "steps" give the mean gradient norm of the network's parameters per step;
# "staleness" (NNGK) the mean distance, in kernel widths, of an image from its stored centre.
EPOCH_SUMS = ("loss", "correct", "absent", "present", "grad_norm", "steps", "staleness")


@dataclass
class StepResult:
    """What one training step leaves for the epoch's running sums. All of it stays on the
    device: reading a value would make the host wait for the device at every step."""

    loss: torch.Tensor         # the batch's loss, detached
    present: torch.Tensor      # (B,) bool: the query had a neighbour of its own class
    predictions: torch.Tensor  # (B,) predicted classes, for the running accuracy
    labels: torch.Tensor       # (B,) true classes
    grad_norm: torch.Tensor    # the network's gradient norm (all parameters together)
    staleness: torch.Tensor | float = 0.0  # NNGK: sum of ||x - its stored centre|| / sigma over the batch


@dataclass
class TrainStep:
    """One optimiser step on one batch, exactly as :func:`nngk_lab.train.train` takes it; the benchmarks
    in bench/ time this same object.

    An NNGK run passes its loss module ``nngk`` (:class:`nngk_lab.kernel.nngk_loss.NNGKLoss`, which
    holds the bank, the kernel weights and the choice of the plain or fused loss), a softmax
    run its ``head``, a pytorch-metric-learning run its ``criterion``
    (:class:`nngk_lab.models.baselines.BaselineLoss`). ``amp`` runs the network under bf16
    autocast. With ``online_centres`` each image's centre moves towards its new embedding
    after the step (``NNGKLoss.update``). In a distributed run ``model`` is the
    DistributedDataParallel wrapper and ``loss_share`` scales this process's loss (given its
    ``present`` samples) so that the averaged gradient is the global batch's.
    """

    model: nn.Module
    optimiser: torch.optim.Optimizer
    nngk: nn.Module | None  # an NNGKLoss: step.py leaves it unimported, to keep the import chains short
    head: nn.Linear | None
    device: torch.device
    amp: bool = False
    criterion: nn.Module | None = None
    online_centres: bool = False
    loss_share: Callable[[torch.Tensor], torch.Tensor] | None = None

    def __post_init__(self):
        self._autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The network's float32 embeddings of ``images`` (already on the device)."""
        with self._autocast:
            features = self.model(images)
        return features.float()

    def loss(self, features: torch.Tensor, labels: torch.Tensor,
             index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(loss, present, predictions)`` of a batch of embeddings with true ``labels``;
        ``index`` gives each image's place in the NNGK loss's bank (the other losses need
        neither). Labels and index may be the loader's, on the CPU."""
        if self.nngk is not None:
            out = self.nngk.compute(features, labels, index)
            return out.loss, out.present, out.predictions
        labels = labels.to(self.device, non_blocking=True)
        if self.criterion is not None:
            return self.criterion(features, labels)
        logits = self.head(features)
        return nn.functional.cross_entropy(logits, labels), torch.ones_like(labels, dtype=torch.bool), logits.argmax(1)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, index: torch.Tensor) -> StepResult:
        """Forward, loss, backward and optimiser step on one batch from the loader."""
        images = images.to(self.device, non_blocking=True)
        features = self.features(images)
        loss, present, predictions = self.loss(features, labels, index)
        self.optimiser.zero_grad(set_to_none=True)
        (loss if self.loss_share is None else loss * self.loss_share(present)).backward()
        grad_norm = nn.utils.get_total_norm([p.grad for p in self.model.parameters() if p.grad is not None])
        self.optimiser.step()
        staleness = 0.0 if self.nngk is None else self.nngk.staleness(features, index)
        if self.online_centres:  # after backward, which reads the centres
            self.nngk.update(features.detach(), index)
        return StepResult(loss.detach(), present, predictions, labels.to(self.device, non_blocking=True),
                          grad_norm, staleness)


def add_to_sums(sums: dict[str, torch.Tensor], step: StepResult) -> None:
    """Add one step to the running sums of :data:`EPOCH_SUMS` (tensors on the device), in place."""
    n_present = step.present.sum()
    sums["loss"] += step.loss * n_present
    sums["present"] += n_present
    sums["absent"] += step.labels.numel() - n_present
    sums["correct"] += (step.predictions == step.labels).sum()
    sums["grad_norm"] += step.grad_norm
    sums["steps"] += 1
    sums["staleness"] += step.staleness
