"""A cache on disk for slow notebook work (embeddings, sweeps, UMAP maps): a result is
saved next to the run it came from and reused while its key (the run's checkpoint, the
settings) is unchanged."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..errors import CheckpointError
from ..files import atomic_save, safe_load
from ..training.runs import CHECKPOINT_NAME

CACHE_KIND = "nngk_lab.NotebookCache"


def run_fingerprint(save_dir) -> dict:
    """Identifies one state of a run's checkpoint, so caches made from it can tell when
    the run was retrained."""
    path = Path(save_dir) / CHECKPOINT_NAME
    if not path.is_file():
        raise CheckpointError(f"{save_dir} holds no {CHECKPOINT_NAME}; train the run first (notebook 2)")
    stat = path.stat()
    return {"run": str(Path(save_dir).resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def cached(path, compute: Callable[[], dict], key: dict) -> dict:
    """``compute()``'s result, saved to ``path`` and reused while ``key`` is unchanged.

    The result is a dict of tensors, numbers, strings, lists and dicts (what
    ``torch.load(weights_only=True)`` reads back). A missing, unreadable or stale file
    (another ``key``) is recomputed and rewritten atomically.
    """
    path = Path(path)
    if path.exists():
        try:
            stored = safe_load(path, CACHE_KIND)
            if stored["key"] == key:
                return stored["value"]
        except (CheckpointError, KeyError):
            pass
    value = compute()
    atomic_save({"kind": CACHE_KIND, "key": key, "value": value}, path)
    return value


def fingerprint(*values) -> str:
    """A short hash of tensors, arrays and plain values: a cache key that changes
    whenever the inputs do."""
    digest = hashlib.sha1()
    for value in values:
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().contiguous().numpy()
        if isinstance(value, np.ndarray):
            digest.update(f"{value.dtype}{value.shape}".encode())
            digest.update(np.ascontiguousarray(value).tobytes())
        else:
            digest.update(repr(value).encode())
    return digest.hexdigest()[:16]
