"""Choosing the device and the number of CPU threads and loader workers."""

from __future__ import annotations

import math
import os
import platform
from pathlib import Path

import torch

from .errors import ConfigError


def _cgroup_cpu_limit(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """The CPU quota of this container in cores (cgroup v2 or v1), or None if unlimited.

    Containers such as Binder's cap CPU time with a quota while still showing every host
    core to ``sched_getaffinity``; threads beyond the quota only slow each other down.
    """
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota <= 0 or period <= 0 else quota / period
    except (OSError, ValueError):
        return None


def available_cores() -> int:
    """Cores this process may run on (respects affinity masks and container CPU quotas)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    limit = _cgroup_cpu_limit()
    if limit is not None:
        cores = min(cores, math.ceil(limit))
    return max(1, cores)


def resolve_device(device: str | None = None, gpu_id: int | None = None) -> torch.device:
    """Turn ``--device`` / ``--gpu_id`` into a torch device, with a clear error if absent.

    ``gpu_id`` wins and means ``cuda:<gpu_id>``; ``device`` may be ``cpu``, ``cuda``,
    ``cuda:N`` or ``auto`` (a GPU when there is one). Neither means the CPU, as in the
    original.
    """
    flag = f"--gpu_id {gpu_id}" if gpu_id is not None else f"--device {device}"
    if gpu_id is not None:
        if gpu_id < 0:
            raise ConfigError(f"--gpu_id must be 0 or more, got {gpu_id}")
        device = f"cuda:{gpu_id}"
    if device in (None, "cpu"):
        return torch.device("cpu")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise ConfigError(f"--device {device!r} is not a device name (use cpu, cuda, cuda:N or auto)") from e
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"{flag} asks for a GPU but this machine has no usable CUDA GPU; "
                              "leave it out to train on the CPU, or use --device auto")
        if dev.index is not None and dev.index >= count:
            raise ConfigError(f"{flag} asks for GPU {dev.index} but this machine has {count} "
                              f"(ids 0..{count - 1})")
    elif dev.type != "cpu":
        raise ConfigError(f"--device {device!r} is not supported (use cpu, cuda, cuda:N or auto)")
    return dev


def processes_per_machine() -> int:
    """Training processes that share this machine's cores: torchrun's LOCAL_WORLD_SIZE, else 1."""
    return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", 1)))


def default_workers() -> int:
    """Loader worker processes: every core but the one the training process needs (its
    share of the cores under torchrun).

    On two cores or fewer none: loading in the main process was faster than one worker
    there (bench/bench_step.py). On the 16-core GPU machine 15 workers fed ResNet18 1.6x
    faster than 4 (bench/gpu_check.py, docs/performance.md).
    """
    cores = available_cores() // processes_per_machine()
    return 0 if cores <= 2 else cores - 1


# Flag-name prefixes of SIMD instruction sets: x86 (/proc/cpuinfo "flags") and Arm ("Features").
VECTOR_FLAG_PREFIXES = ("sse", "ssse", "avx", "fma", "f16c", "amx", "asimd", "sve", "neon")


def cpu_description(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, str | list[str]]:
    """This CPU's ``vendor``, ``model`` and ``vector_extensions`` (its SIMD flags, sorted),
    as the operating system reports them in /proc/cpuinfo (first processor listed).
    Elsewhere the model is ``platform.processor()`` and the lists are empty.
    """
    fields: dict[str, str] = {}
    try:
        with open(cpuinfo) as f:
            for line in f:
                if not line.strip():
                    break  # the end of the first processor's block
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    flags = (fields.get("flags") or fields.get("Features") or "").split()
    return {"vendor": fields.get("vendor_id") or fields.get("CPU implementer") or "",
            "model": fields.get("model name") or fields.get("Model") or platform.processor() or platform.machine(),
            "vector_extensions": sorted(f for f in flags if f.startswith(VECTOR_FLAG_PREFIXES))}
