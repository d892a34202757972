"""The bank refresh, shown: a short training written out step by step, which records the
loss of every step, the refreshes, how far the centres drift between refreshes and how
much of each image's neighbour list survives one.

The loop is the method's, small enough to read: the training images (evaluation
transform, no augmentation, so refresh and step see the same pixels) are decoded once;
every ``update_interval`` epochs all of them are embedded without gradient (the centres)
and each one's K nearest other centres are found and kept; each step embeds a batch and
takes an Adam step on :func:`nngk_lab.kernel.loss.kernel_nll` against those stored
centres. ``nngk_lab.training.train`` does the same with augmentation, checkpoints and
evaluation around it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from ..data.folders import ImageSamples
from ..data.transforms import build_transforms
from ..kernel.loss import kernel_nll
from ..kernel.search import nearest_neighbours
from ..training.config import make_config
from ..training.loaders import load_split
from ..training.parts import build_initial_parts
from .cache import cached


@dataclass(frozen=True)
class RefreshRun:
    """One short training: the loss of every step, and what each refresh changed."""

    update_interval: int
    steps_per_epoch: int
    losses: list[float]           # one per step
    refresh_steps: list[int]      # the step before which each refresh happened (0 first)
    drift: list[float]            # per refresh after the first: mean |c_new - c_old| / median nearest-centre distance
    overlap: list[float]          # per refresh after the first: mean share of the K neighbours kept


def neighbour_overlap(old: torch.Tensor, new: torch.Tensor) -> float:
    """Mean over rows of |old_row ∩ new_row| / K, for two (N, K) index lists."""
    if old.shape != new.shape:
        raise ValueError(f"neighbour lists {tuple(old.shape)} and {tuple(new.shape)} must have the same shape")
    same = (old.unsqueeze(2) == new.unsqueeze(1)).any(2)
    return float(same.double().mean())


def centre_drift(old: torch.Tensor, new: torch.Tensor) -> float:
    """Mean distance each centre moved, over the median distance from a centre to its
    nearest other centre before the move (1: the typical centre moved as far as its
    nearest neighbour is away)."""
    nearest, _ = nearest_neighbours(old, old, 1, exclude_self=True, backend="torch")
    scale = float(nearest[:, 0].clamp_min(0).sqrt().median())
    return float((new - old).norm(dim=1).mean()) / max(scale, 1e-12)


def _images(config, limit: int | None) -> tuple[torch.Tensor, torch.Tensor, int]:
    split = load_split(config)
    samples = split.train[:limit] if limit else split.train
    _, eval_tf = build_transforms(config.input_size, config.resize_size, config.hflip, config.mean, config.std)
    data = ImageSamples(samples, eval_tf)
    images = torch.stack([data[i][0] for i in range(len(data))])
    labels = torch.tensor([label for _, label in samples])
    return images, labels, split.num_trained


def _train(update_interval: int, epochs: int, limit: int | None, config_settings: dict) -> dict:
    config = make_config(**{"progress": False, **config_settings, "update_interval": update_interval})
    images, labels, num_classes = _images(config, limit)
    parts = build_initial_parts(config, num_classes, len(images), torch.device("cpu"))
    model, weights, optimiser = parts.model, parts.kernel_weights, parts.optimiser
    model.eval()  # BatchNorm statistics frozen, as in the original
    k = min(config.num_neighbours, len(images) - 1)
    g = torch.Generator().manual_seed(config.seed)
    losses, refresh_steps, drift, overlap = [], [], [], []
    centres = neighbours = None
    for epoch in range(epochs):
        if epoch % update_interval == 0:
            with torch.no_grad():
                new_centres = torch.cat([model(b) for b in images.split(256)])
            _, new_neighbours = nearest_neighbours(new_centres, new_centres, k, exclude_self=True, backend="torch")
            if centres is not None:
                drift.append(centre_drift(centres, new_centres))
                overlap.append(neighbour_overlap(neighbours, new_neighbours))
            centres, neighbours = new_centres, new_neighbours
            refresh_steps.append(len(losses))
        for batch in torch.randperm(len(images), generator=g).split(config.batch_size):
            out = kernel_nll(model(images[batch]), labels[batch], centres, labels, neighbours[batch],
                             weights.log_weights, config.sigma)
            optimiser.zero_grad(set_to_none=True)
            out.loss.backward()
            optimiser.step()
            losses.append(float(out.loss.detach()))
    return dataclasses.asdict(RefreshRun(update_interval, -(-len(images) // config.batch_size), losses,
                                         refresh_steps, drift, overlap))


def refresh_study(intervals=(1, 5), epochs: int = 10, limit: int | None = None, cache_dir=None,
                  **config_settings) -> dict[int, RefreshRun]:
    """Train the same network from the same start once per update interval, ``epochs``
    epochs on the first ``limit`` training images (all when None), on the CPU; cached in
    ``cache_dir`` when given. ``config_settings`` are
    :func:`nngk_lab.training.config.make_config` settings (the digits defaults without)."""
    if any(int(i) < 1 for i in intervals) or epochs < 1:
        raise ValueError(f"update intervals {list(intervals)} and epochs {epochs} must be at least 1")
    runs = {}
    for interval in intervals:
        key = {"interval": int(interval), "epochs": int(epochs), "limit": limit, "config": config_settings}
        compute = lambda interval=interval: _train(int(interval), int(epochs), limit, config_settings)  # noqa: E731
        saved = cached(cache_dir / f"refresh-interval-{interval}.pt", compute, key) if cache_dir else compute()
        runs[int(interval)] = RefreshRun(**saved)
    return runs
