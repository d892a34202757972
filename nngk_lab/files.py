"""Checkpoint files: written atomically, read without running code.

A checkpoint is written to a temporary file in the same folder, flushed to disk, then
renamed over the old one, so a process killed mid-write leaves the previous file
intact. Files are read with ``torch.load(weights_only=True)``: a checkpoint can hold
tensors, numbers, strings, lists and dicts, never code.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path

import torch

from .errors import CheckpointError, first_line

FORMAT_VERSION = 1
TEMP_SUFFIX = ".tmp"


def _atomic_write(path, write) -> None:
    """Call ``write(file)`` on a temporary file next to ``path``, then rename it over ``path``.

    Raises :class:`CheckpointError` naming the file if it cannot be written (a full
    disk, no permission); the previous file is then left as it was.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a checkpoint is an ordinary file
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise CheckpointError(f"cannot write {path}: {e.strerror or e}; the previous file was kept") from e
        raise
    _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    # Makes the rename itself survive a power cut, not only a killed process.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open folders
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_save(obj: dict, path) -> None:
    """Save ``obj`` (with the format version added) to ``path`` atomically."""
    _atomic_write(path, lambda f: torch.save({"format_version": FORMAT_VERSION, **obj}, f))


def atomic_write_text(text: str, path) -> None:
    """Write a UTF-8 text file atomically (a killed process leaves the old file whole)."""
    _atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def remove_temp_files(folder) -> int:
    """Delete temporary files that :func:`atomic_save` left behind when its process was
    killed mid-write; return how many. Call only while no other process writes there."""
    removed = 0
    for tmp in Path(folder).glob(f".*{TEMP_SUFFIX}"):
        try:
            tmp.unlink()
            removed += 1
        except OSError:
            pass
    return removed


def safe_load(path, expected_kind: str | None = None, map_location="cpu", required=()) -> dict:
    """Load a file written by :func:`atomic_save`.

    Raises :class:`CheckpointError` naming the file when it is missing, truncated, not a
    nngk_lab file (including any file that would need to run code to load), from a newer
    version, of another ``kind``, or lacks one of the ``required`` keys.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a folder, not a file")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types for truncated or foreign files
        # torch's weights-only unpickler names the global it refused; garbage bytes give other errors.
        if isinstance(e, pickle.UnpicklingError) and "GLOBAL" in str(e):
            raise CheckpointError(f"{path} is not a nngk_lab checkpoint: it holds Python objects other than "
                                  "tensors, numbers and strings, and nngk_lab never loads files that could run "
                                  "code") from e
        reason = first_line(e)
        raise CheckpointError(f"checkpoint {path} cannot be read (truncated, corrupt or not a "
                              f"nngk_lab file): {reason}") from e
    if not isinstance(obj, dict) or not isinstance(obj.get("format_version"), int):
        raise CheckpointError(f"{path} is not a nngk_lab checkpoint")
    if obj["format_version"] > FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path} has format version {obj['format_version']}, newer than "
                              f"this nngk_lab understands ({FORMAT_VERSION}); upgrade nngk_lab")
    if expected_kind is not None and obj.get("kind") != expected_kind:
        raise CheckpointError(f"{path} holds a {obj.get('kind')!r}, not a {expected_kind!r}")
    missing = [key for key in required if key not in obj]
    if missing:
        raise CheckpointError(f"checkpoint {path} is incomplete: it lacks {', '.join(missing)}")
    return obj
