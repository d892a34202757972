"""Choosing the device and the number of CPU threads and loader workers."""

from __future__ import annotations

import os

import torch

from .errors import ConfigError


def available_cores() -> int:
    """Cores this process may run on (respects affinity masks and container limits)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


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


def default_workers() -> int:
    """Loader worker processes: one core is left for the training process itself."""
    return min(4, available_cores() - 1)
