"""What every benchmark shares: timing, peak memory, the machine's description, tables."""

from __future__ import annotations

import os
import platform
import resource
import sys
import time
from typing import Callable

import torch

from nngk_lab.device import available_cores, cpu_description
from nngk_lab.errors import NNGKError


def synchronise(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def best_times(fns: dict[str, Callable[[], object]], repeat: int = 3, warmup: int = 1,
               device: torch.device | str = "cpu") -> dict[str, float]:
    """Best wall time in seconds of each function over ``repeat`` runs.

    The functions take turns (round-robin), so load from other processes on a shared
    machine hits each about equally and ratios between them stay meaningful; the best
    of the runs is the one least disturbed by that load.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    synchronise(device)
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeat):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            synchronise(device)
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def current_rss_bytes() -> int:
    """Resident memory of this process now (Linux /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


def peak_rss_bytes() -> int:
    """Highest resident memory this process has had (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def available_memory_bytes() -> int:
    """Memory available to new allocations on Linux (MemAvailable), else 0."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def machine_summary(device: torch.device | str = "cpu") -> str:
    device = torch.device(device)
    if device.type == "cuda":
        where = f"GPU {torch.cuda.get_device_name(device)}"
    else:
        where = f"CPU {cpu_description()['model']}, {available_cores()} cores usable, {torch.get_num_threads()} torch threads"
    return f"{where}; torch {torch.__version__}; Python {platform.python_version()}"


def format_table(rows: list[dict], columns: list[str] | None = None) -> str:
    """A plain-text table with one line per row; floats get 4 significant digits."""
    columns = columns or list(dict.fromkeys(key for row in rows for key in row))

    def cell(value) -> str:
        if isinstance(value, float):
            return f"{value:.4g}"
        return "" if value is None else str(value)

    cells = [[cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[j]) for r in cells]) for j, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.rjust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)


def chunked_matmul(queries: torch.Tensor, centres: torch.Tensor, rows: int) -> None:
    """The matrix products of ``nearest_neighbours``, chunk by chunk, without its top-k:
    the least a search by matrix products can cost."""
    centre_sq = centres.square().sum(1)
    block = torch.empty(min(rows, queries.shape[0]), centres.shape[0], device=centres.device)
    for start in range(0, queries.shape[0], rows):
        q = queries[start:start + rows]
        torch.addmm(centre_sq.unsqueeze(0), q, centres.T, beta=1.0, alpha=-2.0, out=block[:q.shape[0]])


def mean_time(fn: Callable[[], object], runs: int, device: torch.device | str, warmup: int = 2) -> float:
    """Mean seconds per call of ``fn`` run back to back (one synchronisation at the end),
    which is how a GPU runs a training loop: the host queues work ahead of the device."""
    for _ in range(warmup):
        fn()
    synchronise(device)
    start = time.perf_counter()
    for _ in range(runs):
        fn()
    synchronise(device)
    return (time.perf_counter() - start) / runs


def training_step_parts(model: torch.nn.Module, images: torch.Tensor, bank_size: int, num_classes: int,
                        k: int, sigma: float, amp: bool = False, seed: int = 0,
                        fused: bool = False) -> dict[str, Callable[[], None]]:
    """Callables that run one part of a training step with ``nngk_lab.training.step.TrainStep``,
    the code training runs, on fixed inputs already on the device and a random bank
    (values do not change the cost), for timing.

    Keys: ``backbone`` (forward + backward), ``{nngk,softmax}_loss`` (forward + backward
    on fixed features, with the running-accuracy prediction), ``{nngk,softmax}_optimiser``
    and ``{nngk,softmax}_step`` (forward, loss, zero_grad, backward, optimiser step, and the
    running sums of loss and accuracy kept on the device). ``fused``: the NNGK loss is the
    fused Triton one where it works (default: :func:`nngk_lab.kernel.loss.kernel_nll`).
    Labels and indices stay on the CPU, as a loader gives them to training.
    """
    from torch import nn

    from nngk_lab.kernel.bank import FeatureBank
    from nngk_lab.kernel.nngk_loss import NNGKLoss
    from nngk_lab.training.step import EPOCH_SUMS, TrainStep, add_to_sums

    device = images.device
    g = torch.Generator(device=device).manual_seed(seed)
    batch, dim = images.shape[0], model.embedding_dim
    bank = FeatureBank(torch.randn(bank_size, dim, generator=g, device=device),
                       torch.randint(num_classes, (bank_size,), generator=g, device=device),
                       torch.randint(bank_size, (bank_size, k), generator=g, device=device))
    index = torch.randint(bank_size, (batch,), generator=g, device=device)
    bank.labels[bank.neighbours[index, 0]] = bank.labels[index]  # every query has a neighbour of its class
    labels, index = bank.labels[index].cpu(), index.cpu()
    nngk = NNGKLoss(bank_size, sigma, k, num_classes, fused=fused).to(device)
    nngk.bank = bank
    head = nn.Linear(dim, num_classes).to(device)
    steps = {
        "nngk": TrainStep(model, torch.optim.Adam([{"params": model.parameters()},
                                                   {"params": nngk.parameters()}], lr=1e-7),
                          nngk, None, device, amp),
        "softmax": TrainStep(model, torch.optim.Adam(list(model.parameters()) + list(head.parameters()), lr=1e-7),
                             None, head, device, amp)}
    model.train()

    def backbone():
        model.zero_grad(set_to_none=True)
        features = steps["nngk"].features(images)
        features.backward(torch.ones_like(features))

    with torch.no_grad():
        fixed = steps["nngk"].features(images)

    def loss_part(name):
        def run():
            steps[name].optimiser.zero_grad(set_to_none=True)
            steps[name].loss(fixed.clone().requires_grad_(True), labels, index)[0].backward()
        return run

    sums = {key: torch.zeros((), device=device) for key in EPOCH_SUMS}

    def step(name):
        def run():
            add_to_sums(sums, steps[name](images, labels, index))
        return run

    def optimiser_part(name):
        optimiser = steps[name].optimiser
        # Gradients of their own, so the other parts' zero_grad cannot leave it nothing to do.
        grads = {p: torch.full_like(p, 1e-3) for group in optimiser.param_groups for p in group["params"]}

        def run():
            for p, grad in grads.items():
                p.grad = grad
            optimiser.step()
        return run

    parts = {"backbone": backbone}
    for name in steps:
        parts[f"{name}_loss"] = loss_part(name)
        parts[f"{name}_optimiser"] = optimiser_part(name)
        parts[f"{name}_step"] = step(name)
    return parts


def guarded(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Run a benchmark's ``main(argv)``: a kit error is one line on stderr and exit 2; an
    interruption (Ctrl-C, or SIGTERM, which the trainer turns into a saved checkpoint) stops
    it with exit 130 and one line saying how to continue."""
    try:
        return main(argv)
    except NNGKError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        print(f"stopped: {e or 'interrupted'}", file=sys.stderr)
        return 130
