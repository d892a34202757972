"""One prepared GPU run: is nngk_lab correct on CUDA, and how fast is it there?

    python -m bench.gpu_check             # on a CUDA machine: a few minutes on one H200
    python -m bench.gpu_check --dry-run   # tiny sizes on the CPU (the test suite runs this)

Checks CUDA against the CPU (loss value and gradients, neighbour search, backbone
forward, no host-device synchronisation inside a training step), then times, in float32
and with bf16 autocast: ResNet18 training steps at the original's 256 x 256 input (NNGK
and softmax, and each part of the step), the loss against the gather of its neighbour
centres, the bank refresh, the neighbour search at N up to 1M against the matrix
product alone, the data loader, and ``nngk_lab.train`` end to end for one epoch on
synthetic JPEG files, plainly and through DistributedDataParallel with one process (as
``torchrun --nproc_per_node 1`` runs it). Prints one table; with ``$OUT`` set it also writes
``$OUT/gpu_check.txt`` (and ``gpu_check.jsonl``, one line per row as it is measured, so
a run cut short still leaves its rows).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from nngk_lab.kernel.bank import embed
from nngk_lab.training.config import make_config
from nngk_lab.device import available_cores, default_workers
from nngk_lab.kernel.fused_loss import fused_kernel_nll, fused_loss_usable
from nngk_lab.kernel.loss import kernel_nll
from nngk_lab.models.backbones import build_model
from nngk_lab.kernel.search import auto_chunk_rows, nearest_neighbours
from nngk_lab.training.loop import train

from .bench_distributed import ddp_one_process
from .bench_step import write_images
from .common import chunked_matmul, format_table, mean_time, synchronise, training_step_parts

COLUMNS = ["part", "case", "precision", "time", "rate", "ratio", "memory", "check"]


@dataclass
class Sizes:
    device: str
    model: str
    input_size: int
    batch: int
    k: int
    dim: int
    sigma: float
    bank_size: int                        # the step's bank (SOP)
    num_classes: int
    loss_cases: list[tuple[str, int, int, int]]   # (name, batch, centres, classes)
    check_centres: int                    # self-search compared with the CPU
    search_sizes: list[int]
    max_queries: int
    cpu_check_queries: int                # queries compared with the CPU at the largest N
    step_runs: int
    refresh_images: int
    train_classes: int
    images_per_class: int


REAL = Sizes("cuda", "resnet18", 256, 32, 200, 512, 10.0, 59_551, 11_318,
             [("SOP", 32, 59_551, 11_318), ("CUB-100", 128, 5_864, 100)],
             20_000, [10_000, 50_000, 200_000, 1_000_000], 65_536, 256, 30, 2048, 64, 50)
DRY = Sizes("cpu", "small_cnn", 16, 4, 5, 16, 10.0, 200, 10, [("tiny-gather", 4, 300, 10), ("tiny-matmul", 4, 100, 10)],
            300, [400, 1_000], 500, 16, 1, 8, 2, 8)


class Report:
    """Collects rows, prints each as it comes, and mirrors them to $OUT if set."""

    def __init__(self, out_dir: str | None):
        self.rows: list[dict] = []
        self.out = Path(out_dir) if out_dir else None
        if self.out:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "gpu_check.jsonl").write_text("")

    def add(self, part, case, precision="", time=None, rate=None, ratio=None, memory=None, check=None):
        row = {"part": part, "case": case, "precision": precision, "time": _fmt_time(time), "rate": rate,
               "ratio": ratio, "memory": memory, "check": check}
        self.rows.append(row)
        print("  ".join(f"{k}={v}" for k, v in row.items() if v not in (None, "")), flush=True)
        if self.out:
            with open(self.out / "gpu_check.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")

    def finish(self, header: str) -> bool:
        table = f"{header}\n{format_table(self.rows, COLUMNS)}"
        print("\n" + table)
        if self.out:
            (self.out / "gpu_check.txt").write_text(table + "\n")
        return not any(str(r["check"]).startswith("FAIL") for r in self.rows)


def _fmt_time(seconds):
    if seconds is None:
        return None
    return f"{seconds * 1e3:.3g} ms" if seconds < 1 else f"{seconds:.3g} s"


def _verdict(ok: bool, detail: str) -> str:
    return f"{'ok' if ok else 'FAIL'} ({detail})"


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def _loss_inputs(batch, num_centres, num_classes, k, dim, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_centres, dim, generator=g)
    centre_labels = torch.randint(num_classes, (num_centres,), generator=g)
    neighbours = torch.rand(batch, num_centres, generator=g).argsort(1)[:, :k]
    targets = centre_labels[neighbours[:, 0]]
    features = centres[neighbours[:, 0]] + 0.5 * torch.randn(batch, dim, generator=g)
    log_weights = 0.1 * torch.randn(num_centres, generator=g)
    return features, targets, centres, centre_labels, neighbours, log_weights


def _loss_and_grads(inputs, sigma, device, loss_fn=kernel_nll):
    features, targets, centres, centre_labels, neighbours, log_weights = (t.to(device) for t in inputs)
    x = features.clone().requires_grad_(True)
    v = log_weights.clone().requires_grad_(True)
    loss = loss_fn(x, targets, centres, centre_labels, neighbours, v, sigma, centres.square().sum(1)).loss
    loss.backward()
    return loss.detach(), x.grad, v.grad


class _FixedImages(Dataset):
    """``count`` copies of one image tensor: a loader over it costs collation and the copy
    to the device, as a real one does, without holding ``count`` images in memory."""

    def __init__(self, count: int, image: torch.Tensor):
        self.count, self.image = count, image

    def __len__(self):
        return self.count

    def __getitem__(self, index):
        return self.image, 0, index


def _fused_usable(device: torch.device, report: Report) -> bool:
    usable = fused_loss_usable(device)
    if not usable:  # expected on the CPU without TRITON_INTERPRET=1, a failure on a GPU
        report.add("correct", "fused Triton loss usable", check="FAIL" if device.type == "cuda" else None)
    return usable


def check_correctness(s: Sizes, device: torch.device, report: Report) -> None:
    cpu = torch.device("cpu")
    fused = _fused_usable(device, report)
    for name, batch, n, c in s.loss_cases:
        inputs = _loss_inputs(batch, n, c, s.k, s.dim)
        ref = _loss_and_grads(inputs, s.sigma, cpu)
        for loss_name, loss_fn in [("loss", kernel_nll)] + [("fused loss", fused_kernel_nll)] * fused:
            got = _loss_and_grads(inputs, s.sigma, device, loss_fn)
            errs = [_rel(g, r) for g, r in zip(got, ref)]
            report.add("correct", f"{loss_name} {name} value, d/dx, d/dv vs CPU", "fp32",
                       check=_verdict(max(errs) < 1e-4, "rel err " + ", ".join(f"{e:.1e}" for e in errs)))

    centres = torch.randn(s.check_centres, s.dim, generator=torch.Generator().manual_seed(1))
    d_ref, i_ref = nearest_neighbours(centres, centres, s.k, exclude_self=True)
    d_got, i_got = nearest_neighbours(centres.to(device), centres.to(device), s.k, exclude_self=True)
    same = float((i_got.cpu() == i_ref).float().mean())
    err = _rel(d_got, d_ref)
    report.add("correct", f"self-search N={s.check_centres} vs CPU", "fp32",
               check=_verdict(err < 1e-5 and same > 0.99, f"dist rel err {err:.1e}, same index {same:.4f}"))

    model = build_model(s.model, pretrained="none").eval()
    images = torch.randn(8, 3, s.input_size, s.input_size, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = model(images)
        model_dev = model.to(device).to(memory_format=torch.channels_last)
        images_dev = images.to(device).contiguous(memory_format=torch.channels_last)
        fp32 = model_dev(images_dev)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            bf16 = model_dev(images_dev).float()
    e32, e16 = _rel(fp32, ref), _rel(bf16, ref)
    # cuDNN convolutions run in TF32 by default (torch.backends.cudnn.allow_tf32).
    report.add("correct", f"{s.model} forward vs CPU", "fp32", check=_verdict(e32 < 1e-2, f"rel err {e32:.1e}"))
    report.add("correct", f"{s.model} forward vs CPU", "bf16", check=_verdict(e16 < 5e-2, f"rel err {e16:.1e}"))

    if device.type == "cuda":
        images = torch.randn(s.batch, 3, s.input_size, s.input_size, device=device)
        for loss_name, nll in [("", kernel_nll)] + [(", fused loss", fused_kernel_nll)] * fused:
            parts = training_step_parts(model_dev, images.contiguous(memory_format=torch.channels_last),
                                        s.bank_size, s.num_classes, s.k, s.sigma,
                                        fused=nll is fused_kernel_nll)
            parts["nngk_step"]()
            synchronise(device)
            torch.cuda.set_sync_debug_mode("warn")
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    parts["nngk_step"]()
            finally:
                torch.cuda.set_sync_debug_mode("default")
            syncs = [f"{Path(w.filename).name}:{w.lineno}" for w in caught
                     if "synchroniz" in str(w.message).lower()]
            report.add("correct", f"host-device syncs in one NNGK step{loss_name}", "fp32",
                       check=_verdict(not syncs, f"{len(syncs)} syncs" + (f" at {', '.join(syncs[:3])}" if syncs
                                                                          else "")))


def time_loss(s: Sizes, device: torch.device, report: Report) -> None:
    for name, batch, n, c in s.loss_cases:
        features, targets, centres, labels, neighbours, log_weights = (
            t.to(device) for t in _loss_inputs(batch, n, c, s.k, s.dim))
        sq = centres.square().sum(1)
        x, v = features.clone().requires_grad_(True), log_weights.clone().requires_grad_(True)

        def loss(loss_fn):
            return lambda: loss_fn(x, targets, centres, labels, neighbours, v, s.sigma, sq).loss.backward()

        t_loss = mean_time(loss(kernel_nll), 20, device)
        t_gather = mean_time(lambda: centres.index_select(0, neighbours.reshape(-1)), 20, device)
        report.add("loss", f"{name} B={batch} N={n} C={c} fwd+bwd", "fp32", t_loss,
                   ratio=f"x{t_loss / t_gather:.2f} gather ({t_gather * 1e3:.3g} ms)")
        if fused_loss_usable(device):
            t_fused = mean_time(loss(fused_kernel_nll), 20, device)
            report.add("loss", f"fused {name} B={batch} N={n} C={c} fwd+bwd", "fp32", t_fused,
                       ratio=f"x{t_fused / t_loss:.3f} plain, x{t_fused / t_gather:.2f} gather")


def time_steps(s: Sizes, device: torch.device, report: Report) -> None:
    model = build_model(s.model, pretrained="none").to(device)
    images = torch.randn(s.batch, 3, s.input_size, s.input_size, device=device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    case = f"{s.model} {s.input_size}px B={s.batch} N={s.bank_size} C={s.num_classes}"
    for amp in (False, True):
        precision = "bf16" if amp else "fp32"
        parts = training_step_parts(model, images, s.bank_size, s.num_classes, s.k, s.sigma, amp=amp)
        t = {name: mean_time(fn, s.step_runs, device) for name, fn in parts.items()}
        for loss in ("softmax", "nngk"):
            report.add("step", f"{loss} step {case}", precision, t[f"{loss}_step"],
                       rate=f"{s.batch / t[f'{loss}_step']:.0f} img/s",
                       ratio=f"x{t[f'{loss}_step'] / t['softmax_step']:.3f} softmax")
        report.add("step", f"backbone fwd+bwd {case}", precision, t["backbone"],
                   ratio=f"{t['backbone'] / t['nngk_step']:.1%} of nngk step")
        for loss in ("nngk", "softmax"):
            report.add("step", f"{loss} loss fwd+bwd (+accuracy)", precision, t[f"{loss}_loss"],
                       ratio=f"{t[f'{loss}_loss'] / t['nngk_step']:.1%} of nngk step")
            report.add("step", f"{loss} optimiser (Adam)", precision, t[f"{loss}_optimiser"],
                       ratio=f"{t[f'{loss}_optimiser'] / t['nngk_step']:.1%} of nngk step")
        if fused_loss_usable(device):  # what training runs by default on a GPU
            fused = training_step_parts(model, images, s.bank_size, s.num_classes, s.k, s.sigma, amp=amp,
                                        fused=True)
            t_step, t_loss = (mean_time(fused[name], s.step_runs, device) for name in ("nngk_step", "nngk_loss"))
            report.add("step", f"nngk step, fused loss {case}", precision, t_step, rate=f"{s.batch / t_step:.0f} img/s",
                       ratio=f"x{t_step / t['softmax_step']:.3f} softmax")
            report.add("step", "nngk fused loss fwd+bwd (+accuracy)", precision, t_loss,
                       ratio=f"{t_loss / t_step:.1%} of fused nngk step")
        if device.type == "cuda":  # would letting cuDNN pick its algorithms help train.py?
            torch.backends.cudnn.benchmark = True
            t_bench = mean_time(parts["nngk_step"], s.step_runs, device, warmup=5)
            torch.backends.cudnn.benchmark = False
            report.add("step", f"nngk step, cudnn.benchmark=True {case}", precision, t_bench,
                       rate=f"{s.batch / t_bench:.0f} img/s", ratio=f"x{t_bench / t['nngk_step']:.3f} default")


def time_refresh(s: Sizes, device: torch.device, report: Report) -> None:
    model = build_model(s.model, pretrained="none").to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    image = torch.randn(3, s.input_size, s.input_size)
    workers = default_workers()
    loader = DataLoader(_FixedImages(s.refresh_images, image), batch_size=2 * s.batch, num_workers=workers,
                        pin_memory=device.type == "cuda")
    batch = image.unsqueeze(0).expand(2 * s.batch, -1, -1, -1).contiguous().to(device)
    for amp in (False, True):
        precision = "bf16" if amp else "fp32"
        autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp)

        def forward():
            with torch.no_grad(), autocast:
                model.eval()(batch)

        t_fwd = mean_time(forward, s.step_runs, device)
        report.add("refresh", f"forward only, batch {2 * s.batch}", precision, t_fwd,
                   rate=f"{2 * s.batch / t_fwd:.0f} img/s")
        with autocast:
            embed(model, loader, device, progress=False)  # warm-up (cuDNN, workers)
            synchronise(device)
            start = time.perf_counter()
            embed(model, loader, device, progress=False)
            synchronise(device)
        t_embed = time.perf_counter() - start
        report.add("refresh", f"embed() {s.refresh_images} tensors, {workers} loader workers", precision, t_embed,
                   rate=f"{s.refresh_images / t_embed:.0f} img/s")


def time_search(s: Sizes, device: torch.device, report: Report) -> None:
    g = torch.Generator(device=device).manual_seed(3)
    warm = torch.randn(1000, s.dim, device=device)
    nearest_neighbours(warm, warm, min(s.k, 999))
    for n in s.search_sizes:
        centres = torch.randn(n, s.dim, device=device, generator=g)
        q = min(n, s.max_queries)
        queries, exclude = centres[:q], q == n
        rows = auto_chunk_rows(n, device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
        synchronise(device)
        start = time.perf_counter()
        nearest_neighbours(queries, centres, s.k, exclude_self=exclude)
        synchronise(device)
        t_search = time.perf_counter() - start
        memory = None
        if device.type == "cuda":
            memory = f"{(torch.cuda.max_memory_allocated(device) - base) / 2**30:.2f} GiB extra"
        start = time.perf_counter()
        chunked_matmul(queries, centres, rows)
        synchronise(device)
        t_mm = time.perf_counter() - start
        report.add("search", f"N={n} Q={q} k={s.k} ({rows} rows/chunk)", "fp32", t_search,
                   rate=f"all N queries: {_fmt_time(t_search * n / q)}",
                   ratio=f"x{t_search / t_mm:.2f} matmul alone", memory=memory)
        del centres, queries
    # The largest bank against the CPU, on a few queries.
    n = s.search_sizes[-1]
    centres = torch.randn(n, s.dim, generator=torch.Generator().manual_seed(4))
    queries = centres[: s.cpu_check_queries] + 0.1
    d_ref, i_ref = nearest_neighbours(queries, centres, s.k)
    d_got, i_got = nearest_neighbours(queries.to(device), centres.to(device), s.k)
    same = float((i_got.cpu() == i_ref).float().mean())
    err = _rel(d_got, d_ref)
    report.add("correct", f"search N={n}, {s.cpu_check_queries} queries vs CPU", "fp32",
               check=_verdict(err < 1e-5 and same > 0.99, f"dist rel err {err:.1e}, same index {same:.4f}"))


def time_loader_and_train(s: Sizes, device: torch.device, report: Report) -> None:
    from nngk_lab.data.folders import ImageSamples, scan_image_folder
    from nngk_lab.data.transforms import build_transforms

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        write_images(data, s.train_classes * s.images_per_class, 256, "jpg", num_folders=s.train_classes)
        _, samples = scan_image_folder(data)
        train_tf, _ = build_transforms(s.input_size)
        for workers in sorted({default_workers(), max(0, available_cores() - 1)}):
            loader = DataLoader(ImageSamples(samples, train_tf), batch_size=s.batch, num_workers=workers,
                                pin_memory=device.type == "cuda")
            start = time.perf_counter()
            for _ in loader:
                pass
            t = time.perf_counter() - start
            report.add("loader", f"{len(samples)} JPEGs 256px -> {s.input_size}px, {workers} workers", "",
                       t, rate=f"{len(samples) / t:.0f} img/s")
        for loss, amp in (("softmax", True), ("nngk", False), ("nngk", True)):
            precision = "bf16" if amp else "fp32"
            config = make_config(data_dir=str(data), save_dir=str(Path(tmp) / f"run_{loss}_{precision}"),
                                 model=s.model, pretrained="none", input_size=s.input_size, batch_size=s.batch,
                                 num_neighbours=s.k, sigma=s.sigma, update_interval=1, max_epochs=1,
                                 num_classes=s.train_classes, test_fraction=0.1, loss=loss,
                                 device=str(device), amp=amp, progress=False)
            start = time.perf_counter()
            result = train(config)
            total = time.perf_counter() - start
            epoch = result.history[0]
            finite = math.isfinite(epoch["loss"])
            report.add("train", f"nngk_lab.train {loss}: 1 epoch of {len(result.split.train)} images "
                       f"(+refresh if nngk)", precision, epoch["minutes"] * 60,
                       rate=f"{len(result.split.train) / (epoch['minutes'] * 60):.0f} img/s",
                       ratio=f"whole run {total:.1f} s",
                       check=_verdict(finite, f"loss {epoch['loss']:.3g}"))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU (checks the script runs)")
    args = p.parse_args(argv)
    s = DRY if args.dry_run else REAL
    if s.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: run with --dry-run on the CPU", file=sys.stderr)
        return 2
    device = torch.device(s.device)
    torch.set_num_threads(available_cores())
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        header = (f"gpu_check on {name}, torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN "
                  f"{torch.backends.cudnn.version()}, matmul TF32 {torch.backends.cuda.matmul.allow_tf32}, "
                  f"cuDNN TF32 {torch.backends.cudnn.allow_tf32}, {available_cores()} CPU cores")
    else:
        header = f"gpu_check --dry-run on the CPU, torch {torch.__version__}"
    print(header, flush=True)
    report = Report(os.environ.get("OUT"))
    started = time.perf_counter()
    for section in (check_correctness, time_loss, time_steps, time_refresh, time_search, time_loader_and_train,
                    ddp_one_process):
        try:
            section(s, device, report)
        except Exception as e:  # keep the rows measured so far, and the other sections
            traceback.print_exc()
            report.add(section.__name__, "raised", check=f"FAIL ({type(e).__name__}: {str(e)[:100]})")
        if device.type == "cuda":
            torch.cuda.empty_cache()
    ok = report.finish(f"{header}; {time.perf_counter() - started:.0f} s in all")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
