"""Helpers the notebooks share: fast/full settings, which dataset, where runs live, thread
and device set-up, "load notebook 2's run or train one", and a cache on disk.

Fast mode (``NNGK_FAST=1``) is what the test suite runs: fewer epochs and smaller
sweeps, written to separate run folders so it never overwrites a student's full run.

``NNGK_DATASET`` switches every notebook from the embedded digits to photos:
``fashion`` (1,200 Fashion-MNIST photos that ship with the kit, written on first use), the
name of a tree prepared by ``python -m nngk_lab.datasets prepare`` in the data folder
(``NNGK_DATASET=cifar100`` reads ``$NNGK_DATA/cifar100``), or the path of any class-folder
tree. The model, input size and time budget follow the dataset and the device.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ..data.bundled import default_data_root
from ..data.digits import export_digits
from ..data.fashion import export_fashion
from ..data.folders import list_classes, scan_image_folder
from ..data.release_tree import read_manifest
from ..device import available_cores, resolve_device
from ..errors import CheckpointError, DataError, NNGKError
from ..progress import transient_progress
from ..training.config import MODEL_DEFAULTS, make_config
from ..training.loop import train
from ..training.runs import CHECKPOINT_NAME, LoadedRun, load_run, read_checkpoint


def fast_mode() -> bool:
    """True when ``NNGK_FAST`` is set to anything but ``0``/``false``/empty."""
    return os.environ.get("NNGK_FAST", "").strip().lower() not in ("", "0", "false", "no", "off")


@dataclass(frozen=True)
class NotebookSettings:
    """Sizes of the notebooks' work. :func:`settings` picks the fast or the full ones."""

    fast: bool
    training: dict                       # notebook 2's run: make_config settings
    sweep_sigmas: tuple[float, ...]      # notebook 3: one short training per sigma ...
    sweep_training: dict                 # ... with these settings
    test_sigmas: tuple[float, ...]       # notebook 3: test-time sigma grid
    test_ks: tuple[int, ...]             # notebook 3: test-time K values
    umap_epochs: int | None              # notebook 4: None = umap-learn's default (500 here)
    run_suffix: str
    dataset: str = "digits"              # names the run folders: one set per dataset
    refresh_study: dict | None = None    # notebook 2: explore.refresh_study's epochs and image limit
    validation: dict | None = None       # notebook 3: explore.validation_sweep's arguments (K on validation classes)

    @property
    def data_dir(self) -> Path:
        """The class-folder tree the notebooks use (the digits are exported on first use)."""
        return Path(self.training["data_dir"]) if "data_dir" in self.training else export_digits()

    @property
    def main_run(self) -> Path:
        """The run notebook 2 trains and the later notebooks load."""
        return runs_dir() / f"{self.dataset}{self.run_suffix}"

    @property
    def sweep_dir(self) -> Path:
        return runs_dir() / f"sigma-sweep{self._dataset_suffix}{self.run_suffix}"

    @property
    def validation_dir(self) -> Path:
        """Where notebook 3's validation sweep keeps its runs, class subset and result."""
        return runs_dir() / f"validation{self._dataset_suffix}{self.run_suffix}"

    @property
    def cache_dir(self) -> Path:
        return runs_dir() / f"cache{self._dataset_suffix}{self.run_suffix}"

    @property
    def _dataset_suffix(self) -> str:
        return "" if self.dataset == "digits" else f"-{self.dataset}"


def _log_grid(low: float, high: float, n: int) -> tuple[float, ...]:
    return tuple(float(f"{v:.3g}") for v in torch.logspace(torch.log10(torch.tensor(low)),
                                                           torch.log10(torch.tensor(high)), n).tolist())


@dataclass(frozen=True)
class DatasetChoice:
    """The dataset ``NNGK_DATASET`` names: ``data_dir`` None means the embedded digits."""

    name: str
    data_dir: Path | None = None
    manifest: dict | None = None  # of a tree prepared by nngk_lab.datasets
    note: str | None = None       # why the digits are used although another was asked for


def chosen_dataset() -> DatasetChoice:
    """Read ``NNGK_DATASET``: unset or ``digits``, a prepared tree's name in the data folder,
    or a folder's path. Raises :class:`DataError` when it names nothing there, except where a
    ``NAME.unavailable`` file next to the tree says why it could not be prepared (Binder
    builds offline): then the digits are used, and :func:`setup` says why."""
    value = os.environ.get("NNGK_DATASET", "").strip()
    if value in ("", "digits"):
        return DatasetChoice("digits")
    if value == "fashion":  # ships with the kit: no prepare step
        folder = export_fashion()
        return DatasetChoice("fashion", folder, read_manifest(folder))
    folder = Path(value).expanduser() if os.sep in value or value.startswith(".") else default_data_root() / value
    manifest = read_manifest(folder)
    if manifest is not None:
        return DatasetChoice(folder.name, folder, manifest)
    unavailable = folder.with_name(f"{folder.name}.unavailable")
    if unavailable.is_file():
        return DatasetChoice("digits", note=f"NNGK_DATASET={value}, but {unavailable.read_text().strip()}; "
                                            "the notebooks use the digits instead")
    if folder.is_dir():
        return DatasetChoice(folder.name, folder)  # a class-folder tree of your own
    raise DataError(f"NNGK_DATASET={value}, but {folder} holds no prepared dataset: prepare it with python -m "
                    f"nngk_lab.datasets prepare NAME --source PATH --out {folder} (docs/datasets.md)"
                    ", or unset NNGK_DATASET for the digits")


def _photo_training(choice: DatasetChoice, fast: bool, gpu: bool) -> tuple[dict, dict]:
    """Notebook 2's run and notebook 3's sweep runs on a photo dataset: ResNet18 at 224 px
    on a GPU, the small CNN (at CIFAR's native 32 px, other photos at 64) on a CPU and in
    fast mode, each with its own recipe (``config.MODEL_DEFAULTS``), flips, and a time
    budget in minutes. A manifest's ``recipe`` (the bundled Fashion-MNIST photos: the small
    CNN at their own 28 px) overrides model and input size on any device but in fast mode."""
    manifest = choice.manifest or {}
    data = dict(data_dir=str(choice.data_dir), num_classes=manifest.get("trained_classes"))
    if fast:
        recipe = {**data, "model": "small_cnn", "hflip": True, "input_size": 16, "num_neighbours": 10,
                  "batch_size": 16, "max_epochs": 2}
    elif gpu:
        recipe = {**data, "model": "resnet18", "input_size": 224, "max_epochs": 30, "max_time": 20}
    else:
        size = 32 if manifest.get("dataset") == "cifar100" else 64
        recipe = {**data, "model": "small_cnn", "hflip": True, "input_size": size, "max_epochs": 10, "max_time": 10}
    if not fast:
        recipe.update(manifest.get("recipe", {}))
    if manifest.get("trained_images"):
        # A small tree (--per_class) can have fewer centres than K or a batch; each trained
        # class keeps at least 80% of its images, less one for rounding, as training images.
        centres = int(0.8 * manifest["trained_images"]) - manifest["trained_classes"]
        for name, most in (("num_neighbours", centres - 1), ("batch_size", centres)):
            recipe[name] = max(1, min(recipe.get(name, MODEL_DEFAULTS[recipe["model"]][name]), most))
    budget = recipe.get("max_time")
    return recipe, {**recipe, "max_epochs": 1 if fast else 4, "max_time": budget and budget / 5}


def _validation(choice: DatasetChoice, fast: bool, sweep: dict) -> dict | None:
    """Notebook 3's choice of K on validation classes: of the trained classes, about the
    first 60% are trained and the others are the validation classes (the digits: train
    0-2, retrieve among 3-4; the held-out 5-9 are never read). Full mode: two seeds of 4
    epochs, as ``tools/heldout_curve.py`` measured; fast mode: one seed, on 16 px inputs.
    On a small photo tree the K are capped by the number of centres the subset has. None
    for a tree of fewer than 4 trained classes: it cannot train 2 and spare 2 for validation."""
    manifest = choice.manifest or {}
    first = manifest.get("trained_classes") or 5  # the digits' (and a tree of 10 classes') first half
    if first < 4:
        return None
    trained = max(2, min(first - 2, round(0.6 * first)))
    values = [20, 200]
    if manifest.get("trained_images"):
        centres = int(0.8 * manifest["trained_images"] / first * trained) - trained - 1
        values = sorted({max(1, min(v, centres)) for v in values})
    runs = {k: v for k, v in sweep.items() if k != "num_classes"}  # the sweep's own: the first 60%
    runs["max_epochs"] = 4  # also in fast mode: after 2 epochs K = 20 and 200 were within 0.02 of each other
    return dict(setting="num_neighbours", values=tuple(values), first_classes=first, num_classes=trained,
                seeds=(0,) if fast else (0, 1), **runs)


def settings(fast: bool | None = None) -> NotebookSettings:
    """The notebooks' settings: full (what a student runs) or fast (``NNGK_FAST=1``:
    2 epochs on 16x16 inputs, small sweeps, short UMAP optimisation), on the digits or on
    the dataset ``NNGK_DATASET`` names (:func:`chosen_dataset`)."""
    fast = fast_mode() if fast is None else fast
    choice = chosen_dataset()
    if choice.data_dir is not None:
        training, sweep = _photo_training(choice, fast, torch.cuda.is_available())
    elif fast:
        training, sweep = dict(max_epochs=2, input_size=16), dict(max_epochs=1, input_size=16)
    else:
        training, sweep = dict(max_epochs=MODEL_DEFAULTS["small_cnn"]["max_epochs"]), dict(max_epochs=4)
    training = {**training, "monitor_test": True}  # notebook 2 draws the test accuracy of every epoch
    scale = make_config(**training).sigma  # sigma grids around the training sigma
    factors = (0.3, 3.0) if fast else (0.1, 0.3, 1.0, 3.0, 10.0)
    return NotebookSettings(fast=fast, training=training, sweep_training=sweep,
                            sweep_sigmas=tuple(float(f"{scale * s:.3g}") for s in factors),
                            test_sigmas=_log_grid(scale * (0.03 if fast else 0.01), scale * (30 if fast else 100),
                                                  7 if fast else 25),
                            test_ks=(1, 10, 200) if fast else (1, 5, 20, 50, 200, 1000),
                            umap_epochs=50 if fast else 200, run_suffix="-fast" if fast else "", dataset=choice.name,
                            refresh_study=dict(epochs=10, limit=240 if fast else 2000 if choice.data_dir else None),
                            validation=_validation(choice, fast, sweep))


def project_root(start: Path | None = None) -> Path | None:
    """The checkout holding ``nngk_lab/`` and ``pyproject.toml``, searched upwards from
    ``start`` (default: the working directory, which is ``notebooks/`` in Jupyter)."""
    start = Path.cwd() if start is None else Path(start)
    for folder in (start, *start.resolve().parents):
        if (folder / "pyproject.toml").is_file() and (folder / "nngk_lab" / "__init__.py").is_file():
            return folder
    return None


def runs_dir() -> Path:
    """Where runs and caches go: ``$NNGK_RUNS``, else ``runs/`` at the project root (ignored
    by git), else ``~/.cache/nngk_lab/runs``. The same folder whatever the notebook's
    working directory."""
    if os.environ.get("NNGK_RUNS"):
        return Path(os.environ["NNGK_RUNS"])
    root = project_root()
    return root / "runs" if root is not None else Path.home() / ".cache" / "nngk_lab" / "runs"


def limit_threads(cores: int | None = None) -> int:
    """Use at most the cores this process may run on, in torch, BLAS and numba.

    Libraries size their thread pools from the machine's core count, which in a container
    (Binder: 1 CPU) can be far more than the quota. Call before importing umap.
    """
    cores = cores or available_cores()
    torch.set_num_threads(cores)
    os.environ["NUMBA_NUM_THREADS"] = str(cores)  # read when numba is first imported
    from threadpoolctl import threadpool_limits
    threadpool_limits(cores)
    import sys
    if "numba" in sys.modules:
        import numba
        numba.set_num_threads(min(cores, numba.config.NUMBA_NUM_THREADS))
    return cores


def setup(device: str = "auto", verbose: bool = True) -> torch.device:
    """Limit threads to the usable cores and pick the device (a GPU when there is one).

    Prints what it chose, with a note when the notebook runs on the CPU.
    """
    cores = limit_threads()
    dev = resolve_device(device)
    choice = chosen_dataset()
    if verbose:
        if choice.note:
            print(choice.note)
        if choice.data_dir is not None:
            print(f"Dataset: {choice.name} ({choice.data_dir}), from NNGK_DATASET; unset it for the digits.")
        mode = "fast mode (NNGK_FAST=1): small runs for testing" if fast_mode() else "full mode"
        if dev.type == "cuda":
            print(f"Device: {dev} ({torch.cuda.get_device_name(dev)}); {mode}.")
        else:
            print(f"Device: CPU with {cores} core(s) - no GPU found, so training runs on the CPU "
                  f"(fine for the digits: about a minute); {mode}.")
    return dev


def start(device: str = "auto") -> tuple[NotebookSettings, torch.device]:
    """Every notebook's set-up in one call: :func:`settings` and :func:`setup`, and on the
    digits a line saying how to switch to photos."""
    chosen = settings()
    dev = setup(device)
    if chosen.dataset == "digits":
        print("Dataset: the embedded digits; NNGK_DATASET=fashion (1,200 photos of clothes, bundled) or cifar100 "
              "(or another dataset prepared as docs/datasets.md says) switches every notebook to photos.")
    return chosen, dev


def show_error(function: Callable, *args, **kwargs):
    """Call ``function`` and print the nngk_lab error it raises, as a student would see it.

    Returns the function's result, or None when it raised an :class:`NNGKError`.
    """
    try:
        return function(*args, **kwargs)
    except NNGKError as e:
        print(f"{type(e).__name__}: {e}")
        return None


def train_or_load(save_dir, device: torch.device | str = "cpu", **config) -> LoadedRun:
    """The run in ``save_dir``: loaded if finished, resumed if interrupted, else trained.

    ``config`` holds :func:`nngk_lab.training.config.make_config` settings (the digits defaults
    apply without ``data_dir``). A finished run is loaded as it is, even if its settings
    differ from ``config``; delete the folder to retrain. A run trained on other class
    folders than the data folder has now (the digits' before they were renamed) is moved
    aside to ``<save_dir>-old-classes`` with its caches, and trained again.
    """
    save_dir = Path(save_dir)
    checkpoint = save_dir / CHECKPOINT_NAME
    if checkpoint.exists() and not set_aside_if_other_classes(save_dir, config):
        try:
            run = load_run(save_dir, device)
        except CheckpointError:
            run = None  # no bank yet: the run stopped before its first refresh
        if run is not None and run.finished:
            print(f"Loaded the finished run in {save_dir} ({len(run.history)} epochs); "
                  "delete that folder to train again.")
            return run
        print(f"Resuming the unfinished run in {save_dir}.")
    with transient_progress():
        result = train(make_config(save_dir=str(save_dir), device=str(device), **config), resume=checkpoint.exists())
    if result.stop_reason == "interrupted":
        raise KeyboardInterrupt(f"training interrupted; run this cell again to resume from {save_dir}")
    print(f"Trained {len(result.history)} epoch(s) in {result.evaluation.get('minutes', 0) * 60:.0f} s; "
          f"saved in {save_dir}.")
    return load_run(save_dir, device)


def set_aside_if_other_classes(save_dir: Path, config: dict) -> bool:
    """Move the run in ``save_dir`` aside when the class folders it was trained on are not
    those of its data folder now (``config``'s ``data_dir``, else the digits), so that
    neither it nor the caches next to it are used. Returns True when it moved it."""
    try:
        trained_on = read_checkpoint(save_dir / CHECKPOINT_NAME)["classes"]
    except CheckpointError:
        return False  # unreadable: loading or resuming says why
    data_dir = config.get("data_dir") or export_digits()
    classes = list_classes(data_dir, config.get("im_ext"))  # the top folder only: loading reads the rest
    if trained_on == classes:
        return False
    aside = save_dir.with_name(f"{save_dir.name}-old-classes")
    for n in range(2, 1000):
        if not aside.exists():
            break
        aside = save_dir.with_name(f"{save_dir.name}-old-classes-{n}")
    save_dir.rename(aside)
    print(f"The run in {save_dir} was trained on class folders {trained_on[:2]}..., but {data_dir} now has "
          f"{classes[:2]}...; moved it to {aside} and training again.")
    return True


def folder_summary(root, files_per_class: int = 2, max_classes: int = 12) -> str:
    """A class-folder tree as text: each class folder, its image count and first files."""
    root = Path(root)
    classes, samples = scan_image_folder(root)
    lines = [f"{root}/  ({len(classes)} classes, {len(samples)} images)"]
    width = max(len(name) for name in classes[:max_classes]) + 1  # names of any length line up
    for label, name in enumerate(classes[:max_classes]):
        files = [Path(p).name for p, y in samples if y == label]
        shown = ", ".join(files[:files_per_class]) + (", ..." if len(files) > files_per_class else "")
        lines.append(f"  {name + '/':{width}s}  {len(files):4d} images: {shown}")
    if len(classes) > max_classes:
        lines.append(f"  ... {len(classes) - max_classes} more class folders")
    return "\n".join(lines)


def malformed_examples(root) -> dict[str, Path]:
    """Write small broken data folders under ``root`` (for notebook 1 to show the errors):
    a missing folder, a file instead of a folder, a folder without class sub-folders, a
    class folder without images, and a tree holding an unreadable image."""
    root = Path(root)
    examples = {name: root / name for name in ("missing", "a_file.png", "no_class_folders",
                                                "empty_class", "corrupt_image")}
    root.mkdir(parents=True, exist_ok=True)
    examples["a_file.png"].write_bytes(b"not a folder")
    (examples["no_class_folders"]).mkdir(exist_ok=True)
    (examples["no_class_folders"] / "image.png").write_bytes(b"")
    for name in ("empty_class", "corrupt_image"):
        for folder in ("class_000", "class_001"):
            (examples[name] / folder).mkdir(parents=True, exist_ok=True)
    from PIL import Image
    for name in ("empty_class", "corrupt_image"):
        Image.new("L", (8, 8)).save(examples[name] / "class_000" / "ok.png")
    (examples["empty_class"] / "class_001" / "notes.txt").write_text("not an image")
    (examples["corrupt_image"] / "class_001" / "broken.png").write_bytes(b"\x89PNG truncated")
    return examples
