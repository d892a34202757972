"""A run's folder: the checks before training starts or resumes, its lock, the data
fingerprint, the checkpoint (written and read back) and :func:`load_run`.

A run lives in its save directory:

- ``checkpoint.pt``: everything needed to resume or to use the model (network, kernel
  weights or softmax head, optimiser, feature bank, config, class names, history, RNG
  state), written atomically at every refresh, every epoch end, on Ctrl-C and at the end;
- ``config.json``, ``history.json``: the same config and history, human-readable;
- ``eval.json``: the test evaluation printed at the end.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..data.digits import DIGIT_FOLDERS, OLD_DIGIT_FOLDERS, with_old_folder_names
from ..data.split import DataSplit
from ..device import resolve_device
from ..errors import CheckpointError, ConfigError, NonFiniteLossError
from ..files import atomic_save, atomic_write_text, remove_temp_files, safe_load
from ..kernel.bank import FeatureBank
from ..kernel.loss import KernelWeights
from .config import TrainConfig, config_from_dict
from .parts import Parts, build_parts
from .step import EPOCH_SUMS

CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_KIND = "nngk_lab.TrainState"
RUN_FILES = ("config.json", "history.json", "eval.json")
STATE_KEYS = ("config", "classes", "num_trained", "epoch", "step", "finished", "elapsed", "history", "epoch_sums",
              "model", "optimiser", "kernel_weights", "head", "bank", "rng")
# Settings a resumed run takes from the caller rather than from its checkpoint.
RESUME_OVERRIDES = ("max_epochs", "max_time", "device", "gpu_id", "amp", "fused_loss", "workers", "progress",
                    "save_dir", "dist_timeout")


@dataclass
class Progress:
    """Where a run is: the next epoch and step, the finished epochs' history, this epoch's
    running sums, minutes trained, and the feature bank the next step trains against."""

    epoch: int = 0
    step: int = 0
    history: list[dict] = field(default_factory=list)
    sums: dict[str, float] = field(default_factory=lambda: dict.fromkeys(EPOCH_SUMS, 0.0))
    elapsed: float = 0.0
    bank: FeatureBank | None = None


def check_save_dir(save_dir: Path, resume: bool) -> Path | None:
    """Return the checkpoint to resume from, or None for a fresh run; refuse a folder that
    holds a run (without ``resume``) or other files of ours, or that cannot be written."""
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
def run_lock(save_dir: Path):
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


def data_fingerprint(split: DataSplit) -> str:
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


def read_checkpoint(path: Path) -> dict:
    """A training checkpoint's contents, checked for its kind and keys."""
    return safe_load(path, CHECKPOINT_KIND, required=STATE_KEYS)


def resumed_config(saved: dict, given: TrainConfig) -> TrainConfig:
    """A resumed run keeps its saved settings, except when to stop, which machine to use
    and (if given) where its data folder is now."""
    changes = {name: getattr(given, name) for name in RESUME_OVERRIDES}
    if given.data_dir:
        changes["data_dir"] = given.data_dir
    return dataclasses.replace(config_from_dict(saved), **changes)


def check_same_data(state: dict, split: DataSplit, fingerprint: str, config: TrainConfig, path: Path) -> None:
    """Refuse to resume, evaluate or explore the checkpoint ``state`` (read from ``path``)
    on other data than it was trained on. A run saved before fingerprints were has none,
    and is checked by its classes only. A run on the embedded digits from before their
    folders were renamed is checked against the same digits under the old names."""
    if config.data_dir is None and list(state["classes"]) == list(OLD_DIGIT_FOLDERS) \
            and split.classes == list(DIGIT_FOLDERS):
        split = with_old_folder_names(split)
        fingerprint = data_fingerprint(split)
    if state["classes"] != split.classes:
        raise CheckpointError(f"{path} was trained on classes {state['classes'][:3]}..., but the data "
                              f"folder {config.data_dir or 'digits'} has {split.classes[:3]}...; use "
                              "the run's own data (--data_dir if it moved)")
    if state.get("data_fingerprint", fingerprint) != fingerprint:
        raise CheckpointError(f"the images in {config.data_dir or 'the digits folder'} are not those {path} "
                              "was trained on (files were added, removed or renamed), so its split would not be "
                              "the run's; restore them (--data_dir if they moved), or train a new run in "
                              "another --save_dir")


def restore(state: dict, parts: Parts, device: torch.device, path: Path) -> Progress:
    """Load a checkpoint's weights, optimiser and RNG state into ``parts`` and torch; return
    its progress."""
    try:
        for name, module in parts.modules().items():
            if module is not None:
                module.load_state_dict(state[name])
        parts.optimiser.load_state_dict(state["optimiser"])
    except (RuntimeError, KeyError, ValueError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{path} does not match this model and data: {str(e)[:200]}") from e
    torch.set_rng_state(state["rng"])
    if device.type == "cuda" and state.get("cuda_rng") is not None:
        torch.cuda.set_rng_state(state["cuda_rng"], device)
    bank = FeatureBank.from_state_dict(state["bank"], device) if state["bank"] is not None else None
    return Progress(state["epoch"], state["step"], state["history"], state["epoch_sums"], state["elapsed"], bank)


def check_finite(what: str, finite: bool, epoch_number: int, save_dir: Path) -> None:
    """Stop training with :class:`NonFiniteLossError` when ``what`` is not finite."""
    if not finite:
        raise NonFiniteLossError(
            f"the {what} became NaN or infinite in epoch {epoch_number}, so training stopped; the last good "
            f"checkpoint in {save_dir} was kept. Start a new run (another --save_dir) with a smaller "
            "--learning_rate or a larger --sigma.")


def save_checkpoint(save_dir: Path, config: TrainConfig, split: DataSplit, fingerprint: str, parts: Parts,
                    progress: Progress, device: torch.device, finished: bool = False,
                    eval_bank: FeatureBank | None = None) -> None:
    """Write the checkpoint, config.json and history.json atomically, after checking that
    nothing in them is NaN or infinite (the last good checkpoint is never replaced by a
    broken one). ``eval_bank``: the final model's bank, when it is not the one the next
    training step would use (a run stopped between refreshes); resuming ignores it."""
    last_trained = progress.epoch + (progress.step > 0)  # the (1-based) epoch of the last training step
    weights = [t for module in parts.modules().values() if module is not None
               for t in module.state_dict().values() if t.is_floating_point()]
    check_finite("weights", bool(torch.stack([t.isfinite().all() for t in weights]).all()), last_trained, save_dir)
    for bank in (progress.bank, eval_bank):
        if bank is not None:
            check_finite("feature bank", bool(bank.features.isfinite().all()), last_trained, save_dir)
    modules = {name: None if m is None else m.state_dict() for name, m in parts.modules().items()}
    atomic_save({
        "kind": CHECKPOINT_KIND, "config": dataclasses.asdict(config), "classes": split.classes,
        "num_trained": split.num_trained, "data_fingerprint": fingerprint,
        "epoch": progress.epoch, "step": progress.step, "finished": finished,
        "elapsed": progress.elapsed, "history": progress.history, "epoch_sums": progress.sums,
        **modules, "optimiser": parts.optimiser.state_dict(),
        "bank": progress.bank.state_dict() if progress.bank is not None else None,
        "eval_bank": eval_bank.state_dict() if eval_bank is not None else None,
        "rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
    }, save_dir / CHECKPOINT_NAME)
    atomic_write_text(json.dumps(dataclasses.asdict(config), indent=2), save_dir / "config.json")
    atomic_write_text(json.dumps(progress.history, indent=2), save_dir / "history.json")


def saved_evaluation(save_dir: Path) -> dict | None:
    """A run's eval.json, or None when it has none that can be read."""
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
    data_fingerprint: str | None = None  # None for runs saved before fingerprints were
    path: Path | None = None  # its checkpoint file


def check_run_data(run: LoadedRun, split: DataSplit, config: TrainConfig) -> None:
    """Refuse to evaluate or explore ``run`` on ``split`` unless it holds the images the run
    was trained on (:func:`check_same_data`, resuming's rule). A run saved before
    fingerprints were is also refused when its bank and the split's training images differ
    in number."""
    state = {"classes": run.classes}
    if run.data_fingerprint is not None:
        state["data_fingerprint"] = run.data_fingerprint
    elif len(run.bank) != len(split.train):
        state["data_fingerprint"] = ""
    check_same_data(state, split, data_fingerprint(split), config, run.path)


def load_run(save_dir, device="cpu") -> LoadedRun:
    """Read ``save_dir/checkpoint.pt`` (or a checkpoint file given directly) and rebuild
    the model, kernel weights and bank: for a finished run, the bank of its final model.
    Raises :class:`CheckpointError` naming the file."""
    path = Path(save_dir)
    if not path.is_file():
        path = path / CHECKPOINT_NAME
    state = read_checkpoint(path)
    config = config_from_dict(state["config"])
    device = resolve_device(str(device))
    parts = build_parts(dataclasses.replace(config, pretrained="none"), state["num_trained"], 1, device)
    kernel_weights = parts.kernel_weights
    try:
        parts.model.load_state_dict(state["model"])
        if state["kernel_weights"] is not None:
            saved = state["kernel_weights"]
            kernel_weights = KernelWeights(saved["log_weights"].shape[0],
                                           1.0 if "log_sigma" in saved else None).to(device)
            kernel_weights.load_state_dict(state["kernel_weights"])
        if parts.head is not None:
            parts.head.load_state_dict(state["head"])
    except (RuntimeError, KeyError, ValueError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{path} does not match the model it names: {str(e)[:200]}") from e
    bank = state.get("eval_bank") if state["finished"] else None
    bank = bank if bank is not None else state["bank"]
    if bank is None:
        raise CheckpointError(f"{path} holds no feature bank yet (the run stopped before its first refresh)")
    parts.model.eval()
    return LoadedRun(config, state["classes"], state["num_trained"], parts.model,
                     FeatureBank.from_state_dict(bank, device), kernel_weights, parts.head,
                     state["history"], state["finished"], state.get("data_fingerprint"), path)
