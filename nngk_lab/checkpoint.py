"""Checkpoint files: written atomically, read without running code.

A checkpoint is written to a temporary file in the same folder, flushed to disk, then
renamed over the old one, so a process killed mid-write leaves the previous file
intact. Files are read with ``torch.load(weights_only=True)``: a checkpoint can hold
tensors, numbers, strings, lists and dicts, never code.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from .errors import CheckpointError

FORMAT_VERSION = 1


def atomic_save(obj: dict, path) -> None:
    """Save ``obj`` (with the format version added) to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format_version": FORMAT_VERSION, **obj}, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a checkpoint is an ordinary file
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def safe_load(path, expected_kind: str | None = None, map_location="cpu") -> dict:
    """Load a file written by :func:`atomic_save`, raising :class:`CheckpointError`
    with the file name for a missing, truncated, foreign or newer-version file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types for truncated or foreign files
        raise CheckpointError(f"checkpoint {path} cannot be read (truncated, corrupt or not a "
                              f"nngk_lab file): {str(e).splitlines()[0][:200]}") from e
    if not isinstance(obj, dict) or "format_version" not in obj:
        raise CheckpointError(f"{path} is not a nngk_lab checkpoint")
    if obj["format_version"] > FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path} has format version {obj['format_version']}, newer than "
                              f"this nngk_lab understands ({FORMAT_VERSION}); upgrade nngk_lab")
    if expected_kind is not None and obj.get("kind") != expected_kind:
        raise CheckpointError(f"{path} holds a {obj.get('kind')!r}, not a {expected_kind!r}")
    return obj
