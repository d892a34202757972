"""Training images per second, end to end: this checkout against another one (e.g. an
older commit), the same recipe, each run a fresh ``python -m nngk_lab.train`` process for
the same wall-clock budget, taken in turns.

    git worktree add /tmp/before 741e42b      # the code before the throughput work
    python -m bench.bench_throughput --before /tmp/before --data_dir /tmp/proxy --minutes 1 \\
        --flags "--model small_cnn --input_size 28 --num_classes 5"

Images/s counts every training image the run took a step on (finished epochs, and the
steps of a partial one) over the minutes it trained (its own clock: bank refreshes and
test measurements during training included, the final evaluation not). Both checkouts
get --flags; this checkout trains with its own defaults for the model, the other with
the small CNN's recipe of the digits (sigma 1, K 20, lr 1e-4, batch 64, flips, a refresh
every epoch) passed explicitly, since older checkouts gave a small CNN on a folder
ResNet18's defaults (a flag in --flags replaces the recipe's).
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from .common import format_table, machine_summary

ROOT = Path(__file__).resolve().parents[1]
RECIPE = {"--model": "small_cnn", "--sigma": "1", "--num_neighbours": "20", "--learning_rate": "1e-4",
          "--batch_size": "64", "--update_interval": "1"}


def _with_recipe(extra: list[str]) -> list[str]:
    flags = dict(RECIPE)
    i = 0
    while i < len(extra):  # every flag here takes one value
        flags[extra[i]] = extra[i + 1]
        i += 2
    return [token for pair in flags.items() for token in pair]


def run_once(checkout: Path, flags: list[str], minutes: float, save_dir: Path, seed: int) -> dict:
    """Train for ``minutes`` with the code of ``checkout``; the images/s it reached."""
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    cmd = [sys.executable, "-m", "nngk_lab.train", "--save_dir", str(save_dir), "--no_progress",
           "--max_time", str(minutes), "--max_epochs", "100000", "--seed", str(seed), *flags]
    proc = subprocess.run(cmd, cwd=checkout, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{checkout}: training failed:\n{proc.stderr[-2000:]}")
    state = torch.load(save_dir / "checkpoint.pt", map_location="cpu", weights_only=False)
    config = state["config"]
    # The number of training images, from the bank (an NNGK run always has one).
    bank = state.get("eval_bank") or state["bank"]
    num_train = bank["features"].shape[0]
    images = state["epoch"] * num_train + state["step"] * config["batch_size"]
    return {"images": images, "minutes": state["elapsed"], "images/s": images / (state["elapsed"] * 60),
            "epochs": state["epoch"] + state["step"] * config["batch_size"] / num_train}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.bench_throughput", description=__doc__.split("\n\n")[0])
    p.add_argument("--before", type=Path, required=True, help="the other checkout (a folder holding nngk_lab/)")
    p.add_argument("--data_dir", required=True, help="class-folder tree to train on")
    p.add_argument("--minutes", type=float, default=1.0, help="training budget of each run (default 1)")
    p.add_argument("--seeds", type=int, default=2, help="runs of each checkout, in turns (default 2)")
    p.add_argument("--flags", default="", help="more train flags for both, e.g. \"--input_size 28\"")
    args = p.parse_args(argv)
    given = ["--data_dir", args.data_dir, *shlex.split(args.flags)]
    checkouts = {"before": args.before.resolve(), "this checkout": ROOT}
    flags = {"before": _with_recipe(given), "this checkout": given}
    results: dict[str, list[dict]] = {name: [] for name in checkouts}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            for name, checkout in checkouts.items():
                save_dir = Path(tmp) / f"{name.replace(' ', '_')}-{seed}"
                results[name].append(run_once(checkout, flags[name], args.minutes, save_dir, seed))
                print(f"  {name} seed {seed}: {results[name][-1]['images/s']:.0f} images/s", flush=True)
    rows = [{"code": name, "checkout": str(checkouts[name]),
             "flags": " ".join(f for f in flags[name] if f not in ("--data_dir", args.data_dir)),
             "images/s (median)": statistics.median(r["images/s"] for r in runs),
             "images/s (each run)": " ".join(f"{r['images/s']:.0f}" for r in runs),
             "epochs (median)": statistics.median(r["epochs"] for r in runs)} for name, runs in results.items()]
    ratio = rows[1]["images/s (median)"] / rows[0]["images/s (median)"]
    print(f"training throughput on {args.data_dir}, {args.minutes} min per run -- {machine_summary()}")
    print(format_table(rows))
    print(f"this checkout / before: {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
