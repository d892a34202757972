"""A harder dataset that ships with the kit: 1,200 of Fashion-MNIST's 28x28 greyscale
photos of clothes (Zalando, MIT licence: ``fashion_small.LICENSE``), 120 per class,
written once as a class-folder tree. The first five classes are trained, the last five
held out, as every tree here splits them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .bundled import default_data_root, write_class_tree
from .release_tree import MANIFEST

FASHION_FILE = Path(__file__).with_name("fashion_small.npz")
FASHION_CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
                   "ankle-boot")
FASHION_FOLDERS = tuple(f"{i}_{name}" for i, name in enumerate(FASHION_CLASSES))  # sorted order = the label


def load_fashion_small() -> tuple[np.ndarray, np.ndarray]:
    """The bundled photos (N x 28 x 28 uint8) and their labels (N, 0-9), class by class."""
    with np.load(FASHION_FILE) as f:
        return f["images"], f["labels"]


def export_fashion(root=None) -> Path:
    """Write the bundled Fashion-MNIST photos as a class-folder tree (default
    ``$NNGK_DATA/fashion``): ``0_t-shirt/photo_0000.png`` ... ``9_ankle-boot/...``, with a
    manifest (``.nngk_dataset.json``) that ``NNGK_DATASET`` reads like a prepared tree's:
    five trained classes, and the small CNN at the photos' own 28 px. Re-exporting a
    complete tree does nothing."""
    root = Path(root) if root is not None else default_data_root() / "fashion"
    images, labels = load_fashion_small()
    if write_class_tree(root, images, labels, FASHION_FOLDERS, "photo", "Fashion-MNIST photos") \
            or not (root / MANIFEST).is_file():
        trained = len(FASHION_CLASSES) // 2
        manifest = {"dataset": "fashion", "title": "Fashion-MNIST (1,200 bundled photos)",
                    "source": str(FASHION_FILE), "classes": len(FASHION_CLASSES), "trained_classes": trained,
                    "images": len(labels), "trained_images": int((labels < trained).sum()),
                    "recipe": {"model": "small_cnn", "input_size": 28}}
        (root / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return root
