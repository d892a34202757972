"""A run's data: its split of the class folders and the loaders that training, the bank
refresh and evaluation read it with."""

from __future__ import annotations

import signal

import torch
from torch.utils.data import DataLoader

from .config import TrainConfig
from .data import DataSplit, ImageSamples, build_transforms, export_digits, scan_image_folder, split_samples
from .device import default_workers
from .errors import ConfigError
from .samplers import ClassBalancedOrder


def load_split(config: TrainConfig) -> DataSplit:
    """The run's data split: the class folders of ``config.data_dir`` (the embedded digits
    when None), split by ``num_classes``, ``test_fraction`` and ``seed`` as training splits
    them. Raises :class:`ConfigError` when the folder cannot give two trained classes."""
    root = config.data_dir or export_digits()
    classes, samples = scan_image_folder(root, extensions=config.im_ext)
    if config.num_classes is not None and config.num_classes > len(classes):
        raise ConfigError(f"--num_classes is {config.num_classes} but {root} has only {len(classes)} classes")
    split = split_samples(classes, samples, config.num_classes, config.test_fraction, config.seed)
    if split.num_trained < 2:
        raise ConfigError(f"{root} has {len(classes)} class folder(s), so training would see only one class; "
                          "add class folders or pass --num_classes 2 or more")
    return split


class EpochOrder:
    """The order of one epoch's samples, a pure function of (seed, epoch), so that a
    resumed run can skip the batches it has already done and see the same rest."""

    def __init__(self, n: int, seed: int, epoch: int, skip: int):
        g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        self.order = torch.randperm(n, generator=g)[skip:].tolist()

    def __iter__(self):
        return iter(self.order)

    def __len__(self):
        return len(self.order)


def _ignore_sigint(worker_id: int) -> None:
    # Ctrl-C in a terminal reaches every process of the group; loader workers must leave
    # it to the training process, which saves a checkpoint and stops cleanly.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def make_loader(dataset, config: TrainConfig, device: torch.device, sampler=None, epoch: int = 0) -> DataLoader:
    """A loader over ``dataset`` with the run's batch size and workers, in ``sampler``'s
    order (dataset order when None)."""
    workers = default_workers() if config.workers is None else config.workers
    # Seeding the loader's own generator keeps it from drawing from the global one
    # (which dropout uses), so a resumed run continues the same random stream.
    generator = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)
    return DataLoader(dataset, batch_size=config.batch_size, sampler=sampler, shuffle=False,
                      num_workers=workers, pin_memory=device.type == "cuda",
                      persistent_workers=False, generator=generator,
                      worker_init_fn=_ignore_sigint if workers else None)


def train_samples(config: TrainConfig, split: DataSplit) -> ImageSamples:
    """The training images with the run's augmentation (random per image and epoch)."""
    train_tf, _ = build_transforms(config.input_size, config.resize_size, config.hflip, config.mean, config.std)
    return ImageSamples(split.train, train_tf, seed=config.seed)


def epoch_loader(train_set: ImageSamples, config: TrainConfig, device: torch.device, epoch: int,
                 skip_batches: int) -> DataLoader:
    """Epoch ``epoch``'s training batches, after the first ``skip_batches`` (done before
    an interruption), in the order of the run's ``sampler``."""
    skip = skip_batches * config.batch_size
    if config.sampler == "m_per_class":
        order = ClassBalancedOrder(train_set.labels.tolist(), config.m_per_class, config.seed, epoch, skip)
    else:
        order = EpochOrder(len(train_set), config.seed, epoch, skip)
    train_set.set_epoch(epoch)
    return make_loader(train_set, config, device, sampler=order, epoch=epoch)


def eval_loaders(config: TrainConfig, split: DataSplit, device: torch.device,
                 parts: tuple[str, ...] = ("train", "test", "heldout")) -> dict[str, DataLoader]:
    """A loader for each named part of ``split`` (``"train"``, ``"test"``, ``"heldout"``)
    with the run's evaluation transform (no augmentation), in dataset order, with the
    run's batch size and loader workers: what the bank refresh and evaluation embed."""
    _, eval_tf = build_transforms(config.input_size, config.resize_size, config.hflip, config.mean, config.std)
    return {part: make_loader(ImageSamples(getattr(split, part), eval_tf), config, device) for part in parts}
