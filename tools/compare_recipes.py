"""Training recipes compared on validation classes carved out of the trained ones.

Keeps the first ``--first_classes`` class folders of ``--data_dir`` (links, nothing
copied), trains each recipe on the first ``--num_classes`` of them for ``--epochs`` epochs
and evaluates it with ``nngk_lab.evaluate``: accuracy on test images of the trained
classes, and retrieval on the remaining (validation) classes. The held-out classes of the
real protocol are never read. One row per recipe and seed, then the untrained network's.

    python tools/compare_recipes.py --data_dir DIR --first_classes 5 --num_classes 3 --epochs 6 \\
        --recipe "paper, lr 1e-4=--centres paper --learning_rate 1e-4" \\
        --recipe "online, lr 3e-4=--centres online --learning_rate 3e-4"

Each ``--recipe`` is ``NAME=FLAGS`` (any ``nngk_lab.train`` flags); ``--flags`` are given
to every recipe.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from heldout_curve import class_subset  # noqa: E402

from nngk_lab.training.flags import build_train_parser
from nngk_lab.training.config import make_config
from nngk_lab.data.digits import export_digits
from nngk_lab.evaluation.run import evaluate_run
from nngk_lab.training.loop import train

COLUMNS = ("kernel_accuracy", "nearest_neighbour_accuracy", "recall@1", "map@r")


def _settings(flags: str, save_dir: str) -> dict:
    args = vars(build_train_parser().parse_args([*shlex.split(flags), "--save_dir", save_dir]))
    return {k: v for k, v in args.items() if k not in ("resume", "no_progress") and v is not None}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python tools/compare_recipes.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--data_dir", help="class-folder tree (default: the embedded digits)")
    p.add_argument("--first_classes", type=int, required=True, help="keep only the first M class folders")
    p.add_argument("--num_classes", type=int, required=True, help="train on the first N of them")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--recipe", action="append", required=True, help="NAME=FLAGS (repeat for each recipe)")
    p.add_argument("--flags", default="", help="flags for every recipe, e.g. \"--model small_cnn --input_size 28\"")
    args = p.parse_args(argv)
    recipes = dict(r.split("=", 1) for r in args.recipe)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = class_subset(Path(args.data_dir) if args.data_dir else export_digits(), args.first_classes,
                            Path(tmp) / "data")
        untrained = {}
        for name, flags in recipes.items():
            for seed in args.seeds:
                save_dir = f"{tmp}/{len(rows)}"
                settings = _settings(f"{args.flags} {flags}", save_dir)
                config = make_config(**{**settings, "data_dir": str(data), "num_classes": args.num_classes,
                                        "max_epochs": args.epochs, "seed": seed, "progress": False})
                start = time.monotonic()
                train(config)
                minutes = (time.monotonic() - start) / 60
                metrics = evaluate_run(save_dir, progress=False)
                untrained.setdefault(seed, metrics["untrained"])
                rows.append((name, seed, f"{minutes:.1f}", *(metrics["trained"][c] for c in COLUMNS)))
                print(f"  done: {name}, seed {seed}", file=sys.stderr, flush=True)
        rows += [("untrained", seed, "-", *(m.get(c, float("nan")) for c in COLUMNS)) for seed, m in untrained.items()]
    print("| recipe | seed | minutes | seen kernel acc | seen 1-NN acc | validation R@1 | validation MAP@R |")
    print("|---|--:|--:|--:|--:|--:|--:|")
    for name, seed, minutes, *values in rows:
        print(f"| {name} | {seed} | {minutes} | " + " | ".join(f"{v:.4f}" for v in values) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
