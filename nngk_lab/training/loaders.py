"""A run's data: its split of the class folders and the loaders that training, the bank
refresh and evaluation read it with."""

from __future__ import annotations

import signal

import torch
from torch.utils.data import DataLoader

from ..data.decoded import (
    MEMORY_BUDGET_BYTES,
    DecodedImages,
    EpochAugmentation,
    MemoryBatches,
    decoded_bytes,
    in_batches,
)
from ..data.digits import export_digits
from ..data.folders import ImageSamples, scan_image_folder
from ..data.samplers import ClassBalancedOrder
from ..data.seeds import mix_seed
from ..data.split import DataSplit, split_samples
from ..data.transforms import build_transforms, default_resize_size
from ..device import default_workers
from ..errors import ConfigError
from .config import TrainConfig


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


def no_heldout_warning(split: DataSplit) -> str | None:
    """The one-line warning a run that trains on every class starts with (None for any
    other run): it has no held-out classes, so no retrieval metrics."""
    if split.heldout:
        return None
    n = len(split.classes)
    remedy = f"pass --num_classes {n - 1} or fewer to hold classes out" if n > 2 else \
        "add class folders to hold some out (training needs two)"
    return (f"warning: training on all {n} classes holds none out, so the retrieval metrics (Recall@K, MAP@R, "
            f"NMI) will be empty, shown as - by python -m nngk_lab.compare; {remedy}")


class EpochOrder:
    """The order of one epoch's samples, a pure function of (seed, epoch), so that a
    resumed run can skip the batches it has already done and see the same rest."""

    def __init__(self, n: int, seed: int, epoch: int, skip: int):
        g = torch.Generator().manual_seed(mix_seed(seed, epoch))
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
    generator = torch.Generator().manual_seed(mix_seed(config.seed, epoch))
    return DataLoader(dataset, batch_size=config.batch_size, sampler=sampler, shuffle=False,
                      num_workers=workers, pin_memory=device.type == "cuda",
                      persistent_workers=False, generator=generator,
                      worker_init_fn=_ignore_sigint if workers else None)


class RunImages:
    """A training run's images: the training batches of each epoch and the evaluation
    batches of the train and test parts of ``split``, read from the files or, with
    ``config.in_memory``, decoded once and kept in memory (:mod:`nngk_lab.data.decoded`)."""

    def __init__(self, config: TrainConfig, split: DataSplit, device: torch.device):
        self.config, self.split, self.device = config, split, device
        train_tf, _ = build_transforms(config.input_size, config.resize_size, config.hflip, config.mean, config.std)
        self._decoded: dict[str, DecodedImages] = {}
        self._files = ImageSamples(split.train, train_tf, seed=config.seed)

    def _memory(self, part: str) -> DecodedImages:
        if part not in self._decoded:
            c = self.config
            self._decoded[part] = DecodedImages(getattr(self.split, part), resize_size(c), c.input_size, c.mean,
                                                c.std, c.progress, desc=f"decoding {part} images")
        return self._decoded[part]

    def epoch_batches(self, epoch: int, skip_batches: int):
        """Epoch ``epoch``'s training batches ``(images, labels, index)`` in the order of the
        run's ``sampler``, after the first ``skip_batches`` (done before an interruption)."""
        c = self.config
        skip = skip_batches * c.batch_size
        if c.sampler == "m_per_class":
            order = ClassBalancedOrder([label for _, label in self.split.train], c.m_per_class, c.seed, epoch, skip)
        else:
            order = EpochOrder(len(self.split.train), c.seed, epoch, skip)
        if c.in_memory:
            augmentation = EpochAugmentation(len(self.split.train), resize_size(c), c.input_size, c.hflip, c.seed,
                                             epoch)
            return MemoryBatches(self._memory("train"), in_batches(order, c.batch_size), augmentation)
        self._files.set_epoch(epoch)
        return make_loader(self._files, c, self.device, sampler=order, epoch=epoch)

    def eval_batches(self, part: str):
        """The ``part`` (``"train"`` or ``"test"``) images without augmentation, in order."""
        if self.config.in_memory:
            images = self._memory(part)
            return MemoryBatches(images, in_batches(range(len(images)), self.config.batch_size))
        return eval_loaders(self.config, self.split, self.device, (part,))[part]


def resize_size(config: TrainConfig) -> int:
    """The side images are resized to before cropping (``input_size * 9/8`` unless set)."""
    return config.resize_size or default_resize_size(config.input_size)


def fits_in_memory(config: TrainConfig, split: DataSplit) -> bool:
    """Whether the training and test images, decoded, fit :data:`MEMORY_BUDGET_BYTES`."""
    return decoded_bytes(len(split.train) + len(split.test), resize_size(config)) <= MEMORY_BUDGET_BYTES


def eval_loaders(config: TrainConfig, split: DataSplit, device: torch.device,
                 parts: tuple[str, ...] = ("train", "test", "heldout")) -> dict[str, DataLoader]:
    """A loader for each named part of ``split`` (``"train"``, ``"test"``, ``"heldout"``)
    with the run's evaluation transform (no augmentation), in dataset order, with the
    run's batch size and loader workers: what the bank refresh and evaluation embed."""
    _, eval_tf = build_transforms(config.input_size, config.resize_size, config.hflip, config.mean, config.std)
    return {part: make_loader(ImageSamples(getattr(split, part), eval_tf), config, device) for part in parts}
