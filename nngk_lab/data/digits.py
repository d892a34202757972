"""The embedded default dataset: scikit-learn's bundled digits (1,797 8x8 images, no
download) exported once as a class-folder tree."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import DataError


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
