"""The embedded default dataset: scikit-learn's bundled digits (1,797 8x8 images, no
download) exported once as a class-folder tree."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .bundled import default_data_root, write_class_tree
from .split import DataSplit

DIGIT_FOLDERS = tuple(f"digit_{d}" for d in range(10))  # sorted order = the digit
OLD_DIGIT_FOLDERS = tuple(f"class_{d:03d}" for d in range(10))  # their names before 2026-12-06


def export_digits(root=None) -> Path:
    """Write scikit-learn's bundled digits (1,797 8x8 images) as a class-folder tree.

    Layout: ``root/digit_0/digit_0000.png`` ... ``root/digit_9/...``, greyscale PNG,
    pixel values 0..16 scaled to 0..255. Nothing is downloaded: the digits ship inside
    scikit-learn. Re-exporting a complete tree does nothing; a tree an earlier version
    wrote with folders ``class_000`` ... ``class_009`` is rewritten with the new names.
    """
    from sklearn.datasets import load_digits

    root = Path(root) if root is not None else default_data_root() / "digits"
    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    write_class_tree(root, images, digits.target, DIGIT_FOLDERS, "digit", "digits")
    return root


def with_old_folder_names(split: DataSplit) -> DataSplit:
    """The digits' ``split`` as an earlier version of the kit named it (folders
    ``class_000`` ... ``class_009``): the same images in the same order and split, so that
    runs trained then still resume and evaluate on the digits exported now."""
    old = dict(zip(DIGIT_FOLDERS, OLD_DIGIT_FOLDERS))

    def renamed(samples):
        return [(str(Path(path).parent.with_name(old[Path(path).parent.name]) / Path(path).name), label)
                for path, label in samples]

    return DataSplit(list(OLD_DIGIT_FOLDERS), split.num_trained, renamed(split.train), renamed(split.test),
                     renamed(split.heldout))
