"""Training: the original's loop, usable from Python and as ``python -m nngk_lab.train``.

Every ``update_interval`` epochs the feature bank is refreshed (all centres recomputed in
eval mode, every training example's K nearest other centres found); between refreshes
the neighbour lists stay fixed. Adam trains the network and the kernel weights.

A run lives in its save directory:

- ``checkpoint.pt``: everything needed to resume or to use the model (network, kernel
  weights or softmax head, optimiser, feature bank, config, class names, history, RNG
  state), written atomically at every refresh, every epoch end, on Ctrl-C and at the end;
- ``config.json``, ``history.json``: the same config and history, human-readable;
- ``eval.json``: the test evaluation printed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import math
import os
import signal
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .bank import FeatureBank, embed
from .checkpoint import atomic_save, atomic_write_text, remove_temp_files, safe_load
from .data import DataSplit, ImageSamples, build_transforms, export_digits, scan_image_folder, split_samples
from .device import available_cores, default_workers, resolve_device
from .errors import CheckpointError, ConfigError, NNGKError, NonFiniteLossError, ResourceError
from .evaluate import classification_metrics
from .fused_loss import fused_kernel_nll, fused_loss_usable
from .loss import KernelLoss, KernelWeights, class_log_probs, kernel_nll
from .models import MODEL_NAMES, build_model

CHECKPOINT_NAME = "checkpoint.pt"
RUN_FILES = ("config.json", "history.json", "eval.json")
STATE_KEYS = ("config", "classes", "num_trained", "epoch", "step", "finished", "elapsed", "history", "epoch_sums",
              "model", "optimiser", "kernel_weights", "head", "bank", "rng")
# Settings a resumed run takes from the caller rather than from its checkpoint.
RESUME_OVERRIDES = ("max_epochs", "max_time", "device", "gpu_id", "amp", "fused_loss", "workers", "progress",
                    "save_dir")
CHECK_EVERY_STEPS = 20
CHECKPOINT_KIND = "nngk_lab.TrainState"
LOSSES = ("nngk", "softmax")
EPOCH_SUMS = ("loss", "correct", "absent", "present")


@dataclass
class TrainConfig:
    """All settings of a run. The defaults are the original's (ResNet18 on your folder);
    :data:`DIGITS_DEFAULTS` replaces some of them when ``data_dir`` is None."""

    data_dir: str | None = None
    save_dir: str = "runs/digits"
    num_classes: int | None = None       # trained classes: the first N; None = first half (at least 2)
    test_fraction: float = 0.2           # share of each trained class kept for testing
    im_ext: str | None = None
    model: str = "resnet18"
    pretrained: str = "auto"
    final_relu: bool | None = None
    dropout: float = 0.0
    embedding_dim: int | None = None
    loss: str = "nngk"
    sigma: float = 10.0
    num_neighbours: int = 200
    batch_size: int = 32
    learning_rate: float = 1e-5
    weight_learning_rate: float | None = None  # kernel weights; None = learning_rate
    update_interval: int = 5
    max_epochs: int = 100
    max_time: float | None = None        # minutes
    input_size: int = 256
    resize_size: int | None = None
    hflip: bool = True
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    device: str | None = None
    gpu_id: int | None = None
    amp: bool = False                    # bf16 autocast on the GPU
    fused_loss: bool = True              # the Triton loss on a GPU, if it passes its check there
    workers: int | None = None
    seed: int = 0
    progress: bool = True

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the flag of the first setting that cannot work."""
        for f in dataclasses.fields(self):
            value, kind = getattr(self, f.name), str(f.type)
            if value is None and kind.endswith("| None"):
                continue
            if (kind.startswith("int") and not isinstance(value, int)) or \
                    (kind.startswith("float") and not isinstance(value, (int, float))):
                raise ConfigError(f"--{f.name} must be a number, got {value!r}")
        checks = [
            (_positive(self.sigma), f"--sigma must be a positive number, got {self.sigma}"),
            (self.num_neighbours >= 1, f"--num_neighbours must be at least 1, got {self.num_neighbours}"),
            (self.batch_size >= 1, f"--batch_size must be at least 1, got {self.batch_size}"),
            (_positive(self.learning_rate), f"--learning_rate must be a positive number, got {self.learning_rate}"),
            (self.weight_learning_rate is None or _positive(self.weight_learning_rate),
             f"--weight_learning_rate must be a positive number, got {self.weight_learning_rate}"),
            (self.num_classes is None or self.num_classes >= 2,
             f"--num_classes must be at least 2 (training needs two classes), got {self.num_classes}"),
            (self.update_interval >= 1, f"--update_interval must be at least 1, got {self.update_interval}"),
            (self.max_epochs >= 0, f"--max_epochs must not be negative, got {self.max_epochs}"),
            (self.max_time is None or self.max_time > 0, f"--max_time must be positive, got {self.max_time}"),
            (0 <= self.test_fraction < 1, f"--test_fraction must be in [0, 1), got {self.test_fraction}"),
            (self.input_size >= 8, f"--input_size must be at least 8, got {self.input_size}"),
            (self.resize_size is None or self.resize_size >= self.input_size,
             f"--resize_size {self.resize_size} must be at least --input_size {self.input_size}"),
            (self.embedding_dim is None or self.embedding_dim >= 1,
             f"--embedding_dim must be at least 1, got {self.embedding_dim}"),
            (self.workers is None or self.workers >= 0, f"--workers must not be negative, got {self.workers}"),
            (0 <= self.seed < 2**32, f"--seed must be in [0, 2**32), got {self.seed}"),
            (self.model in MODEL_NAMES, f"--model must be one of {', '.join(MODEL_NAMES)}, got {self.model!r}"),
            (self.loss in LOSSES, f"--loss must be one of {', '.join(LOSSES)}, got {self.loss!r}"),
            (0 <= self.dropout < 1, f"--dropout must be in [0, 1), got {self.dropout}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)


def _positive(x: float) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


# Chosen so that `python -m nngk_lab.train` learns the embedded digits well in a minute
# on 2 CPU cores (see README for the measured time and accuracy). Of the learning rates
# 1e-3, 3e-4 and 1e-4, 1e-3 gave loss spikes and the lowest final test accuracy. K and the
# number of epochs were chosen on validation classes, never on the held-out digits 5-9:
# trained on 0-2 and retrieving 3-4, K = 20 raised Recall@1 and MAP@R above the untrained
# network's where the original's K = 200 lowered both, best around epoch 10
# (tools/heldout_curve.py; numbers in README, "Results on the embedded digits").
DIGITS_DEFAULTS = dict(model="small_cnn", input_size=32, hflip=False, sigma=1.0, batch_size=64,
                       learning_rate=1e-4, num_neighbours=20, update_interval=1, max_epochs=10, workers=0)


def make_config(**settings) -> TrainConfig:
    """A :class:`TrainConfig` with the digits defaults when no ``data_dir`` is given.

    Settings that are None are left at their default, so command-line flags that were
    not given do not override anything.
    """
    settings = {k: v for k, v in settings.items() if v is not None}
    base = {} if settings.get("data_dir") else dict(DIGITS_DEFAULTS)
    config = TrainConfig(**{**base, **settings})
    config.validate()
    return config


@dataclass
class TrainResult:
    """What :func:`train` returns: the trained parts, the per-epoch history, the test
    evaluation, and whether the run stopped early (``stop_reason``)."""

    config: TrainConfig
    split: DataSplit
    model: nn.Module
    bank: FeatureBank
    kernel_weights: KernelWeights | None
    head: nn.Linear | None
    history: list[dict] = field(default_factory=list)
    evaluation: dict = field(default_factory=dict)
    stop_reason: str = "max_epochs"


class _EpochOrder:
    """The order of one epoch's samples, a pure function of (seed, epoch), so that a
    resumed run can skip the batches it has already done and see the same rest."""

    def __init__(self, n: int, seed: int, epoch: int, skip: int):
        g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        self.order = torch.randperm(n, generator=g)[skip:].tolist()

    def __iter__(self):
        return iter(self.order)

    def __len__(self):
        return len(self.order)


class _DeferredInterrupt:
    """Turns the first Ctrl-C (or SIGTERM, which batch schedulers send before killing a
    job) into a flag checked between steps, so a checkpoint is never taken half-way
    through an optimiser step. A second one interrupts at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.requested = False
        self._previous = {}

    def _handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self):
        try:
            self._previous = {s: signal.signal(s, self._handler) for s in self.SIGNALS}
        except ValueError:  # not the main thread: leave the signals alone
            self._previous = {}
        return self

    def __exit__(self, *exc):
        for s, previous in self._previous.items():
            signal.signal(s, previous)
        return False


def _ignore_sigint(worker_id: int) -> None:
    # Ctrl-C in a terminal reaches every process of the group; loader workers must leave
    # it to the training process, which saves a checkpoint and stops cleanly.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


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


def _data_fingerprint(split: DataSplit) -> str:
    """A hash of every image path (relative to the data folder) and label of the split:
    a run may only resume on the same images in the same places."""
    paths = [p for p, _ in split.train + split.test + split.heldout]
    root = os.path.commonpath(paths) if paths else ""
    h = hashlib.sha256()
    for part in (split.train, split.test, split.heldout):
        for path, label in part:
            h.update(f"{os.path.relpath(path, root)}\t{label}\n".encode("utf-8", "surrogateescape"))
        h.update(b"--\n")
    return h.hexdigest()


def _loader(dataset, config: TrainConfig, device: torch.device, sampler=None, epoch: int = 0) -> DataLoader:
    workers = default_workers() if config.workers is None else config.workers
    # Seeding the loader's own generator keeps it from drawing from the global one
    # (which dropout uses), so a resumed run continues the same random stream.
    generator = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)
    return DataLoader(dataset, batch_size=config.batch_size, sampler=sampler, shuffle=False,
                      num_workers=workers, pin_memory=device.type == "cuda",
                      persistent_workers=False, generator=generator,
                      worker_init_fn=_ignore_sigint if workers else None)


def eval_loaders(config: TrainConfig, split: DataSplit, device: torch.device,
                 parts: tuple[str, ...] = ("train", "test", "heldout")) -> dict[str, DataLoader]:
    """A loader for each named part of ``split`` (``"train"``, ``"test"``, ``"heldout"``)
    with the run's evaluation transform (no augmentation), in dataset order, with the
    run's batch size and loader workers: what the bank refresh and evaluation embed."""
    _, eval_tf = build_transforms(config.input_size, config.resize_size, config.hflip, config.mean, config.std)
    return {part: _loader(ImageSamples(getattr(split, part), eval_tf), config, device) for part in parts}


def _build_parts(config: TrainConfig, num_classes: int, num_train: int, device: torch.device):
    model = build_model(config.model, embedding_dim=config.embedding_dim, final_relu=config.final_relu,
                        dropout=config.dropout, pretrained=config.pretrained).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    weight_lr = config.weight_learning_rate or config.learning_rate
    if config.loss == "nngk":
        kernel_weights, head = KernelWeights(num_train).to(device), None
        groups = [{"params": model.parameters(), "lr": config.learning_rate},
                  {"params": kernel_weights.parameters(), "lr": weight_lr}]
    else:
        kernel_weights, head = None, nn.Linear(model.embedding_dim, num_classes).to(device)
        groups = [{"params": list(model.parameters()) + list(head.parameters()), "lr": config.learning_rate}]
    return model, kernel_weights, head, torch.optim.Adam(groups)


def build_initial_parts(config: TrainConfig, num_classes: int, num_train: int, device: torch.device):
    """The network, kernel weights or softmax head, and optimiser exactly as a run with
    ``config`` starts: torch's global generator is seeded with ``config.seed`` first, so
    :func:`train` and the untrained baseline of :mod:`nngk_lab.evaluate` get the same
    initial weights."""
    torch.manual_seed(config.seed)
    return _build_parts(config, num_classes, num_train, device)


def _config_from_dict(d: dict) -> TrainConfig:
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    d = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in names}
    return TrainConfig(**d)


def _check_save_dir(save_dir: Path, resume: bool) -> Path | None:
    """Return the checkpoint to resume from, or None for a fresh run."""
    ckpt = save_dir / CHECKPOINT_NAME
    if ckpt.exists():
        if not resume:
            raise ConfigError(f"{save_dir} already holds a run; pass --resume to continue it, "
                              "or choose another --save_dir")
    else:
        ours = [name for name in RUN_FILES if (save_dir / name).exists()]
        if ours:
            raise ConfigError(f"--save_dir {save_dir} holds {ours[0]} but no {CHECKPOINT_NAME}, so it is not a "
                              "run that can be resumed; choose another --save_dir rather than overwrite it")
    try:
        save_dir.mkdir(parents=True, exist_ok=True)
        probe = save_dir / ".write_test"
        probe.touch()
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"cannot write to --save_dir {save_dir}: {e.strerror or e}") from e
    return ckpt if ckpt.exists() else None


@contextlib.contextmanager
def _run_lock(save_dir: Path):
    """Hold an exclusive lock on the save directory while training, so two processes
    never write one run. The system drops the lock when the process dies, however."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks, so no protection
        yield
        return
    with open(save_dir / ".lock", "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            raise ConfigError(f"another process is training in --save_dir {save_dir}; wait for it to finish, "
                              "stop it, or choose another --save_dir") from e
        except OSError:  # a file system without locks (some network drives): train unprotected
            yield
            return
        try:
            remove_temp_files(save_dir)  # left by a process killed while writing a checkpoint
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _evaluate_test(config, model, bank, kernel_weights, head, split, device) -> dict:
    """Accuracy on the test images of the trained classes (bank must be fresh)."""
    if not split.test:
        return {}
    test_loader = eval_loaders(config, split, device, ("test",))["test"]
    queries, labels = embed(model, test_loader, device, config.progress, desc="embedding test images")
    log_weights = kernel_weights.log_weights.detach() if kernel_weights is not None else None
    return {"num_test_images": len(split.test),
            **classification_metrics(queries, labels, bank, log_weights, config.sigma, config.num_neighbours,
                                     split.num_trained, head)}


def _resumed_config(saved: dict, given: TrainConfig) -> TrainConfig:
    """A resumed run keeps its saved settings, except when to stop, which machine to use
    and (if given) where its data folder is now."""
    changes = {name: getattr(given, name) for name in RESUME_OVERRIDES}
    if given.data_dir:
        changes["data_dir"] = given.data_dir
    return dataclasses.replace(_config_from_dict(saved), **changes)


def _check_finite(what: str, finite: bool, epoch_number: int, save_dir: Path) -> None:
    if not finite:
        raise NonFiniteLossError(
            f"the {what} became NaN or infinite in epoch {epoch_number}, so training stopped; the last good "
            f"checkpoint in {save_dir} was kept. Start a new run (another --save_dir) with a smaller "
            "--learning_rate or a larger --sigma.")


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
    """One optimiser step on one batch, exactly as :func:`train` takes it; the benchmarks
    in bench/ time this same object.

    An NNGK run passes ``kernel_weights`` and the loss function ``nll``
    (:func:`nngk_lab.loss.kernel_nll` or the fused one), a softmax run its ``head``.
    ``amp`` runs the network under bf16 autocast.
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

    def __post_init__(self):
        self._autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The network's float32 embeddings of ``images`` (already on the device)."""
        if self.device.type == "cuda":
            images = images.contiguous(memory_format=torch.channels_last)
        with self._autocast:
            features = self.model(images)
        return features.float()

    def loss(self, features: torch.Tensor, labels: torch.Tensor, index: torch.Tensor,
             bank: FeatureBank | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(loss, present, predictions)`` of a batch of embeddings with true ``labels``;
        ``index`` gives each image's place in the bank, whose neighbour lists the NNGK loss
        uses (a softmax run needs neither)."""
        if self.kernel_weights is None:
            logits = self.head(features)
            return (nn.functional.cross_entropy(logits, labels), torch.ones_like(labels, dtype=torch.bool),
                    logits.argmax(1))
        neighbours = bank.neighbours[index.to(self.device, non_blocking=True)]
        out = self.nll(features, labels, bank.features, bank.labels, neighbours, self.kernel_weights.log_weights,
                       self.sigma, bank.sq_norms)
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
        loss, present, predictions = self.loss(self.features(images), labels, index, bank)
        self.optimiser.zero_grad(set_to_none=True)
        loss.backward()
        self.optimiser.step()
        return StepResult(loss.detach(), present, predictions, labels)


def add_to_sums(sums: dict[str, torch.Tensor], step: StepResult) -> None:
    """Add one step to the running sums of :data:`EPOCH_SUMS` (tensors on the device), in place."""
    n_present = step.present.sum()
    sums["loss"] += step.loss * n_present
    sums["present"] += n_present
    sums["absent"] += step.labels.numel() - n_present
    sums["correct"] += (step.predictions == step.labels).sum()


def train(config: TrainConfig, resume: bool = False) -> TrainResult:
    """Train (or resume) a run as described in the module docstring; return the result.

    Stops at ``max_epochs``, after ``max_time`` minutes, or on Ctrl-C or SIGTERM (a
    checkpoint is saved and ``stop_reason`` says why). With ``resume``, continues the
    run in ``config.save_dir`` if there is one, with its saved settings except those in
    :data:`RESUME_OVERRIDES` (and ``data_dir`` if given), and refuses data that changed.
    A resumed run on the CPU gives the same history and weights as an uninterrupted one.
    Raises :class:`NonFiniteLossError` if the loss or weights become NaN or infinite;
    the last good checkpoint is then left as it was.
    """
    config.validate()
    device = resolve_device(config.device, config.gpu_id)
    save_dir = Path(config.save_dir)
    resume_from = _check_save_dir(save_dir, resume)
    with _run_lock(save_dir):
        try:
            return _train(config, device, save_dir, resume_from)
        except (NNGKError, torch.OutOfMemoryError, MemoryError, RuntimeError) as e:
            # A CPU allocation failure is a plain RuntimeError; any other one is not ours.
            out_of_memory = isinstance(e, (torch.OutOfMemoryError, MemoryError)) or "can't allocate memory" in str(e)
            if not (out_of_memory or isinstance(e, NNGKError)):
                raise
            # Free the failed run's memory and loader worker processes now, not at Python's
            # next garbage collection, so that a notebook can go on.
            traceback.clear_frames(e.__traceback__)
            if not out_of_memory:
                raise
            memory = "GPU memory" if device.type == "cuda" else "memory"
            raise ResourceError(f"the run needs more {memory} than is free, so it stopped; the last checkpoint in "
                                f"{save_dir} was kept. Free memory and continue with --resume, or start a new "
                                "run with a smaller --batch_size or --input_size") from e


def _train(config: TrainConfig, device: torch.device, save_dir: Path, resume_from: Path | None) -> TrainResult:
    torch.set_num_threads(available_cores())

    state = safe_load(resume_from, CHECKPOINT_KIND, required=STATE_KEYS) if resume_from else None
    if state is not None:
        config = _resumed_config(state["config"], config)
    split = load_split(config)
    fingerprint = _data_fingerprint(split)
    if state is not None and state["classes"] != split.classes:
        raise CheckpointError(f"{resume_from} was trained on classes {state['classes'][:3]}..., but the data "
                              f"folder {config.data_dir or 'digits'} has {split.classes[:3]}...; resume with "
                              "the run's own data (--data_dir if it moved)")
    if state is not None and state.get("data_fingerprint", fingerprint) != fingerprint:
        raise CheckpointError(f"the images in {config.data_dir or 'the digits folder'} are not those {resume_from} "
                              "was trained on (files were added, removed or renamed); restore them, or start "
                              "a new run in another --save_dir")
    num_train = len(split.train)
    if config.batch_size > num_train:
        raise ConfigError(f"--batch_size {config.batch_size} is larger than the {num_train} training images")
    if config.loss == "nngk" and config.num_neighbours > num_train - 1:
        raise ConfigError(f"--num_neighbours {config.num_neighbours} is larger than the bank allows "
                          f"({num_train} training images, so at most {num_train - 1} other centres); "
                          f"pass --num_neighbours {num_train - 1} or less")

    train_tf, _ = build_transforms(config.input_size, config.resize_size, config.hflip, config.mean, config.std)
    train_set = ImageSamples(split.train, train_tf, seed=config.seed)
    bank_loader = eval_loaders(config, split, device, ("train",))["train"]
    model, kernel_weights, head, optimiser = build_initial_parts(config, split.num_trained, num_train, device)
    k_train = min(config.num_neighbours, num_train - 1)

    epoch, step, history, bank, elapsed = 0, 0, [], None, 0.0
    sums = dict.fromkeys(EPOCH_SUMS, 0.0)  # this epoch's totals, kept across an interruption
    if state is not None:
        try:
            model.load_state_dict(state["model"])
            if kernel_weights is not None:
                kernel_weights.load_state_dict(state["kernel_weights"])
            if head is not None:
                head.load_state_dict(state["head"])
            optimiser.load_state_dict(state["optimiser"])
        except (RuntimeError, KeyError, ValueError, TypeError, AttributeError) as e:
            raise CheckpointError(f"{resume_from} does not match this model and data: {str(e)[:200]}") from e
        epoch, step, history, elapsed = state["epoch"], state["step"], state["history"], state["elapsed"]
        sums = state["epoch_sums"]
        bank = FeatureBank.from_state_dict(state["bank"], device) if state["bank"] is not None else None
        torch.set_rng_state(state["rng"])
        if device.type == "cuda" and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(state["cuda_rng"], device)

    def save(finished: bool = False) -> None:
        # Never replace the last good checkpoint with a broken state.
        weights = [t for part in (model, kernel_weights, head) if part is not None
                   for t in part.state_dict().values() if t.is_floating_point()]
        last_trained = epoch + (step > 0)  # the (1-based) epoch of the last training step
        _check_finite("weights", bool(torch.stack([t.isfinite().all() for t in weights]).all()), last_trained,
                      save_dir)
        if bank is not None:
            _check_finite("feature bank", bool(bank.features.isfinite().all()), last_trained, save_dir)
        atomic_save({
            "kind": CHECKPOINT_KIND, "config": dataclasses.asdict(config), "classes": split.classes,
            "num_trained": split.num_trained, "data_fingerprint": fingerprint,
            "epoch": epoch, "step": step, "finished": finished,
            "elapsed": elapsed, "history": history, "epoch_sums": sums,
            "model": model.state_dict(), "optimiser": optimiser.state_dict(),
            "kernel_weights": kernel_weights.state_dict() if kernel_weights is not None else None,
            "head": head.state_dict() if head is not None else None,
            "bank": bank.state_dict() if bank is not None else None, "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        }, save_dir / CHECKPOINT_NAME)
        atomic_write_text(json.dumps(dataclasses.asdict(config), indent=2), save_dir / "config.json")
        atomic_write_text(json.dumps(history, indent=2), save_dir / "history.json")

    def refresh() -> None:
        nonlocal bank
        bank = FeatureBank.build(model, bank_loader, device, k_train, epoch, config.progress)
        if history:  # the bank reflects the model after the last finished epoch
            history[-1].update(_evaluate_test(config, model, bank, kernel_weights, head, split, device))

    started = time.monotonic() - elapsed * 60

    def time_up() -> bool:
        return config.max_time is not None and time.monotonic() - started > config.max_time * 60

    resumed_at = (epoch, step)
    # A resumed run that had already used its --max_time takes no further step.
    stop_reason = "max_time" if elapsed > 0 and time_up() else "max_epochs"
    nll = fused_kernel_nll if config.loss == "nngk" and config.fused_loss and fused_loss_usable(device) \
        else kernel_nll
    train_step = TrainStep(model, optimiser, kernel_weights, head, config.sigma, split.num_trained, device,
                           config.amp, nll)
    with _DeferredInterrupt() as interrupt:
        while epoch < config.max_epochs and stop_reason == "max_epochs":
            if config.loss == "nngk" and (bank is None or (epoch % config.update_interval == 0
                                                           and bank.refreshed_at_epoch != epoch)):
                refresh()
                save()
            order = _EpochOrder(num_train, config.seed, epoch, step * config.batch_size)
            train_set.set_epoch(epoch)
            loader = _loader(train_set, config, device, sampler=order, epoch=epoch)
            # Starting from the saved sums keeps a resumed epoch's float additions in order.
            acc = {k: torch.tensor(sums[k], device=device) for k in EPOCH_SUMS}
            model.train()
            bar = tqdm(loader, desc=f"epoch {epoch + 1}/{config.max_epochs}", disable=not config.progress,
                       leave=False)
            for images, labels, index in bar:
                add_to_sums(acc, train_step(images, labels, index, bank))
                step += 1
                if step % CHECK_EVERY_STEPS == 0:  # a device sync, so not every step
                    running_loss = float(acc["loss"]) / max(float(acc["present"]), 1.0)
                    _check_finite("loss", math.isfinite(running_loss), epoch + 1, save_dir)
                    bar.set_postfix(loss=f"{running_loss:.4f}")
                if interrupt.requested:
                    stop_reason = "interrupted"
                elif time_up():
                    stop_reason = "max_time"
                if stop_reason != "max_epochs":
                    break
            bar.close()
            _check_finite("loss", bool(acc["loss"].isfinite()), epoch + 1, save_dir)
            sums = {key: float(acc[key]) for key in EPOCH_SUMS}
            elapsed = (time.monotonic() - started) / 60
            if stop_reason != "max_epochs" and step * config.batch_size < num_train:
                save()  # mid-epoch: resume continues this epoch from the next batch
                break
            seen = sums["present"] + sums["absent"]
            history.append({"epoch": epoch + 1, "loss": sums["loss"] / max(sums["present"], 1),
                            "train_accuracy": sums["correct"] / max(seen, 1),
                            "absent_fraction": sums["absent"] / max(seen, 1), "minutes": elapsed})
            epoch, step = epoch + 1, 0
            sums = dict.fromkeys(EPOCH_SUMS, 0.0)
            save()

    if stop_reason == "interrupted":
        print(f"Interrupted: checkpoint saved in {save_dir}; continue with --resume.", file=sys.stderr)
        return TrainResult(config, split, model, bank, kernel_weights, head, history, {}, stop_reason)
    saved_evaluation = _saved_evaluation(save_dir) if state is not None and state["finished"] else None
    if saved_evaluation is not None and (epoch, step) == resumed_at:
        # Resuming a finished run with nothing left to train: its files stay as they are,
        # so caches and metrics.json made from them stay valid.
        return TrainResult(config, split, model, bank, kernel_weights, head, history, saved_evaluation,
                           saved_evaluation.get("stop_reason", stop_reason))
    if bank is None or bank.refreshed_at_epoch != epoch or step > 0:
        # A run stopped mid-epoch by --max_time is evaluated (and kept) with a bank of its final model.
        bank = FeatureBank.build(model, bank_loader, device, k_train, epoch, config.progress)
    evaluation = _evaluate_test(config, model, bank, kernel_weights, head, split, device)
    if history:
        history[-1].update(evaluation)
    evaluation = {"epochs": epoch, "minutes": elapsed, "stop_reason": stop_reason, **evaluation}
    save(finished=True)
    atomic_write_text(json.dumps(evaluation, indent=2), save_dir / "eval.json")
    return TrainResult(config, split, model, bank, kernel_weights, head, history, evaluation, stop_reason)


def _saved_evaluation(save_dir: Path) -> dict | None:
    try:
        return json.loads((save_dir / "eval.json").read_text())
    except (OSError, ValueError):
        return None


@dataclass
class LoadedRun:
    """A trained run read back from its save directory (see :func:`load_run`)."""

    config: TrainConfig
    classes: list[str]
    num_trained: int
    model: nn.Module
    bank: FeatureBank
    kernel_weights: KernelWeights | None
    head: nn.Linear | None
    history: list[dict]
    finished: bool


def load_run(save_dir, device="cpu") -> LoadedRun:
    """Read ``save_dir/checkpoint.pt`` (or a checkpoint file given directly) and rebuild
    the model, kernel weights and bank. Raises :class:`CheckpointError` naming the file."""
    path = Path(save_dir)
    if not path.is_file():
        path = path / CHECKPOINT_NAME
    state = safe_load(path, CHECKPOINT_KIND, required=STATE_KEYS)
    config = _config_from_dict(state["config"])
    device = resolve_device(str(device))
    model, kernel_weights, head, _ = _build_parts(dataclasses.replace(config, pretrained="none"),
                                                  state["num_trained"], 1, device)
    try:
        model.load_state_dict(state["model"])
        if state["kernel_weights"] is not None:
            kernel_weights = KernelWeights(state["kernel_weights"]["log_weights"].shape[0]).to(device)
            kernel_weights.load_state_dict(state["kernel_weights"])
        if head is not None:
            head.load_state_dict(state["head"])
    except (RuntimeError, KeyError, ValueError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{path} does not match the model it names: {str(e)[:200]}") from e
    if state["bank"] is None:
        raise CheckpointError(f"{path} holds no feature bank yet (the run stopped before its first refresh)")
    model.eval()
    return LoadedRun(config, state["classes"], state["num_trained"], model,
                     FeatureBank.from_state_dict(state["bank"], device), kernel_weights, head,
                     state["history"], state["finished"])


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


class _Parser(argparse.ArgumentParser):
    """Reports a bad flag in one line, like every other error of the command line."""

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python -m nngk_lab.train",
        description="Train an embedding with the nearest-neighbour Gaussian kernel loss (Meyer et al. 2018). "
                    "Without --data_dir it trains a small CNN on the embedded digits; with it, ResNet18 "
                    "with the original's defaults.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter, argument_default=None)
    a = p.add_argument
    a("--data_dir", help="parent folder of class sub-folders (class_000/, class_001/, ...); "
                         "default: the embedded digits")
    a("--save_dir", required=True, help="folder for the checkpoint, config, history and evaluation")
    a("--num_classes", type=int, help="train on the first N classes (sorted folder names); the rest are "
                                      "held out for retrieval. Default: the first half (at least 2)")
    a("--test_fraction", type=float, help="share of each trained class kept as test images (default 0.2)")
    a("--im_ext", help="only use image files with this extension, e.g. jpg (default: all common types)")
    a("--model", choices=MODEL_NAMES, help="backbone (default resnet18; small_cnn for the digits)")
    a("--pretrained", help="ResNet18 weights: auto (ImageNet if already on disk), none, or a file path")
    a("--final_relu", type=_bool, help="keep the ReLU at the end of the backbone (default: true for "
                                       "resnet18, false for small_cnn)")
    a("--dropout", type=float, help="dropout before the embedding head (default 0)")
    a("--embedding_dim", type=int, help="add a linear layer to this many dimensions")
    a("--loss", choices=LOSSES, help="nngk (the method) or softmax (the baseline)")
    a("--sigma", type=float, help="Gaussian kernel width (default 10; 1 for the digits)")
    a("--num_neighbours", type=int, help="K nearest centres per query (default 200; 20 for the digits)")
    a("--batch_size", type=int, help="images per step (default 32; 64 for the digits)")
    a("--learning_rate", type=float, help="Adam learning rate (default 1e-5; 1e-4 for the digits)")
    a("--weight_learning_rate", type=float, help="learning rate of the kernel weights (default: --learning_rate)")
    a("--update_interval", type=int, help="refresh the feature bank every this many epochs (default 5)")
    a("--max_epochs", type=int, help="stop after this many epochs (default 100; 10 for the digits)")
    a("--max_time", type=float, help="stop after this many minutes of training")
    a("--input_size", type=int, help="side of the square network input (default 256; 32 for the digits)")
    a("--resize_size", type=int, help="images are resized to this before cropping (default input*9/8)")
    a("--hflip", type=_bool, help="random horizontal flips in training (default true; false for the digits)")
    a("--device", help="cpu, cuda, cuda:N or auto (GPU if there is one). Default: cpu")
    a("--gpu_id", type=int, help="train on this GPU (as the original); leave out for the CPU")
    a("--amp", action="store_true", help="bf16 autocast for the network (GPU)")
    a("--fused_loss", type=_bool, help="on a GPU, compute the loss with fused Triton kernels once they have "
                                       "matched the plain PyTorch loss there (default true)")
    a("--workers", type=int, help="data loader worker processes (default: cores - 1; none on 2 cores or fewer)")
    a("--seed", type=int, help="random seed (default 0)")
    a("--resume", action="store_true", help="continue the run in --save_dir from its checkpoint, with its "
                                            "settings (start one if there is none)")
    a("--no_progress", action="store_true", help="no progress bars")
    return p


def print_evaluation(evaluation: dict) -> None:
    for key, value in evaluation.items():
        print(f"  {key:28s} {value:.4f}" if isinstance(value, float) else f"  {key:28s} {value}")


def _resume_args(args: dict) -> dict:
    """Flags for ``--resume`` of the run in ``--save_dir``: refuse those it would ignore (it
    keeps its settings), and take ``--max_epochs``, ``--max_time`` and ``--data_dir`` from
    its last session unless given, so that a plain ``--resume`` finishes the run as planned."""
    save_dir = Path(args["save_dir"])
    try:
        saved = json.loads((save_dir / "config.json").read_text()) if (save_dir / CHECKPOINT_NAME).exists() else {}
    except (OSError, ValueError):  # no readable config.json: train() still checks the checkpoint itself
        return args
    for name, value in args.items():
        if value is not None and name in saved and name not in RESUME_OVERRIDES and name != "data_dir" \
                and value != saved[name]:
            raise ConfigError(f"--{name} {value} differs from the run in {save_dir} ({name} {saved[name]}); a "
                              "resumed run keeps its settings: leave the flag out, or start a new run in "
                              "another --save_dir")
    planned = {name: saved[name] for name in ("max_epochs", "max_time", "data_dir")
               if args.get(name) is None and name in saved}
    return {**args, **planned}


def main(argv=None) -> int:
    """The command line: every nngk_lab error is printed as one line, with exit status 2."""
    args = vars(build_parser().parse_args(argv))
    resume = args.pop("resume")
    args["progress"] = not args.pop("no_progress")
    args["amp"] = args["amp"] or None
    try:
        if resume:
            args = _resume_args(args)
        config = make_config(**args)
        result = train(config, resume=resume)
    except NNGKError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"error: stopped at once by a second Ctrl-C; the last checkpoint in {args['save_dir']} was kept",
              file=sys.stderr)
        return 130
    if result.stop_reason == "interrupted":
        return 130
    print(f"Finished ({result.stop_reason}) after {len(result.history)} epochs; saved in {config.save_dir}")
    print_evaluation(result.evaluation)
    return 0


if __name__ == "__main__":
    sys.exit(main())
