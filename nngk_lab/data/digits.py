"""Data: class-folder datasets that also return indices, class/image splits, transforms,
and the embedded default dataset (scikit-learn's digits exported as an image tree).

The layout is the original's: a parent folder holding one sub-folder per class
(``class_000/``, ``class_001/``, ...). Sorted folder names give the labels, so leading
zeros matter: ``class_10`` sorts before ``class_2``."""

from __future__ import annotations

import argparse
import os
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence
import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms as T
from tqdm.auto import tqdm
from ..errors import DataError, first_line


def default_data_root() -> Path:
    """Where the embedded digits tree is written: ``$NNGK_DATA`` or ``~/.cache/nngk_lab``."""
    return Path(os.environ.get("NNGK_DATA", Path.home() / ".cache" / "nngk_lab"))


def export_digits(root=None) -> Path:
    """Write scikit-learn's bundled digits (1,797 8x8 images) as a class-folder tree.

    Layout: ``root/class_000/digit_0000.png`` ... ``root/class_009/...``, greyscale PNG,
    pixel values 0..16 scaled to 0..255. Nothing is downloaded: the digits ship inside
    scikit-learn. Re-exporting an existing complete tree does nothing.
    """
    from sklearn.datasets import load_digits

    root = Path(root) if root is not None else default_data_root() / "digits"
    marker = root / ".complete"
    if marker.exists():
        return root
    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    try:
        for i, (image, label) in enumerate(zip(images, digits.target)):
            folder = root / f"class_{label:03d}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image, mode="L").save(folder / f"digit_{i:04d}.png")
        marker.touch()  # last, so that an interrupted export is redone
    except OSError as e:
        raise DataError(f"cannot write the digits to {root} ({e.strerror or e}); set NNGK_DATA to a writable "
                        "folder") from e
    return root
