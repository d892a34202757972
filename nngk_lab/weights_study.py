"""The label-noise experiment from the command line (the experiment itself is
:mod:`nngk_lab.explore.weights`):

    python -m nngk_lab.weights_study --save_dir runs/label-noise --fraction 0.05 --weight_learning_rate 1e-2

prints how many flipped training images are among the lowest-weighted 5%, against the
number expected by chance."""

from __future__ import annotations

import argparse
import sys

from .explore.weights import describe, label_noise_experiment


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m nngk_lab.weights_study", description=__doc__.split("\n\n")[0])
    p.add_argument("--save_dir", required=True, help="folder for the flipped data (data/) and the run (run/)")
    p.add_argument("--data_dir", help="class-folder tree whose labels are flipped (default: the digits)")
    p.add_argument("--num_classes", type=int, help="trained classes: the first N (default: the first half)")
    p.add_argument("--fraction", type=float, default=0.05, help="share of trained-class images flipped")
    p.add_argument("--weight_learning_rate", type=float, default=1e-2, help="Adam's rate for the kernel weights")
    p.add_argument("--share", type=float, default=0.05, help="size of the lowest-weighted group")
    p.add_argument("--max_epochs", type=int, help="training epochs (digits default: 10)")
    p.add_argument("--seed", type=int, default=0, help="training seed")
    p.add_argument("--flip_seed", type=int, default=0, help="which images are flipped")
    args = p.parse_args(argv)
    _, result = label_noise_experiment(args.save_dir, args.fraction, args.weight_learning_rate, share=args.share,
                                       flip_seed=args.flip_seed, data_dir=args.data_dir, num_classes=args.num_classes,
                                       max_epochs=args.max_epochs, seed=args.seed, progress=False)
    print(describe(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
