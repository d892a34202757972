"""Datasets that ship with the kit (the digits, a small Fashion-MNIST sample) written once
as class-folder trees under the data folder, each marked complete when written."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import DataError

COMPLETE = ".complete"  # holds the class folder names the tree was written with


def default_data_root() -> Path:
    """Where the bundled trees are written: ``$NNGK_DATA`` or ``~/.cache/nngk_lab``."""
    return Path(os.environ.get("NNGK_DATA", Path.home() / ".cache" / "nngk_lab"))


def write_class_tree(root: Path, images: np.ndarray, labels: np.ndarray, class_names: Sequence[str],
                     file_prefix: str, what: str) -> bool:
    """Write greyscale ``images`` (uint8, N x H x W) as ``root/<class_names[label]>/<file_prefix>_<i>.png``.

    The marker :data:`COMPLETE`, written last, records the folder names: a complete tree with
    these names is left as it is (returns False); one written with other names (an earlier
    version's) has its class folders removed and is written again, so that no stale folder
    becomes an extra class. Returns True when it wrote the tree. Raises :class:`DataError`
    naming ``what`` when ``root`` cannot be written.
    """
    marker = root / COMPLETE
    names = list(class_names)
    try:
        written = json.loads(marker.read_text() or "null") if marker.is_file() else None
    except (OSError, ValueError):
        written = None  # an unreadable marker: write the tree again
    if written == names:
        return False
    try:
        if marker.is_file():  # a tree this kit wrote, with other folder names
            marker.unlink()
            for folder in root.iterdir():
                if folder.is_dir() and not folder.name.startswith(".") and folder.name not in names:
                    shutil.rmtree(folder)
        for i, (image, label) in enumerate(zip(images, labels)):
            folder = root / names[int(label)]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image, mode="L").save(folder / f"{file_prefix}_{i:04d}.png")
        marker.write_text(json.dumps(names))  # last, so that an interrupted export is redone
    except OSError as e:
        raise DataError(f"cannot write the {what} to {root} ({e.strerror or e}); set NNGK_DATA to a writable "
                        "folder") from e
    return True
