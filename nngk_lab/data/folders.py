"""Class-folder trees: scanning one, reading its images as RGB, finding unreadable ones,
and a dataset that also returns each image's index.

The layout is the original's: a parent folder holding one sub-folder per class
(``class_000/``, ``class_001/``, ...). Sorted folder names give the labels, so leading
zeros matter: ``class_10`` sorts before ``class_2``."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from ..errors import DataError, first_line
from .seeds import mix_seed

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


Sample = tuple[str, int]  # (file path, class index in the sorted class list)


def _normalise_extensions(extensions: str | Sequence[str] | None) -> tuple[str, ...]:
    if extensions is None:
        return IMAGE_EXTENSIONS
    if isinstance(extensions, str):
        extensions = [extensions]
    return tuple("." + e.lower().lstrip(".") for e in extensions)


def list_classes(root, extensions: str | Sequence[str] | None = None) -> list[str]:
    """The class folders of a tree in sorted order (hidden ones ignored), from a listing of
    ``root`` alone: no class folder is opened. Raises :class:`DataError` for a missing
    folder, a file instead of a folder, or a tree without class sub-folders (``extensions``:
    which loose files the message counts as images)."""
    root = Path(root)
    if not root.exists():
        raise DataError(f"data folder {root} does not exist")
    if not root.is_dir():
        raise DataError(f"data folder {root} is a file, not a folder of class sub-folders")
    entries = _list_folder(root)
    classes = sorted(p.name for p in entries if p.is_dir() and not p.name.startswith("."))
    if not classes:
        exts = _normalise_extensions(extensions)
        loose = sum(1 for p in entries if p.is_file() and p.suffix.lower() in exts)
        hint = f"; it holds {loose} images directly: move them into one sub-folder per class" if loose else ""
        raise DataError(f"data folder {root} has no class sub-folders (expected e.g. {root}/class_000/){hint}")
    return classes


def scan_image_folder(root, num_classes: int | None = None,
                      extensions: str | Sequence[str] | None = None) -> tuple[list[str], list[Sample]]:
    """List the classes and images of a class-folder tree.

    Hidden folders and files (names starting with '.') and files with other extensions
    are ignored. ``num_classes`` keeps the first N classes in sorted order, as the
    original ``--num_classes`` did.

    Returns ``(class_names, samples)`` where each sample is ``(path, class_index)``.
    Raises :class:`DataError` for a missing folder, a file instead of a folder, a tree
    without class sub-folders, an empty class folder, or too few classes.
    """
    root = Path(root)
    exts = _normalise_extensions(extensions)
    classes = list_classes(root, extensions)
    if num_classes is not None:
        if num_classes < 1:
            raise DataError(f"--num_classes must be at least 1, got {num_classes}")
        if num_classes > len(classes):
            raise DataError(f"--num_classes is {num_classes} but {root} has only {len(classes)} class folders")
        classes = classes[:num_classes]
    samples: list[Sample] = []
    empty, nested = [], []
    for label, name in enumerate(classes):
        children = _list_folder(root / name)
        files = sorted(
            f for f in children
            if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in exts
        )
        if not files:
            empty.append(name)
            nested += [f"{name}/{f.name}" for f in children if f.is_dir() and not f.name.startswith(".")]
        samples.extend((str(f), label) for f in files)
    if empty:
        hint = (f" (they hold sub-folders such as {nested[0]}: is --data_dir one level too high?)"
                if nested else "; remove them or add images")
        raise DataError(
            f"class folder(s) {', '.join(empty[:5])}{' ...' if len(empty) > 5 else ''} in {root} "
            f"hold no images with extension {'/'.join(exts)}{hint}")
    return classes, samples


def _list_folder(folder: Path) -> list[Path]:
    try:
        return list(folder.iterdir())
    except OSError as e:
        raise DataError(f"cannot list folder {folder}: {e.strerror or e}") from e


def _grey_to_uint8(values: np.ndarray, mode: str) -> np.ndarray:
    """8-bit pixels of a 16-bit, 32-bit or float greyscale image, from its nominal range:
    the top 8 of 16 bits (of 8, 16 or 32 for a 32-bit image: the fewest that hold its
    values), 0-1 or 0-255 for float. Negative or larger values are scaled from the image's
    own minimum and maximum instead; NaN and infinities count as 0."""
    values = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = float(values.min()), float(values.max())
    if mode == "F" and low >= 0 and high <= 255:
        scaled = values * 255 if high <= 1 else values
    elif mode != "F" and low >= 0:
        bits = 16 if mode.startswith("I;16") else next(b for b in (8, 16, 32) if high < 2.0**b)
        scaled = np.floor(values / 2.0 ** (bits - 8))  # as a 16-bit value >> 8
    else:
        scaled = (values - low) * (255 / max(high - low, 1e-12))
    return np.rint(scaled).clip(0, 255).astype(np.uint8)


def load_rgb(path: str) -> Image.Image:
    """Open an image as RGB (greyscale, 16-bit, palette and RGBA images are converted).

    A file that cannot be decoded stops the run with a :class:`DataError` naming it,
    rather than being skipped: skipping would silently change the dataset (and the
    feature bank's indices), so the run would not match its data folder any more.
    """
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode.startswith("I") or im.mode == "F":
                # 16-bit, 32-bit and float greyscale: PIL's own conversion clips everything
                # above 255 to white (and a float image in [0, 1] to black).
                im = Image.fromarray(_grey_to_uint8(np.asarray(im), im.mode))
            if im.mode in ("RGBA", "LA", "P", "PA"):
                # Composite on white so transparent pixels do not turn black.
                im = im.convert("RGBA")
                background = Image.new("RGBA", im.size, (255, 255, 255, 255))
                im = Image.alpha_composite(background, im)
            return im.convert("RGB")
    except MemoryError:
        raise  # not a broken file: training's out-of-memory handling must see it
    except Exception as e:  # PIL raises many types for broken files; all mean "unreadable"
        reason = first_line(e)
        raise DataError(f"cannot read image {path} ({reason}); replace or delete it (python -m nngk_lab.datasets "
                        "check DATA_DIR lists every unreadable image)") from e


def find_unreadable_images(samples: Sequence[Sample], progress: bool = True) -> list[tuple[str, str]]:
    """Decode every sample's image; return ``(path, reason)`` for each that cannot be read."""
    bad = []
    for path, _ in tqdm(samples, desc="checking images", disable=not progress, leave=False):
        try:
            load_rgb(path)
        except DataError as e:
            bad.append((path, str(e.__cause__ or e)))
    return bad


class ImageSamples(Dataset):
    """A list of ``(path, label)`` samples that yields ``(image, label, index)``.

    The index is the sample's position in this list; the feature bank stores each centre
    at that index, whatever order a loader visits the samples in.

    With a ``seed``, the random transform of a sample is a pure function of
    ``(seed, epoch, index)`` (set the epoch with :meth:`set_epoch`): a run resumed
    mid-epoch, or run with another number of loader workers, sees the same augmented
    images. Without one, transforms draw from torch's global random generator.
    """

    def __init__(self, samples: Sequence[Sample], transform: Callable | None = None, seed: int | None = None):
        self.samples = list(samples)
        self.transform = transform
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def labels(self) -> torch.Tensor:
        return torch.tensor([label for _, label in self.samples], dtype=torch.long)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        image = load_rgb(path)
        if self.transform is not None and self.seed is not None:
            # torchvision's random transforms draw from the global CPU generator: seed it for
            # this sample, then put its state back (torch.manual_seed would cost 50x more).
            generator = torch.default_generator
            state = generator.get_state()
            generator.manual_seed(mix_seed(self.seed, self.epoch, index))
            try:
                image = self.transform(image)
            finally:
                generator.set_state(state)
        elif self.transform is not None:
            image = self.transform(image)
        return image, label, index
