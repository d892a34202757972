"""Which exact backend ``nearest_neighbours(..., backend="auto")`` uses on this machine.

Which of torch (matrix products + top-k) and faiss (``IndexFlatL2``) is faster depends on
the CPU and on the BLAS libraries each links: torch was 3x faster than faiss on an Intel
Xeon with AVX-512, faiss 1.3-1.4x faster on an AMD EPYC (docs/performance.md). So the
first large search on a machine times both on one random problem (a few seconds) and
caches the winner per machine in ``search_backend.json`` in the cache folder
(``$NNGK_LAB_CACHE_DIR``, else ``$XDG_CACHE_HOME/nngk_lab``, else ``~/.cache/nngk_lab``).
Nothing is downloaded. Where that folder cannot be written, :func:`rule_backend` decides
instead, without timing anything.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
from pathlib import Path
from typing import Callable

import torch

from ..device import cpu_description
from ..errors import CheckpointError, ConfigError
from ..files import atomic_write_text

# Below this many multiply-adds (Q x N x D; 2^32 took about 0.1 s here) the search is
# too short for the backend to matter, and timing both would cost more than it saves.
SMALL_SEARCH_MULTIPLY_ADDS = 2**32
# The calibration problem: 3.7 s for both backends, twice each, at load average 13 on the
# 2 cores of docs/performance.md's machine; a fraction of one refresh of a 50k bank.
CALIBRATION_CENTRES = 20_000
CALIBRATION_QUERIES = 400
CACHE_FILE = "search_backend.json"

Calibration = Callable[[int, int, int, int], dict[str, float]]


def choose_backend(queries: torch.Tensor, centres: torch.Tensor, k: int, calibrate: Calibration) -> str:
    """``"torch"`` or ``"faiss"`` for this search.

    torch for anything faiss cannot do as well: tensors on a GPU, dtypes other than
    float32 (faiss computes in float32), small searches, or faiss not installed.
    Otherwise the backend cached for this machine, D and k; if none is, the one
    ``calibrate(num_centres, num_queries, dim, k)`` (seconds per backend) finds faster,
    which is then cached. When the cache cannot be written, :func:`rule_backend`.
    """
    if centres.device.type != "cpu" or queries.device.type != "cpu":
        return "torch"
    if centres.dtype != torch.float32 or queries.dtype != torch.float32:
        return "torch"
    if queries.shape[0] * centres.shape[0] * centres.shape[1] < SMALL_SEARCH_MULTIPLY_ADDS:
        return "torch"
    faiss_version = _faiss_version()
    if faiss_version is None:
        return "torch"
    key = machine_key(faiss_version, centres.shape[1], k)
    path = cache_dir() / CACHE_FILE
    cached = read_cache(path).get(key)
    if isinstance(cached, dict) and cached.get("backend") in ("torch", "faiss"):
        return cached["backend"]
    if not _writable(path.parent):
        return rule_backend()
    try:
        seconds = calibrate(max(CALIBRATION_CENTRES, 2 * k), CALIBRATION_QUERIES, centres.shape[1], k)
    except ConfigError:  # faiss is there but does not import: torch, and no cache entry
        return "torch"
    backend = min(seconds, key=seconds.get)
    write_cache(path, key, {"backend": backend, "seconds": seconds})
    return backend


def cached_choice(dim: int, k: int) -> dict | None:
    """This machine's cached calibration for D and k (``{"backend": ..., "seconds":
    {...}}``), or None if there is none (yet, or faiss is not installed)."""
    faiss_version = _faiss_version()
    if faiss_version is None:
        return None
    return read_cache(cache_dir() / CACHE_FILE).get(machine_key(faiss_version, dim, k))


def rule_backend(vendor: str | None = None) -> str:
    """The backend measured faster on this CPU vendor's machines, for when no calibration
    can be cached: faiss on AMD (issue 19: 1.3-1.4x faster than torch, EPYC, 2 cores),
    torch elsewhere (Intel Xeon, AVX-512: faiss took 3x as long; docs/performance.md)."""
    vendor = cpu_description()["vendor"] if vendor is None else vendor
    return "faiss" if vendor == "AuthenticAMD" else "torch"


def machine_key(faiss_version: str, dim: int, k: int) -> str:
    """What the calibration depends on: the CPU, its vector extensions, the libraries'
    versions, torch's threads and the problem's D and k."""
    cpu = cpu_description()
    return (f"{cpu['vendor']} | {cpu['model']} | {' '.join(cpu['vector_extensions'])} | "
            f"torch {torch.__version__} | faiss {faiss_version} | {torch.get_num_threads()} threads | "
            f"D={dim} k={k}")


def cache_dir() -> Path:
    if os.environ.get("NNGK_LAB_CACHE_DIR"):
        return Path(os.environ["NNGK_LAB_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "nngk_lab"


def read_cache(path: Path) -> dict[str, dict]:
    """The cached choices, ``{key: {"backend": ..., "seconds": {backend: seconds}}}``, or
    none when the file is missing or unreadable (the next calibration rewrites it)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_cache(path: Path, key: str, entry: dict) -> None:
    """Add one choice; the file is replaced atomically, so concurrent readers never see
    half of it. A failed write only means the next process calibrates again."""
    try:
        atomic_write_text(json.dumps({**read_cache(path), key: entry}, indent=1, sort_keys=True), path)
    except CheckpointError:
        pass


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(folder, os.W_OK)


def _faiss_version() -> str | None:
    """faiss's version if it is installed, else None; found without importing it (a tenth
    of a second), which only a search that uses it pays."""
    if importlib.util.find_spec("faiss") is None:
        return None
    for distribution in ("faiss-cpu", "faiss-gpu", "faiss"):
        try:
            return importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            pass
    return "unknown"
