"""What each of NNGK's own levers buys, measured on validation classes: the kit's default
NNGK recipe for the data against one change at a time (the centre scheme, a cross-batch
memory, kernels on the batch's own images, a learnt sigma, unit-length embeddings), with
the peers' defaults on the same folds and seeds for reference, and the training
diagnostics of each run (training accuracy, the kernel mass on the true class, how stale
the centres are, the gradient norm, sigma).

    taskset -c 0 nice -n 10 python -m bench.bench_levers --data_dir DIR --model small_cnn --input_size 28 --seeds 3

The folds are ``bench/bench_tune.py``'s (validation classes carved out of the trained
ones; the held-out classes are never read). Each (lever, fold, seed) run is kept under
``OUT/runs`` by a hash of its settings, so a killed study continues. Other flags go to
every run as ``python -m nngk_lab.train`` flags. Writes ``OUT/bench_levers.md`` and ``.json``.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from bench.bench_tune import OWN_FLAGS, fold_tree, make_folds, train_measured
from bench.common import guarded, machine_summary
from nngk_lab.data.digits import export_digits
from nngk_lab.errors import ConfigError
from nngk_lab.evaluation.embeddings import run_data
from nngk_lab.evaluation.time_to_accuracy import mean_std, stat_cell
from nngk_lab.files import atomic_write_text
from nngk_lab.training.config import digits_defaults, make_config
from nngk_lab.training.flags import Parser, build_train_parser
from nngk_lab.training.loaders import RunImages, load_split
from nngk_lab.training.parts import kernel_sigma
from nngk_lab.training.runs import load_run

# One change at a time to the kit's NNGK recipe for the data (the literature's levers, see
# docs/tuning.md), and the peers at their defaults for reference.
LEVERS = {
    "nngk (default)": {},
    "centres recomputed at refreshes (paper)": {"centres": "paper"},
    "cross-batch memory (online, momentum 0)": {"centres": "online", "centre_momentum": 0.0},
    "kernels on the batch's own images": {"batch_kernels": True},
    "learnt sigma": {"sigma_learning_rate": 0.01},
    "unit length, sigma 0.2": {"normalise": True, "sigma": 0.2},
    "unit length, learnt sigma from 0.2": {"normalise": True, "sigma": 0.2, "sigma_learning_rate": 0.01},
    "multi_similarity (default)": {"loss": "multi_similarity"},
    "softmax (default)": {"loss": "softmax"},
}
# From each run's last epoch: what the diagnostics of docs/tuning.md read.
HISTORY_KEYS = ("train_accuracy", "true_class_mass", "absent_fraction", "centre_staleness", "fresh_spread",
                "pure_neighbourhoods", "grad_norm", "sigma")
METRIC_KEYS = ("map@r", "recall@1", "accuracy")


def diagnostics(history: list[dict]) -> dict:
    """The last epoch's training diagnostics; ``true_class_mass`` is ``exp(-loss)``, the
    geometric mean over the epoch's images of the kernel mass on their true class."""
    last = history[-1]
    out = {key: last[key] for key in HISTORY_KEYS if key in last}
    if "centre_staleness" in last:
        out["true_class_mass"] = math.exp(-last["loss"])
    return out


@torch.no_grad()
def final_bank_diagnostics(save_dir: Path) -> dict:
    """Two measures of a finished NNGK run against its final bank. ``fresh_spread``: the
    staleness a perfectly fresh bank would show, the mean distance in kernel widths between
    the network's training-mode embedding of an augmented training image (what the loss
    sees) and its evaluation-mode embedding of the plain image (its centre); the rest of
    ``centre_staleness`` is drift since the centre was stored. ``pure_neighbourhoods``: the
    share of training images whose K nearest other centres are all of their class, whose
    loss is exactly 0 with no gradient: what the loss has left to learn from."""
    run = load_run(save_dir)
    config, split = run_data(run)
    bank = run.bank
    if bank.neighbours is None:
        bank.update_neighbours(config.num_neighbours)
    pure = float((bank.labels[bank.neighbours] == bank.labels[:, None]).all(1).float().mean())
    run.model.train()  # batch statistics and dropout as in a training step; the run is not saved again
    total, count = 0.0, 0
    for images, _, index in RunImages(config, split, torch.device("cpu")).epoch_batches(0, 0):
        total += float((run.model(images) - bank.features[index]).norm(dim=1).sum())
        count += len(index)
    return {"fresh_spread": total / count / kernel_sigma(config, run.kernel_weights), "pure_neighbourhoods": pure}


def run_lever(name: str, change: dict, base: dict, folds: list[dict], trees: list[Path], seeds: int,
              runs_dir: Path, bar, digits: bool = False) -> dict:
    """Every fold x seed run of one lever; its metrics and diagnostics per run. On the
    digits each loss starts from its own digits defaults."""
    runs = []
    loss = change.get("loss", "nngk")
    for f, (fold, tree) in enumerate(zip(folds, trees)):
        for seed in range(seeds):
            settings = {**(digits_defaults(loss) if digits else {}), **base, "loss": loss, **change,
                        "data_dir": str(tree), "num_classes": len(fold["train_classes"]), "seed": seed}
            metrics = train_measured(settings, {}, runs_dir, f"fold{f}-seed{seed}")
            history = json.loads((Path(metrics["save_dir"]) / "history.json").read_text())
            more = final_bank_diagnostics(Path(metrics["save_dir"])) if loss == "nngk" else {}
            runs.append({"fold": f, "seed": seed, **{k: metrics["trained"][k] for k in METRIC_KEYS},
                         **diagnostics(history), **more})
            bar.update()
    keys = METRIC_KEYS + HISTORY_KEYS
    return {"lever": name, "change": change, "runs": runs,
            **{k: mean_std([r[k] for r in runs]) for k in keys if all(k in r for r in runs)}}


def table(rows: list[dict]) -> str:
    header = ("lever", "val MAP@R", "val R@1", "seen accuracy", "train accuracy", "true-class mass",
              "staleness (sigmas)", "with a fresh bank", "pure neighbourhoods", "grad norm", "sigma at end")
    keys = METRIC_KEYS + ("train_accuracy", "true_class_mass", "centre_staleness", "fresh_spread",
                          "pure_neighbourhoods", "grad_norm", "sigma")
    lines = ["| " + " | ".join(header) + " |", "|---|" + "--:|" * (len(header) - 1)]
    for row in rows:
        cells = [row["lever"]] + [stat_cell(row[k], 3) if k in row else "-" for k in keys]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse(argv):
    p = Parser(prog="python -m bench.bench_levers", description=__doc__.split("\n\n")[0])
    p.add_argument("--levers", nargs="+", default=list(LEVERS), choices=list(LEVERS), metavar="LEVER",
                   help=f"levers to measure (default: all of {', '.join(LEVERS)})")
    p.add_argument("--folds", type=int, default=1, help="validation folds (default 1)")
    p.add_argument("--val_classes", type=int, help="validation classes per fold (default a third of the trained "
                                                   "classes, at least 2)")
    p.add_argument("--epochs", type=int, default=10, help="epochs per run (default 10)")
    p.add_argument("--seeds", type=int, default=3, help="seeds per lever and fold (default 3)")
    p.add_argument("--out_dir", default="runs/bench_levers", help="where the runs and tables go")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    args, rest = p.parse_known_args(argv)
    given = vars(build_train_parser().parse_args([*rest, "--save_dir", "unused"]))
    if args.folds < 1 or args.seeds < 1 or args.epochs < 1:
        raise ConfigError("--folds, --seeds and --epochs must be at least 1")
    base = {k: v for k, v in given.items() if k not in OWN_FLAGS and v is not None}
    args.digits = given["data_dir"] is None
    return args, given, {**base, "max_epochs": args.epochs}


def _main(argv) -> int:
    command = "python -m bench.bench_levers " + " ".join(sys.argv[1:] if argv is None else argv)
    start = time.monotonic()
    args, given, base = parse(argv)
    data_dir = Path(given["data_dir"]) if given["data_dir"] else export_digits()
    probe = make_config(**{**(digits_defaults() if args.digits else {}), **base}, data_dir=str(data_dir),
                        num_classes=given["num_classes"], save_dir="unused")
    trained = load_split(probe).trained_classes
    out = Path(args.out_dir)
    folds = make_folds(trained, args.folds, args.val_classes or max(2, len(trained) // 3))
    trees = [fold_tree(data_dir, fold, out / "folds" / f"fold{f}") for f, fold in enumerate(folds)]
    with tqdm(total=len(args.levers) * args.folds * args.seeds, desc="runs", disable=args.no_progress) as bar:
        rows = [run_lever(name, LEVERS[name], base, folds, trees, args.seeds, out / "runs", bar, args.digits)
                for name in args.levers]
    folds_text = "; ".join(f"train {f['train_classes']}, validate {f['val_classes']}" for f in folds)
    markdown = (f"`{command}`: {(time.monotonic() - start) / 60:.1f} min on {machine_summary()}. Folds: {folds_text} "
                f"(held-out classes never read); seeds 0..{args.seeds - 1}; {args.epochs} epochs per run; "
                "mean ± std over folds and seeds; diagnostics from each run's last epoch.\n\n" + table(rows) + "\n")
    atomic_write_text(json.dumps({"command": command, "folds": folds, "rows": rows}, indent=2),
                      out / "bench_levers.json")
    atomic_write_text(markdown, out / "bench_levers.md")
    print(markdown)
    return 0


def main(argv=None) -> int:
    return guarded(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
