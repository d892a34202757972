"""The method as one loss module for any training loop: :class:`NNGKLoss` owns the bank of
centres (one per training image), their labels and neighbour lists, the per-centre kernel
weights and sigma, and is called like a pytorch-metric-learning loss, with the images'
places in the training set added::

    loss_fn = NNGKLoss(len(train_set), sigma=0.2, num_neighbours=20)
    optimiser = torch.optim.Adam([*model.parameters(), *loss_fn.parameters()])
    loss_fn.refresh(model, eval_loader)                 # embed every image, search
    for images, labels, indices in train_loader:        # a dataset that returns indices
        loss = loss_fn(model(images), labels, indices)

``python -m nngk_lab.train`` trains with this same module (:mod:`nngk_lab.training.step`).

**Under torchrun** no wrapper is needed, as no image's loss depends on another process's
embeddings: every process holds the whole bank. :meth:`NNGKLoss.refresh` (given the same
whole loader on every process) shares the embedding and the search among the processes;
:meth:`NNGKLoss.update` gathers every process's batch so that all banks move alike; the
value :meth:`NNGKLoss.forward` returns is scaled so that DistributedDataParallel's average
of the gradients is that of the global batch's mean loss. The kernel weights must be
averaged like the network's: put the loss in the DistributedDataParallel module with the
network, e.g. ``nngk_lab.distributed.wrap(model, [loss_fn], device, sync_bn=False)``.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.utils.data import Dataset

from .. import distributed
from ..errors import CheckpointError, ConfigError, DataError
from .bank import FeatureBank
from .fused_loss import fused_kernel_nll, fused_loss_usable
from .loss import KernelLoss, KernelWeights, class_log_probs, kernel_nll, kernel_nll_with_batch


class WithIndex(Dataset):
    """A dataset of ``(input, label, ...)`` items as one of ``(input, label, index)``, the
    index being the item's position: what :class:`NNGKLoss` and its refresh need."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        item = self.dataset[index]
        return item[0], item[1], index


class BanklessLoss(nn.Module):
    """A loss of ``(embeddings, labels)``, such as a pytorch-metric-learning one, with
    :class:`NNGKLoss`'s calls: it takes the indices too and ignores them, and its
    :meth:`refresh` and :meth:`update` do nothing, so a loop written for NNGKLoss trains it
    when only the line that makes the loss changes."""

    def __init__(self, loss: nn.Module):
        super().__init__()
        self.loss = loss

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        return self.loss(embeddings, labels)

    def refresh(self, model: nn.Module, loader, **_) -> None:
        """Nothing to refresh: the loss keeps no bank."""

    def update(self, embeddings: torch.Tensor, indices: torch.Tensor) -> None:
        """Nothing to move: the loss keeps no bank."""


class NNGKLoss(nn.Module):
    """The nearest-neighbour Gaussian kernel loss with its own feature bank.

    ``num_centres``: the training set's size (one centre per image); ``sigma``: the kernel
    width; ``num_neighbours``: K, the nearest centres each image's kernels use;
    ``num_classes``: for the predictions (default: the bank's largest label + 1).
    ``batch_kernels``: an image's kernels are also those of every other image of its batch
    at its current embedding (:func:`nngk_lab.kernel.loss.kernel_nll_with_batch`).
    ``fused``: on a GPU, the fused Triton loss once it has matched the plain one there
    (:func:`nngk_lab.kernel.fused_loss.fused_loss_usable`), else
    :func:`nngk_lab.kernel.loss.kernel_nll`. ``learn_sigma``: sigma is a parameter too
    (a learnt temperature, starting at ``sigma``; the plain loss then, as the fused one
    takes a fixed width); give it its own learning rate, as Adam moves ``log sigma`` by
    about the learning rate per step. :meth:`update` moves centres with ``momentum``,
    back to unit length with ``unit_centres`` (for a network that normalises).

    The kernel weights are the module's parameters (give them to the optimiser); the bank
    goes with :meth:`state_dict` and follows ``.to(device)``.
    """

    def __init__(self, num_centres: int, sigma: float, num_neighbours: int = 200, num_classes: int | None = None,
                 *, batch_kernels: bool = False, fused: bool = True, momentum: float = 0.5,
                 unit_centres: bool = False, chunk_size: int | None = None, learn_sigma: bool = False):
        super().__init__()
        if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma > 0):
            raise ConfigError(f"sigma must be a positive finite number, got {sigma!r}")
        if not 0 <= momentum < 1:
            raise ConfigError(f"momentum must be in [0, 1), got {momentum!r}")
        if num_neighbours < 1:
            raise ConfigError(f"num_neighbours must be at least 1, got {num_neighbours!r}")
        self.fixed_sigma, self.num_neighbours, self.given_num_classes = float(sigma), num_neighbours, num_classes
        self.batch_kernels, self.fused, self.momentum, self.unit_centres = batch_kernels, fused, momentum, unit_centres
        self.chunk_size = chunk_size
        self.kernel_weights = KernelWeights(num_centres, float(sigma) if learn_sigma else None)
        self._bank: FeatureBank | None = None
        self._host_labels: torch.Tensor | None = None  # checks read the labels here, without a device sync

    # -- what it holds --------------------------------------------------------------------

    @property
    def num_centres(self) -> int:
        return self.kernel_weights.log_weights.shape[0]

    @property
    def log_weights(self) -> torch.Tensor:
        """The trainable log kernel weights ``v_i`` (N,); the weight is ``exp(v_i)``."""
        return self.kernel_weights.log_weights

    @property
    def sigma(self) -> float:
        """The kernel width now: the learnt one with ``learn_sigma``, else as given."""
        learnt = self.kernel_weights.learnt_sigma
        return self.fixed_sigma if learnt is None else learnt

    @property
    def device(self) -> torch.device:
        return self.log_weights.device

    @property
    def bank(self) -> FeatureBank | None:
        """The centres, their labels and neighbour lists (None before the first refresh)."""
        return self._bank

    @bank.setter
    def bank(self, bank: FeatureBank | None) -> None:
        if bank is not None and len(bank) != self.num_centres:
            raise DataError(f"the bank holds {len(bank)} centres but this NNGKLoss has {self.num_centres} (one per "
                            "training image); build it with NNGKLoss(len(train_set), ...)")
        self._bank = bank
        self._host_labels = None if bank is None else bank.labels.cpu()

    @property
    def num_classes(self) -> int:
        """As given, else the bank's largest label + 1."""
        if self.given_num_classes is not None:
            return self.given_num_classes
        self._require_bank()
        return int(self._host_labels.max()) + 1

    def extra_repr(self) -> str:
        return f"num_centres={self.num_centres}, sigma={self.sigma}, num_neighbours={self.num_neighbours}"

    # -- keeping the bank fresh -----------------------------------------------------------

    def refresh(self, model: nn.Module, loader, *, epoch: int = -1, progress: bool = False) -> None:
        """Recompute every centre with ``model`` (in eval mode, no gradient) over ``loader``
        (batches ``(images, labels, indices)`` of the whole training set, any order, no
        augmentation) and find each centre's K nearest other centres. ``epoch`` is kept as
        the bank's ``refreshed_at_epoch`` (the kit's trainer schedules refreshes by it)."""
        found = len(loader.dataset)
        if found != self.num_centres:
            raise DataError(f"the refresh loader's dataset has {found} images but this NNGKLoss has "
                            f"{self.num_centres} centres (one per training image); refresh with the training set "
                            "it was made for")
        self._check_neighbours()
        self.bank = FeatureBank.build(model, loader, self.device, self.num_neighbours, epoch, progress,
                                      self.chunk_size)

    def refresh_neighbours(self, *, epoch: int = -1) -> None:
        """Find each centre's K nearest other centres again, from the centres as they are
        (the online scheme's refresh: :meth:`update` keeps the centres themselves fresh)."""
        bank = self._require_bank()
        self._check_neighbours()
        bank.update_neighbours(self.num_neighbours, self.chunk_size)
        bank.refreshed_at_epoch = epoch

    @torch.no_grad()
    def update(self, embeddings: torch.Tensor, indices: torch.Tensor) -> None:
        """The online scheme: move the centres of images ``indices`` towards their new
        ``embeddings``, ``momentum * centre + (1 - momentum) * embedding``; the neighbour
        lists stay. Under torchrun every process's batch moves every process's bank."""
        self._check_batch(embeddings, indices)
        index, fresh = indices.to(self.device, non_blocking=True), embeddings.detach()
        if distributed.world_size() > 1:
            index, fresh = distributed.gather_all(index, fresh)
        self._bank.move_centres(index, fresh, self.momentum, self.unit_centres)

    @torch.no_grad()
    def staleness(self, embeddings: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """How far, in kernel widths, the images at ``indices`` have moved since their
        centres were stored: the sum over the batch of ``||x_i - c_i|| / sigma`` (a 0-dim
        tensor on the device; divide by the batch size for the mean). Near or above 1, the
        kernels the loss uses are those of a network that no longer exists."""
        centres = self._require_bank().features[indices.to(self.device, non_blocking=True)]
        return (embeddings.detach() - centres).norm(dim=1).sum() / self.kernel_weights.sigma(self.fixed_sigma)

    # -- the loss -------------------------------------------------------------------------

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """The mean ``-log p(y | x)`` of a batch of ``embeddings`` (B, D) of the images at
        ``indices`` (B,) in the training set, with true ``labels`` (B,); gradients reach the
        embeddings and the kernel weights. Under torchrun, this process's share of the
        global batch's mean (see the module docstring)."""
        out = self.compute(embeddings, labels, indices, predict=False)
        return out.loss * distributed.loss_share(out.present) if distributed.world_size() > 1 else out.loss

    def compute(self, embeddings: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor,
                predict: bool = True) -> KernelLoss:
        """The loss with its parts (:class:`nngk_lab.kernel.loss.KernelLoss`): the batch's mean
        loss on this process, the neighbour logits, which images had a neighbour of their
        class and, with ``predict``, the kernel classifier's predictions. Labels and indices
        on the CPU (as loaders give them) are checked without waiting for the device."""
        self._check_batch(embeddings, indices)
        self._check_labels(labels, indices)
        bank, device = self._bank, embeddings.device
        sigma = self.kernel_weights.sigma(self.fixed_sigma)
        index = indices.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        neighbours = bank.neighbours[index]
        if self.batch_kernels:
            out = kernel_nll_with_batch(embeddings, labels, index, bank.features, bank.labels, neighbours,
                                        self.log_weights, sigma, self.num_classes, bank.sq_norms)
        else:
            fused = self.fused and isinstance(sigma, float) and fused_loss_usable(device)
            nll = fused_kernel_nll if fused else kernel_nll
            out = nll(embeddings, labels, bank.features, bank.labels, neighbours, self.log_weights, sigma,
                      bank.sq_norms)
        if predict and out.predictions is None:
            with torch.no_grad():
                predictions = class_log_probs(out.logits.detach(), bank.labels[neighbours], self.num_classes)
            out = out._replace(predictions=predictions.argmax(1))
        return out

    # -- checks -----------------------------------------------------------------------------

    def _require_bank(self) -> FeatureBank:
        if self._bank is None or self._bank.neighbours is None:
            raise ConfigError("this NNGKLoss has no bank yet: call loss.refresh(model, loader) over the training "
                              "set (or load a state_dict) before the first loss or update")
        return self._bank

    def _check_neighbours(self) -> None:
        if self.num_neighbours > self.num_centres - 1:
            raise ConfigError(f"num_neighbours {self.num_neighbours} is more than the {self.num_centres - 1} other "
                              f"centres of a bank of {self.num_centres}; pass num_neighbours "
                              f"{self.num_centres - 1} or less")

    def _check_batch(self, embeddings: torch.Tensor, indices: torch.Tensor) -> None:
        width = self._require_bank().features.shape[1]
        if embeddings.dim() != 2 or embeddings.shape[1] != width:
            raise ConfigError(f"the embeddings have shape {tuple(embeddings.shape)} but the bank's centres are "
                              f"{width}-dimensional; pass the model's (batch, {width}) embeddings, as at the refresh")
        if indices.shape != embeddings.shape[:1] or indices.dtype.is_floating_point or indices.dtype == torch.bool:
            raise ConfigError(f"indices {tuple(indices.shape)} ({indices.dtype}) must be integers, one per embedding "
                              f"(batch {embeddings.shape[0]}): each image's position in the training set")
        host = indices.cpu()
        outside = (host < 0) | (host >= self.num_centres)
        if bool(outside.any()):
            raise DataError(f"index {int(host[outside][0])} is outside the bank of {self.num_centres} centres; "
                            "indices are the images' positions in the training set the bank was refreshed on")

    def _check_labels(self, labels: torch.Tensor, indices: torch.Tensor) -> None:
        if labels.shape != indices.shape:
            raise ConfigError(f"labels {tuple(labels.shape)} must be one per embedding, as indices "
                              f"{tuple(indices.shape)} are")
        host, index = labels.cpu(), indices.cpu()
        wrong = host != self._host_labels[index]
        if bool(wrong.any()):
            i = int(wrong.nonzero()[0, 0])
            raise DataError(f"the image at index {int(index[i])} has label {int(host[i])} but the bank's centre "
                            f"{int(index[i])} has label {int(self._host_labels[index[i]])}; the indices must be "
                            "the images' positions in the dataset the bank was refreshed on")

    # -- state ----------------------------------------------------------------------------------

    def get_extra_state(self) -> dict:
        """The bank, for :meth:`state_dict` (its tensors on the CPU)."""
        return {"bank": None if self._bank is None else self._bank.state_dict()}

    def set_extra_state(self, state: dict) -> None:
        try:
            bank = state["bank"]
        except (KeyError, TypeError) as e:
            raise CheckpointError(f"the NNGKLoss state has no bank entry ({e})") from e
        self.bank = None if bank is None else FeatureBank.from_state_dict(bank, self.device)

    def _apply(self, fn, recurse: bool = True):
        # .to(device), .cuda() and .cpu() move the bank with the kernel weights.
        super()._apply(fn, recurse)
        if self._bank is not None and self._bank.features.device != self.device:
            self._bank = self._bank.to(self.device)
        return self
