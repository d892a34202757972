"""Bank refresh and training step time of ``nngk_lab.train`` with 1 and 2 processes on
the CPU (gloo), as torchrun runs them.

    python -m bench.bench_distributed           # small CNN, 32 px, 1024 images, global batch 64
    python -m bench.bench_distributed --quick   # tiny sizes: checks the script runs

One process runs the plain path (no process group), with all the cores' threads and
with one; several are started with torchrun's environment variables, each with its share
of the cores (cores // processes threads).
They time the bank refresh (each process embeds its share of the batches and searches
its share of the rows; all gather the results) and training steps (each process takes its
slice of the global batch; DistributedDataParallel averages the gradients), with the
package's own loaders, data loading included. Process 0 prints one JSON line; the parent
prints the table.

:func:`ddp_one_process` is bench/gpu_check.py's check of the DDP path with one process.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from nngk_lab import distributed
from nngk_lab.training.config import make_config
from nngk_lab.device import available_cores
from nngk_lab.training.loaders import RunImages, load_split
from nngk_lab.training.parts import build_initial_parts
from nngk_lab.training.step import TrainStep
from nngk_lab.training.loop import train

from .bench_step import write_images
from .common import format_table, machine_summary

FULL = dict(images=1024, side=32, batch=64, k=20)
QUICK = dict(images=64, side=8, batch=16, k=5)
COLUMNS = ["processes", "threads each", "refresh s", "step ms", "images/s", "speed-up"]


def free_port() -> int:
    """A TCP port free on this machine now, for a process group's rendezvous."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_variables(rank: int, world: int, port: int) -> dict[str, str]:
    """The environment torchrun gives process ``rank`` of ``world`` on one machine."""
    return dict(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world),
                MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))


def launch(command: list[str], world: int, env: dict[str, str], timeout_s: float) -> list[subprocess.CompletedProcess]:
    """Run ``command`` as ``world`` processes of one process group (torchrun's variables
    added to ``env``); wait for all, killing any still running after ``timeout_s``.
    Returns each one's exit status and output (stdout and stderr together); a killed
    one has status -9 and its output so far."""
    port = free_port()
    procs = [subprocess.Popen(command, env={**env, **torchrun_variables(rank, world, port)}, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for rank in range(world)]
    deadline = time.monotonic() + timeout_s
    done = []
    for proc in procs:
        try:
            out, _ = proc.communicate(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        done.append(subprocess.CompletedProcess(command, proc.returncode, out))
    return done


def worker(data: str, sizes: dict, steps: int, threads: int) -> None:
    """One process's timings (see the module docstring); process 0 prints them as JSON."""
    config = make_config(data_dir=data, save_dir=tempfile.mkdtemp(), model="small_cnn", input_size=sizes["side"],
                         batch_size=sizes["batch"], num_neighbours=sizes["k"], workers=0, progress=False,
                         test_fraction=0.0, num_classes=4)
    torch.set_num_threads(threads)
    with distributed.session("cpu", None, 5.0) as device:
        split = load_split(config)
        parts = build_initial_parts(config, split.num_trained, len(split.train), device)
        network = distributed.wrap(parts.model, (parts.kernel_weights,), device, False)
        step = TrainStep(network, parts.optimiser, parts.nngk, None, device,
                         loss_share=distributed.loss_share if distributed.active() else None)
        images = RunImages(config, split, device)
        refresh = []
        for _ in range(2):
            distributed.barrier()
            start = time.perf_counter()
            parts.nngk.refresh(parts.model, images.eval_batches("train"))
            refresh.append(time.perf_counter() - start)
        parts.model.train()
        batches = iter(distributed.split_loader(images.epoch_batches(0, 0)))
        step(*next(batches))  # warm-up
        distributed.barrier()
        start = time.perf_counter()
        taken = sum(1 for _, batch in zip(range(steps), batches) if step(*batch))
        step_s = (time.perf_counter() - start) / max(taken, 1)
        if distributed.is_writer():
            print(json.dumps({"processes": distributed.world_size(), "threads each": torch.get_num_threads(),
                              "refresh s": min(refresh), "step ms": step_s * 1e3,
                              "images/s": config.batch_size / step_s}))


def run(worlds: list[int], sizes: dict, steps: int, timeout_s: float = 600) -> list[dict]:
    """Time each number of processes in ``worlds`` (one process also on one thread);
    return the table's rows."""
    rows = []
    cores = available_cores()
    cases = [(world, max(1, cores // world)) for world in worlds] + ([(1, 1)] if 1 in worlds and cores > 1 else [])
    with tempfile.TemporaryDirectory() as tmp:
        write_images(Path(tmp), sizes["images"], sizes["side"], "png")
        command = [sys.executable, "-m", "bench.bench_distributed", "--worker", tmp, "--sizes", json.dumps(sizes),
                   "--steps", str(steps), "--threads"]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                            os.environ.get("PYTHONPATH", "")])}
        for world, threads in cases:
            if world == 1:  # the plain path: no process group at all
                done = [subprocess.run([*command, str(threads)], env=env, capture_output=True, text=True,
                                       timeout=timeout_s)]
            else:
                done = launch([*command, str(threads)], world, env, timeout_s)
            if any(d.returncode for d in done):
                raise RuntimeError(f"{world} process(es) failed:\n" + "\n".join(d.stdout[-2000:] for d in done))
            rows.append(json.loads(done[0].stdout.strip().splitlines()[-1]))
    for row in rows:
        row["speed-up"] = f"{row['images/s'] / rows[0]['images/s']:.2f}x"
    return rows


def ddp_one_process(s, device: torch.device, report) -> None:
    """bench/gpu_check.py's section: ``nngk_lab.train`` for one epoch through the DDP path
    with world size 1 (as ``torchrun --nproc_per_node 1``: NCCL on a GPU, with bf16 and the
    fused loss), against the plain run of the same settings."""
    with tempfile.TemporaryDirectory() as tmp:
        write_images(Path(tmp) / "data", s.train_classes * s.images_per_class, 64, "jpg", num_folders=s.train_classes)
        results = {}
        for path in ("plain", "ddp"):
            config = make_config(data_dir=str(Path(tmp) / "data"), save_dir=str(Path(tmp) / path), model=s.model,
                                 pretrained="none", input_size=s.input_size, batch_size=s.batch, num_neighbours=s.k,
                                 sigma=s.sigma, max_epochs=1, update_interval=1, num_classes=s.train_classes,
                                 test_fraction=0.1, device=str(device), amp=device.type == "cuda", progress=False)
            variables = torchrun_variables(0, 1, free_port()) if path == "ddp" else {}
            with _environment(variables):
                start = time.perf_counter()
                results[path] = (train(config), time.perf_counter() - start)
        (plain, plain_s), (ddp, ddp_s) = results["plain"], results["ddp"]
        a, b = plain.history[0]["loss"], ddp.history[0]["loss"]
        close = math.isfinite(b) and abs(a - b) <= 1e-3 * max(abs(a), 1e-6)
        report.add("ddp", f"nngk_lab.train, 1 epoch, DDP with 1 process vs plain ({'bf16' if config.amp else 'fp32'})",
                   "bf16" if config.amp else "fp32", ddp_s, ratio=f"plain {plain_s:.1f} s",
                   check=f"{'ok' if close else 'FAIL'} (loss {b:.6g} vs plain {a:.6g})")


@contextlib.contextmanager
def _environment(variables: dict[str, str]):
    saved = {k: os.environ.get(k) for k in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def main(argv=None) -> list[dict] | None:
    p = argparse.ArgumentParser(prog="python -m bench.bench_distributed", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks the script runs")
    p.add_argument("--worlds", default="1,2", help="numbers of processes to time (default 1,2)")
    p.add_argument("--steps", type=int, help="training steps timed (default 12, quick 2)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--sizes", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args.worker, json.loads(args.sizes), args.steps, args.threads)
        return None
    sizes = QUICK if args.quick else FULL
    rows = run([int(w) for w in args.worlds.split(",")], sizes, args.steps or (2 if args.quick else 12))
    print(f"{machine_summary()}; {sizes['images']} images of {sizes['side']} px, small CNN, global batch "
          f"{sizes['batch']}, K = {sizes['k']}")
    print(format_table(rows, COLUMNS))
    return rows


if __name__ == "__main__":
    main()
