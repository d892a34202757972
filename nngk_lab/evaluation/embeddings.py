"""A saved run's embeddings: of its own training, test or held-out images, split exactly
as training split them, or of any class-folder tree, each with labels, class names and
image paths. :func:`evaluate_run <nngk_lab.evaluation.run.evaluate_run>` and the
notebooks' helpers (:mod:`nngk_lab.explore.embeddings`) read the run's data through
:func:`run_data` and its training images through :func:`trained_bank`, so that all three
embed a run the same way.

    >>> heldout = split_embeddings("runs/paper-sop", "heldout", device="cuda")
    >>> recall_at_k(heldout.features, heldout.labels, ks=(1, 10, 100, 1000))
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..data.folders import ImageSamples, scan_image_folder
from ..data.split import DataSplit
from ..data.transforms import build_transforms
from ..errors import ConfigError
from ..kernel.bank import FeatureBank, embed
from ..training.config import TrainConfig
from ..training.loaders import eval_loaders, load_split, make_loader
from ..training.runs import LoadedRun, check_run_data, load_run

SPLIT_PARTS = ("train", "test", "heldout")


@dataclass
class ImageEmbeddings:
    """Images embedded by a run's network: ``features`` (N, D) and ``labels`` (N,), which
    index ``classes``; ``paths[i]`` is the image of row i."""

    features: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    paths: list[str] = field(repr=False)


def run_data(run: LoadedRun, data_dir=None) -> tuple[TrainConfig, DataSplit]:
    """The run's config (with ``data_dir``, if given, as its data folder) and its data
    split, exactly as training split it. Raises :class:`~nngk_lab.errors.CheckpointError`
    when the folder does not hold the images the run was trained on (resuming's rule)."""
    # The run's own number of trained classes: the default (the first half) is a function of
    # the folder, which must not decide it for a saved run.
    config = dataclasses.replace(run.config, num_classes=run.num_trained,
                                 data_dir=str(data_dir) if data_dir is not None else run.config.data_dir)
    split = load_split(config)
    check_run_data(run, split, config)
    return config, split


def trained_bank(run: LoadedRun, train_images, device, progress: bool = False) -> FeatureBank:
    """The trained network's embeddings of the training images (``train_images``: their
    loader, in split order). A finished run saved its final model's; the bank of a run
    stopped early may be from a refresh epochs before its last step, so it is embedded
    again."""
    if run.finished:
        return run.bank
    return FeatureBank(*embed(run.model, train_images, device, progress, desc="trained: training images"))


def _loaded(run, device) -> LoadedRun:
    return run if isinstance(run, LoadedRun) else load_run(run, device)


def _embed(model: nn.Module, loader, device, progress: bool, desc: str) -> tuple[torch.Tensor, torch.Tensor]:
    if len(loader.dataset) == 0:
        return torch.empty(0, model.embedding_dim, device=device), torch.empty(0, dtype=torch.long, device=device)
    return embed(model, loader, device, progress, desc=desc)


def split_embeddings(run, part: str = "heldout", data_dir=None, device="cpu", progress: bool = False,
                     batch_size: int | None = None) -> ImageEmbeddings:
    """The trained network's embeddings of one part of the run's split: ``"train"`` (the
    trained classes' training images), ``"test"`` (their test images) or ``"heldout"``
    (the held-out classes' images, for retrieval).

    ``run``: a save directory or a :class:`~nngk_lab.training.runs.LoadedRun`;
    ``data_dir``: the run's data folder if it moved; ``batch_size``: images per forward
    pass (default the run's). Labels index the classes of the whole folder.
    """
    if part not in SPLIT_PARTS:
        raise ConfigError(f"part must be one of {', '.join(SPLIT_PARTS)}, got {part!r}")
    device = torch.device(device)
    run = _loaded(run, device)
    config, split = run_data(run, data_dir)
    if batch_size is not None:
        config = dataclasses.replace(config, batch_size=batch_size)
    loader = eval_loaders(config, split, device, (part,))[part]
    if part == "train":
        bank = trained_bank(run, loader, device, progress)
        features, labels = bank.features, bank.labels
    else:
        features, labels = _embed(run.model, loader, device, progress, f"trained: {part} images")
    return ImageEmbeddings(features, labels, list(split.classes), [p for p, _ in getattr(split, part)])


def folder_embeddings(run, folder, device="cpu", progress: bool = False, extensions: str | None = None,
                      batch_size: int | None = None) -> ImageEmbeddings:
    """The trained network's embeddings of every image of a class-folder tree ``folder``
    (any classes: labels index its own sorted class folders), with the run's evaluation
    transform. ``extensions``: only image files with this extension (default all common
    types)."""
    device = torch.device(device)
    run = _loaded(run, device)
    classes, samples = scan_image_folder(folder, extensions=extensions)
    config = run.config if batch_size is None else dataclasses.replace(run.config, batch_size=batch_size)
    _, eval_tf = build_transforms(config.input_size, config.resize_size, config.hflip, config.mean, config.std)
    loader = make_loader(ImageSamples(samples, eval_tf), config, device)
    features, labels = _embed(run.model, loader, device, progress, f"trained: images of {Path(folder).name}")
    return ImageEmbeddings(features, labels, list(classes), [p for p, _ in samples])
