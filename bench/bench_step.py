"""What does NNGK cost over a plain softmax classifier, per training step, on the CPU?

For each backbone it times, with the same batch: data loading (decode + augment, in the
main process), backbone forward + backward, the loss forward + backward, the optimiser
step, and the whole step as ``nngk_lab.train`` does it, for the NNGK loss and for a
softmax head; then the bank refresh (images/s) and the neighbour search at the bank size
given, amortised over the steps between refreshes.

    python -m bench.bench_step           # small_cnn at 32 px and resnet18 at 128 px (a few minutes)
    python -m bench.bench_step --quick   # tiny sizes: checks the script runs

Images are synthetic files of the given source size in a temporary class-folder tree,
read through the package's own dataset and transforms. The bank, its labels and the
neighbour lists are random (their values do not change the cost).
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from nngk_lab.kernel.bank import embed
from nngk_lab.kernel.search import nearest_neighbours
from nngk_lab.data.folders import ImageSamples, scan_image_folder
from nngk_lab.data.transforms import build_transforms
from nngk_lab.device import available_cores, default_workers
from nngk_lab.models.backbones import build_model

from .common import best_times, format_table, machine_summary, training_step_parts

# backbone -> (network input side, batch, side of the image files, file type)
SETTINGS = {"small_cnn": (32, 64, 8, "png"), "resnet18": (128, 32, 256, "jpg")}
SEARCH_QUERIES = 1024


def write_images(root: Path, count: int, side: int, ext: str, num_folders: int = 4) -> None:
    """Smooth random RGB images (like photos, unlike noise, they compress well)."""
    rng = np.random.default_rng(0)
    for i in range(count):
        folder = root / f"class_{i % num_folders:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        small = rng.integers(0, 256, (max(2, side // 16),) * 2 + (3,), dtype=np.uint8)
        Image.fromarray(small).resize((side, side), Image.BILINEAR).save(folder / f"im_{i:04d}.{ext}")


def measure(name: str, input_size: int, batch: int, side: int, ext: str, bank_size: int, num_classes: int,
            k: int, sigma: float, repeat: int, refresh_images: int, root: Path) -> tuple[dict, list[dict]]:
    write_images(root, max(2 * batch, refresh_images), side, ext)
    _, samples = scan_image_folder(root)
    train_tf, eval_tf = build_transforms(input_size)
    train_loader = DataLoader(ImageSamples(samples, train_tf), batch_size=batch, shuffle=True, num_workers=0)
    images, _, _ = next(iter(train_loader))

    model = build_model(name, pretrained="none")
    parts = training_step_parts(model, images, bank_size, num_classes, k, sigma)
    t = best_times({"data": lambda: next(iter(train_loader)), **parts}, repeat=repeat)

    # The refresh: every training image through the eval transform and the network.
    eval_set = ImageSamples(samples, eval_tf)
    workers = default_workers()
    refresh_fns = {"serial": lambda: embed(model, DataLoader(eval_set, batch_size=batch, num_workers=0),
                                           "cpu", progress=False)}
    if workers > 0:
        refresh_fns["workers"] = lambda: embed(model, DataLoader(eval_set, batch_size=batch, num_workers=workers),
                                               "cpu", progress=False)

    def forward_only():
        with torch.no_grad():
            model.eval()
            model(images)
            model.train()

    refresh_fns["forward"] = forward_only
    r = best_times(refresh_fns, repeat=max(1, repeat - 1))
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(bank_size, model.embedding_dim, generator=g)
    queries = centres[:SEARCH_QUERIES]
    t_search = best_times({"search": lambda: nearest_neighbours(queries, centres, k)}, repeat=2, warmup=0)
    search_s = t_search["search"] * bank_size / queries.shape[0]
    ips = len(eval_set) / r.get("workers", r["serial"])
    refresh_s = bank_size / ips
    steps_per_epoch = math.ceil(bank_size / batch)
    refresh_row = {"backbone": name, "input": input_size, "batch": batch,
                   "images/s serial": len(eval_set) / r["serial"],
                   f"images/s {workers} workers": len(eval_set) / r["workers"] if "workers" in r else None,
                   "images/s forward only": batch / r["forward"],
                   "N": bank_size, "refresh s": refresh_s, "search s": search_s}

    rows = []
    for loss in ("softmax", "nngk"):
        row = {"backbone": name, "loss": loss, "data ms": 1e3 * t["data"], "backbone f+b ms": 1e3 * t["backbone"],
               "loss f+b ms": 1e3 * t[f"{loss}_loss"], "optimiser ms": 1e3 * t[f"{loss}_optimiser"],
               "step ms": 1e3 * t[f"{loss}_step"]}
        for interval in (5, 1):
            amortised = (refresh_s + search_s) / (interval * steps_per_epoch) if loss == "nngk" else 0.0
            row[f"refresh+search/step ms (every {interval})"] = 1e3 * amortised
            row[f"vs softmax (every {interval})"] = (t[f"{loss}_step"] + amortised) / t["softmax_step"]
        rows.append(row)
    return refresh_row, rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.bench_step", description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument("--resnet_input", type=int, default=SETTINGS["resnet18"][0],
                   help="resnet18 input side (the original used 256)")
    p.add_argument("--bank_size", type=int, default=59_551, help="training images N (default: SOP's)")
    p.add_argument("--classes", type=int, default=11_318, help="classes (default: SOP's)")
    p.add_argument("--neighbours", type=int, default=200)
    p.add_argument("--sigma", type=float, default=10.0)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--refresh_images", type=int, default=512, help="images embedded to time the refresh")
    p.add_argument("--quick", action="store_true", help="tiny sizes, to check that the script runs")
    args = p.parse_args(argv)
    torch.set_num_threads(available_cores())
    settings = dict(SETTINGS)
    settings["resnet18"] = (args.resnet_input, *SETTINGS["resnet18"][1:])
    bank_size, classes, k, repeat = args.bank_size, args.classes, args.neighbours, args.repeat
    refresh_images = args.refresh_images
    if args.quick:
        settings = {"small_cnn": (16, 8, 8, "png")}
        bank_size, classes, k, repeat, refresh_images = 300, 10, 10, 1, 16
    refresh_rows, step_rows = [], []
    for name in (m for m in args.models if m in settings):
        with tempfile.TemporaryDirectory() as tmp:
            refresh_row, rows = measure(name, *settings[name], bank_size, classes, k, args.sigma, repeat,
                                         refresh_images, Path(tmp))
        refresh_rows.append(refresh_row)
        step_rows.extend(rows)
    print(f"bank refresh and neighbour search (N = {bank_size}, k = {k}) -- {machine_summary()}")
    print(format_table(refresh_rows))
    print(f"\ntraining step on the CPU, {classes} classes, K = {k}; best of {repeat} runs, taken in turns")
    print(format_table(step_rows))
    print("step: zero_grad + forward + loss + backward + optimiser, as nngk_lab.train does it, data not "
          "included (loader workers overlap it). vs softmax: (step + amortised refresh and search) / softmax "
          "step, refreshing every 5 epochs (the original's default) or every epoch.")


if __name__ == "__main__":
    main()
