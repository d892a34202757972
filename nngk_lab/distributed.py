"""Training on several processes or machines, launched by ``torchrun``.

torchrun starts the processes and tells each its place in environment variables (RANK,
WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT). :func:`session`
joins them in one process group (NCCL on GPUs, gloo on the CPU). Without torchrun nothing
here communicates: every helper takes the single-process path, which is the code of a
plain ``python -m nngk_lab.train``.

What the processes of a run share, and how:

- the network, kernel weights and head, in one DistributedDataParallel (:func:`wrap`):
  their gradients are averaged, so the weights stay identical everywhere;
- each global batch of ``--batch_size`` images: process r trains on the r-th slice of it
  (:class:`SplitBatches`), and its loss is scaled (:func:`loss_share`) so that the
  averaged gradient is the whole batch's mean, as on one process;
- the feature bank: each process embeds whole batches in turn (:func:`deal`) and finds
  the neighbours of its share of the rows; :func:`gather_rows` and
  :func:`all_gather_rows` give every process all of them;
- decisions: a stop (Ctrl-C, SIGTERM, ``--max_time``) or a NaN on any process stops all
  of them after the same step (:func:`highest`); process 0 alone holds the run lock and
  writes files (:func:`is_writer`, :func:`from_writer`).

Every collective waits at most ``--dist_timeout`` minutes; a lost process (killed,
crashed, or hung) makes the others stop with a :class:`DistributedError`.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from typing import Callable, Iterator, Sequence

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .data.decoded import MemoryBatches
from .data.seeds import mix_seed
from .device import resolve_device
from .errors import ConfigError, DataError, DistributedError, NNGKError, first_line

# Ctrl-C under torchrun reaches each process twice, from the terminal and from torchrun,
# which kills its processes 30 s later: repeats within this time are the same request.
SIGNAL_GRACE_S = 25.0

_control_group = None  # gloo group for host-side values when the training backend is NCCL


def launched() -> bool:
    """Whether this process was started by torchrun (or given its variables by hand)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def active() -> bool:
    """Whether a process group is joined (inside :func:`session` under torchrun)."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's number, 0 without torchrun."""
    return dist.get_rank() if active() else int(os.environ.get("RANK", 0)) if launched() else 0


def world_size() -> int:
    """The number of processes that train together (1 outside a joined group)."""
    return dist.get_world_size() if active() else 1


def is_writer() -> bool:
    """Whether this process writes the run's files and prints its reports (process 0)."""
    return rank() == 0


def who() -> str:
    """`` (process r of n)`` under torchrun with several processes, else ``""``: for errors,
    which each process prints."""
    size = int(os.environ.get("WORLD_SIZE", 1)) if launched() else 1
    return f" (process {rank()} of {size})" if size > 1 else ""


def _process_device(device: str | None, gpu_id: int | None) -> torch.device:
    if gpu_id is not None or (device or "").startswith("cuda:"):
        raise ConfigError("under torchrun each process uses the GPU numbered by its LOCAL_RANK; pass --device cuda "
                          "(or auto) instead of --gpu_id or cuda:N")
    chosen = resolve_device(device)
    if chosen.type != "cuda":
        return chosen
    local_rank, count = int(os.environ.get("LOCAL_RANK", 0)), torch.cuda.device_count()
    if local_rank >= count:
        raise ConfigError(f"torchrun started process {local_rank} on a machine with {count} GPU(s); pass "
                          f"--nproc_per_node {count} or less")
    return torch.device("cuda", local_rank)


@contextlib.contextmanager
def session(device: str | None, gpu_id: int | None, timeout_minutes: float) -> Iterator[torch.device]:
    """Join torchrun's process group for the time of one run and yield this process's
    device (``cuda:LOCAL_RANK`` on GPUs); without torchrun, just the device."""
    global _control_group
    if not launched():
        yield resolve_device(device, gpu_id)
        return
    chosen = _process_device(device, gpu_id)
    if active():  # joined already by the caller, who leaves it too
        yield chosen
        return
    timeout = datetime.timedelta(minutes=timeout_minutes)
    if chosen.type == "cuda":
        torch.cuda.set_device(chosen)
    try:
        dist.init_process_group("nccl" if chosen.type == "cuda" else "gloo", timeout=timeout)
        # Flags and Python objects stay on the host: with NCCL they go through gloo.
        _control_group = dist.new_group(backend="gloo", timeout=timeout) if chosen.type == "cuda" else None
    except (RuntimeError, ValueError) as e:
        raise DistributedError(f"cannot join the other processes at {os.environ.get('MASTER_ADDR')}:"
                               f"{os.environ.get('MASTER_PORT')} ({first_line(e)}); check that every process "
                               "was started with the same rendezvous address and --nnodes") from e
    try:
        yield chosen
    finally:
        _control_group = None
        dist.destroy_process_group()


def lost_contact(error: BaseException) -> bool:
    """Whether ``error`` is a collective that failed because another process is gone."""
    text = str(error).lower()
    return active() and isinstance(error, RuntimeError) and (
        isinstance(error, dist.DistError) or "gloo" in text or "nccl" in text or "connection" in text)


def lost(error: BaseException) -> DistributedError:
    """The error a process stops with when it lost another process of the run."""
    return DistributedError(
        f"lost contact with another process of the run{who()}: it stopped, was killed, or did not answer within "
        f"--dist_timeout; its own output says why ({first_line(error, 120)}). Continue from the last checkpoint "
        "with --resume")


def _collective(collective: Callable, *args, **kwargs):
    try:
        return collective(*args, **kwargs)
    except RuntimeError as e:
        raise lost(e) from e


# -- agreeing -------------------------------------------------------------------------------


def highest(value: int) -> int:
    """The largest of every process's ``value``: how the processes agree, after each
    step, whether and why to stop."""
    if world_size() == 1:
        return value
    t = torch.tensor([value], dtype=torch.long)
    _collective(dist.all_reduce, t, op=dist.ReduceOp.MAX, group=_control_group)
    return int(t)


def everywhere(flag: bool) -> bool:
    """Whether ``flag`` holds on every process."""
    return highest(int(not flag)) == 0


def barrier() -> None:
    """Wait until every process is here (after process 0 wrote a checkpoint, so that none
    leaves before the file is whole)."""
    if world_size() > 1:
        _collective(dist.barrier, group=_control_group)


def from_writer(fn: Callable):
    """Call ``fn`` on process 0 only and return its result on every process; an nngk_lab
    error it raises is raised on every process."""
    if world_size() == 1:
        return fn()
    box: list = [None]
    error = None
    if is_writer():
        try:
            box = [(True, fn())]
        except NNGKError as e:
            error, box = e, [(False, e)]
    _collective(dist.broadcast_object_list, box, src=0, group=_control_group)
    ok, value = box[0]
    if error is not None:
        raise error
    if not ok:
        raise value
    return value


def check_same_data(fingerprint: str) -> None:
    """Refuse to train when the processes read different images (their data folders'
    fingerprints differ), as resuming on changed data is refused."""
    if world_size() == 1:
        return
    prints: list = [None] * world_size()
    _collective(dist.all_gather_object, prints, fingerprint, group=_control_group)
    other = next((r for r, p in enumerate(prints) if p != prints[0]), None)
    if other is not None:
        raise DataError(f"process {other} reads other images than process 0 (their data folders differ); every "
                        "machine needs the same --data_dir contents")


# -- dividing the work ------------------------------------------------------------------------


def check_batches(num_items: int, batch_size: int) -> None:
    """Refuse a global batch size that leaves a process without images in some batch."""
    size = world_size()
    last = num_items % batch_size or batch_size
    if min(batch_size, last) < size:
        raise ConfigError(f"each of the {size} processes needs at least one image of every batch, but --batch_size "
                          f"{batch_size} (the global batch) leaves {last} image(s) in the last batch of the "
                          f"{num_items} training images; choose a --batch_size of at least {size} whose last batch "
                          f"({num_items} mod batch size, if not 0) is also at least {size}")


def _piece(items: Sequence[int], part: int, parts: int) -> list[int]:
    n = len(items)
    return list(items[part * n // parts:(part + 1) * n // parts])


class SplitBatches:
    """This process's slice of each global batch of ``order``: batch b is
    ``order[b*B:(b+1)*B]`` and process r takes its r-th of ``world`` contiguous,
    near-equal pieces. The order being a function of (seed, epoch), so is each slice,
    whatever the number of processes a run is resumed with."""

    def __init__(self, order: Sequence[int], batch_size: int, part: int, parts: int):
        order = list(order)
        self.batches = [_piece(order[s:s + batch_size], part, parts) for s in range(0, len(order), batch_size)]

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def _reload(loader: DataLoader, dataset: Dataset, **batching) -> DataLoader:
    return DataLoader(dataset, num_workers=loader.num_workers, pin_memory=loader.pin_memory,
                      generator=loader.generator, worker_init_fn=loader.worker_init_fn, **batching)


def split_loader(loader: DataLoader | MemoryBatches) -> DataLoader | MemoryBatches:
    """The training loader of this process: its slice of each of ``loader``'s batches
    (``loader`` itself on one process)."""
    if world_size() == 1:
        return loader
    if isinstance(loader, MemoryBatches):
        return MemoryBatches(loader.images, [_piece(b.tolist(), rank(), world_size()) for b in loader.batches],
                             loader.augmentation)
    return _reload(loader, loader.dataset,
                   batch_sampler=SplitBatches(loader.sampler, loader.batch_size, rank(), world_size()))


class _Rows(Dataset):
    """Some rows of an index-returning dataset, numbered from 0."""

    def __init__(self, dataset: Dataset, rows: list[int]):
        self.dataset, self.rows = dataset, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        image, label, _ = self.dataset[self.rows[i]]
        return image, label, i


def deal(loader: DataLoader) -> tuple[DataLoader, list[torch.Tensor]] | None:
    """Deal the batches of an in-order loader: process r takes batches r, r + n, r + 2n,
    ... whole, so each image is embedded in the same batch as on one process (and gets
    bitwise the same embedding). Returns this process's loader and each process's
    dataset rows, or None when there are fewer batches than processes."""
    if isinstance(loader, MemoryBatches):
        batches = [b.tolist() for b in loader.batches]
    else:
        n, size = len(loader.dataset), loader.batch_size
        batches = [list(range(s, min(s + size, n))) for s in range(0, n, size)]
    if len(batches) < world_size():
        return None
    rows = [[i for b in batches[r::world_size()] for i in b] for r in range(world_size())]
    if isinstance(loader, MemoryBatches):
        mine_batches = batches[rank()::world_size()]
        starts = [sum(len(b) for b in mine_batches[:j]) for j in range(len(mine_batches))]
        mine = MemoryBatches(loader.images.rows(rows[rank()]),
                             [range(s, s + len(b)) for s, b in zip(starts, mine_batches)])
    else:
        mine = _reload(loader, _Rows(loader.dataset, rows[rank()]), batch_size=loader.batch_size, shuffle=False)
    return mine, [torch.tensor(r, dtype=torch.long) for r in rows]


def query_rows(n: int) -> slice:
    """This process's contiguous share of ``n`` rows (of a neighbour search)."""
    return slice(rank() * n // world_size(), (rank() + 1) * n // world_size())


def all_gather_rows(local: torch.Tensor) -> list[torch.Tensor]:
    """Every process's ``local`` tensor (the same shape but for the number of rows), in
    process order; the same list on every process."""
    if world_size() == 1:
        return [local]
    count = torch.tensor([local.shape[0]], device=local.device)
    counts = [torch.zeros_like(count) for _ in range(world_size())]
    _collective(dist.all_gather, counts, count)
    counts = [int(c) for c in counts]
    padded = local.new_zeros((max(counts), *local.shape[1:]))
    padded[:local.shape[0]] = local
    out = [torch.empty_like(padded) for _ in counts]
    _collective(dist.all_gather, out, padded.contiguous())
    return [o[:c] for o, c in zip(out, counts)]


def gather_all(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Each of ``tensors`` with every process's rows, concatenated in process order."""
    return tuple(torch.cat(all_gather_rows(t)) for t in tensors)


def gather_rows(local: torch.Tensor, rows: list[torch.Tensor]) -> torch.Tensor:
    """The whole tensor, from each process's ``local`` rows at its ``rows`` (see :func:`deal`)."""
    pieces = all_gather_rows(local)
    whole = local.new_empty((sum(len(r) for r in rows), *local.shape[1:]))
    for piece, at in zip(pieces, rows):
        whole[at.to(local.device)] = piece
    return whole


# -- training together ------------------------------------------------------------------------


class _Trained(nn.Module):
    """The modules a run trains, as one module for DistributedDataParallel; calling it
    calls the network (the loss uses the others directly)."""

    def __init__(self, network: nn.Module, others: list[nn.Module]):
        super().__init__()
        self.network, self.others = network, nn.ModuleList(others)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.network(images)


def wrap(network: nn.Module, others: Sequence[nn.Module | None], device: torch.device, sync_bn: bool) -> nn.Module:
    """The network as training steps call it: ``network`` itself on one process; in a
    process group, ``network`` and ``others`` (kernel weights, head) together in
    DistributedDataParallel, so that all their gradients are averaged. ``sync_bn``
    turns the network's BatchNorm layers into SyncBatchNorm (in place; GPUs only)."""
    if not active():
        return network
    if sync_bn:
        if device.type != "cuda":
            raise ConfigError("--sync_bn needs GPUs (PyTorch's SyncBatchNorm has no CPU version); leave it out: on "
                              "the CPU each process normalises by its own share of the batch")
        nn.SyncBatchNorm.convert_sync_batchnorm(network)
    trained = _Trained(network, [m for m in others if m is not None])
    return nn.parallel.DistributedDataParallel(trained, device_ids=[device.index] if device.type == "cuda" else None)


def loss_share(present: torch.Tensor) -> torch.Tensor:
    """The factor for this process's mean loss over its ``present`` samples, such that
    DistributedDataParallel's average of the gradients is the gradient of the mean over
    all processes' present samples, as on one process."""
    mine = present.sum().float()
    total = mine.clone()
    _collective(dist.all_reduce, total)
    return mine * world_size() / total.clamp_min(1)


def sum_everywhere(sums: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each of ``sums`` added over the processes (on every process)."""
    if world_size() == 1:
        return sums
    stacked = torch.stack(list(sums.values()))
    _collective(dist.all_reduce, stacked)
    return dict(zip(sums, stacked))


def seed_step(seed: int, epoch: int, step: int) -> None:
    """Seed dropout for one training step of a process group: each process draws its own
    masks, a function of (seed, epoch, step, process), so a run resumed with as many
    processes draws the same ones. One process keeps its single random stream."""
    if world_size() > 1:
        torch.manual_seed(mix_seed(seed, epoch, step, rank()))


def signal_grace_s() -> float:
    """How long repeated Ctrl-C / SIGTERM count as one (see :data:`SIGNAL_GRACE_S`)."""
    return SIGNAL_GRACE_S if launched() else 0.0
