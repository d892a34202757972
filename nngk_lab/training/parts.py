"""The trainable parts of a run: the network, the NNGK loss module (its kernel weights and
bank, :class:`nngk_lab.kernel.nngk_loss.NNGKLoss`), classifier head (softmax) or
pytorch-metric-learning loss (:mod:`nngk_lab.models.baselines`), and the optimiser over them."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..kernel.loss import KernelWeights
from ..kernel.nngk_loss import NNGKLoss
from ..models.backbones import build_model
from ..models.baselines import PML_LOSSES, BaselineLoss
from .config import TrainConfig


@dataclass
class Parts:
    """What a run trains. ``nngk`` is set for an NNGK run, ``head`` for softmax,
    ``criterion`` (with its proxies, if any) for a pytorch-metric-learning loss."""

    model: nn.Module
    nngk: NNGKLoss | None
    head: nn.Linear | None
    optimiser: torch.optim.Optimizer
    criterion: BaselineLoss | None = None

    @property
    def kernel_weights(self) -> KernelWeights | None:
        """The NNGK loss's kernel weights (None for the other losses)."""
        return None if self.nngk is None else self.nngk.kernel_weights

    def modules(self) -> dict[str, nn.Module | None]:
        """The checkpoint's names for the trained modules (None where a loss has none;
        checkpoints from before the baselines have no ``criterion``). The NNGK loss's kernel
        weights are saved as ``kernel_weights`` and its bank as the checkpoint's ``bank``,
        as before the loss was one module, so runs of either time load alike."""
        return {"model": self.model, "kernel_weights": self.kernel_weights, "head": self.head,
                "criterion": self.criterion}


def build_parts(config: TrainConfig, num_classes: int, num_train: int, device: torch.device) -> Parts:
    """Fresh parts for ``config`` (drawing their initial weights from torch's global
    generator), with one learning rate for the network and head and
    ``weight_learning_rate`` for the kernel weights or proxies."""
    model = build_model(config.model, embedding_dim=config.embedding_dim, final_relu=config.final_relu,
                        dropout=config.dropout, pretrained=config.pretrained,
                        normalise=config.unit_embeddings).to(device)
    model = model.to(memory_format=torch.channels_last)  # as EmbeddingNet takes its images
    weight_lr = config.weight_learning_rate or config.learning_rate
    if config.loss == "nngk":
        nngk, head = nngk_loss(config, num_classes, num_train).to(device), None
        groups = [{"params": model.parameters(), "lr": config.learning_rate},
                  {"params": [nngk.log_weights], "lr": weight_lr}]
        if config.sigma_learning_rate is not None:
            groups.append({"params": [nngk.kernel_weights.log_sigma], "lr": config.sigma_learning_rate})
    elif config.loss in PML_LOSSES:
        criterion = BaselineLoss(config.loss, num_classes, model.embedding_dim, *config.pml_options()).to(device)
        groups = [{"params": model.parameters(), "lr": config.learning_rate}]
        if list(criterion.parameters()):
            groups.append({"params": criterion.parameters(), "lr": weight_lr})
        return Parts(model, None, None, torch.optim.Adam(groups), criterion)
    else:
        nngk, head = None, nn.Linear(model.embedding_dim, num_classes).to(device)
        groups = [{"params": list(model.parameters()) + list(head.parameters()), "lr": config.learning_rate}]
    return Parts(model, nngk, head, torch.optim.Adam(groups))


def kernel_sigma(config: TrainConfig, kernel_weights: KernelWeights | None) -> float:
    """The kernel width a run's classifier uses: the learnt one (``--sigma_learning_rate``),
    else ``--sigma``."""
    learnt = None if kernel_weights is None else kernel_weights.learnt_sigma
    return config.sigma if learnt is None else learnt


def nngk_loss(config: TrainConfig, num_classes: int, num_train: int) -> NNGKLoss:
    """The NNGK loss module of a run with ``config``, over ``num_train`` training images."""
    return NNGKLoss(num_train, config.sigma, config.num_neighbours, num_classes, batch_kernels=config.batch_kernels,
                    fused=config.fused_loss, momentum=config.centre_momentum, unit_centres=config.unit_embeddings,
                    learn_sigma=config.sigma_learning_rate is not None)


def build_initial_parts(config: TrainConfig, num_classes: int, num_train: int, device: torch.device) -> Parts:
    """The parts exactly as a run with ``config`` starts: torch's global generator is
    seeded with ``config.seed`` first, so training and the untrained baseline of
    :mod:`nngk_lab.evaluate` get the same initial weights."""
    torch.manual_seed(config.seed)
    return build_parts(config, num_classes, num_train, device)
