"""Retrieval on never-seen classes after every epoch: when does training stop helping them?

Trains a run one epoch at a time (``nngk_lab.train`` with ``--resume``) and after each
epoch measures it with ``nngk_lab.evaluate`` (the same code as ``make results``), so
epoch 0 is the untrained network. ``--first_classes M`` keeps only the first M class
folders, which allows a validation protocol that never looks at the test classes: on
the digits, train on 0-2 and measure on 3-4 (``--first_classes 5 --num_classes 3``),
leaving 5-9 untouched.

    python tools/heldout_curve.py --first_classes 5 --num_classes 3 --seeds 0 1 2 3

Prints one row per epoch: Recall@1 and MAP@R on the held-out classes for each seed.
Any other ``nngk_lab.train`` flag can follow, e.g. ``--learning_rate 3e-4``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nngk_lab.errors import DataError
from nngk_lab.evaluation.run import evaluate_run
from nngk_lab.explore.validation import subset_settings
from nngk_lab.training.flags import build_train_parser
from nngk_lab.training.config import make_config
from nngk_lab.training.loop import train


def curve(settings: dict, epochs: int) -> list[dict]:
    """Held-out metrics of the run in ``settings["save_dir"]`` after epochs 0..epochs."""
    rows = []
    for epoch in range(1, epochs + 1):
        train(make_config(**{**settings, "max_epochs": epoch}), resume=epoch > 1)
        metrics = evaluate_run(settings["save_dir"], progress=False)
        if epoch == 1:
            rows.append(metrics["untrained"])
        rows.append(metrics["trained"])
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python tools/heldout_curve.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--first_classes", type=int, help="use only the first M class folders")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="one run per seed")
    p.add_argument("--epochs", type=int, default=15, help="epochs per run (default 15)")
    args, rest = p.parse_known_args(argv)
    rest += ["--save_dir", "unused"]
    settings = {k: v for k, v in vars(build_train_parser().parse_args(rest)).items()
                if k not in ("save_dir", "resume", "no_progress", "max_epochs")}
    settings["progress"] = False
    with tempfile.TemporaryDirectory() as tmp:
        if args.first_classes:  # the subset and the digits' defaults as notebook 3's validation sweep makes them
            try:
                settings = subset_settings(settings, args.first_classes, Path(tmp) / "data")
            except DataError as e:
                raise SystemExit(f"--first_classes: {e}") from None
        curves = {seed: curve({**settings, "seed": seed, "save_dir": f"{tmp}/seed{seed}"}, args.epochs)
                  for seed in args.seeds}
    header = "epoch " + " ".join(f"{'R@1 s' + str(s):>9s} {'MAP@R s' + str(s):>9s}" for s in args.seeds)
    print(header)
    for epoch in range(args.epochs + 1):
        cells = " ".join(f"{curves[s][epoch]['recall@1']:9.4f} {curves[s][epoch]['map@r']:9.4f}" for s in args.seeds)
        print(f"{epoch:5d} {cells}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
