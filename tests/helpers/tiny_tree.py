"""Shared helpers for the reliability tests: a tiny real image tree and a tiny run."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

from nngk_lab.training import loop as train_module
from nngk_lab.training.config import make_config

DIGITS = load_digits()


def make_tree(root: Path, num_classes: int = 4, per_class: int = 20) -> Path:
    """``root/class_000/im_000.png`` ...: real 8x8 digit images, greyscale PNG."""
    for c in range(num_classes):
        folder = root / f"class_{c:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        for i, image in enumerate(DIGITS.images[DIGITS.target == c][:per_class]):
            Image.fromarray(np.uint8(image * 255 / 16), "L").save(folder / f"im_{i:03d}.png")
    return root


def tiny_config(data_dir, save_dir, **settings):
    """A run of a few seconds: 2 trained classes x 16 images, 8x8 input, small CNN. Random
    crops, flips and dropout are on, so every random stream is exercised. The paper's
    centre scheme, with the test images measured at every refresh."""
    base = dict(data_dir=str(data_dir), save_dir=str(save_dir), model="small_cnn", input_size=8, batch_size=8,
                num_neighbours=10, max_epochs=3, update_interval=1, workers=0, progress=False,
                learning_rate=1e-3, sigma=1.0, dropout=0.1, hflip=True, centres="paper", monitor_test=True)
    return make_config(**{**base, **settings})


def tiny_argv(data_dir, save_dir, *extra, max_epochs: int = 3) -> list[str]:
    """The same run as :func:`tiny_config`, as command-line flags."""
    return ["--data_dir", str(data_dir), "--save_dir", str(save_dir), "--model", "small_cnn",
            "--input_size", "8", "--batch_size", "8", "--num_neighbours", "10", "--max_epochs", str(max_epochs),
            "--update_interval", "1", "--workers", "0", "--no_progress", "--learning_rate", "1e-3",
            "--sigma", "1.0", "--dropout", "0.1", "--centres", "paper", "--monitor_test", "true", *extra]


def history_without_time(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in entry.items() if k != "minutes"} for entry in history]


def same_tensors(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture
def one_thread(monkeypatch):
    """Train on one thread: on a shared 2-core machine two threads are many times slower."""
    threads = torch.get_num_threads()
    monkeypatch.setattr(train_module, "available_cores", lambda: 1)
    yield
    torch.set_num_threads(threads)


def subprocess_env() -> dict:
    """Environment for a training subprocess (the package importable from this checkout)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2]) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def pin_to_one_core() -> None:
    """preexec_fn for a training subprocess: one core, so torch uses one thread."""
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
