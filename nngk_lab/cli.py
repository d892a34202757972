"""The command lines: ``python -m nngk_lab.train``, ``python -m nngk_lab.evaluate`` and
``python -m nngk_lab.compare``. Every nngk_lab error is printed as one line
(``error: ...``) with exit status 2."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from matplotlib.figure import Figure

from . import distributed
from .compare import comparison_figure, comparison_table, load_metrics
from .config import TrainConfig, config_from_dict, default_text, make_config
from .device import resolve_device
from .errors import ConfigError, NNGKError
from .evaluate import METRICS_NAME, evaluate_run, format_metrics
from .runs import CHECKPOINT_NAME, RESUME_OVERRIDES
from .train import train


def parse_bool(text: str) -> bool:
    """``true``/``false`` (or 1/0, yes/no, on/off) as a flag's value."""
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


class Parser(argparse.ArgumentParser):
    """Reports a bad flag in one line, like every other error of the command line."""

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


# Flags whose presence switches a setting on, rather than taking a value.
_SWITCHES = ("amp",)


def build_train_parser() -> argparse.ArgumentParser:
    """``python -m nngk_lab.train``'s flags: one per :class:`TrainConfig` field, with the
    field's help and its defaults per model (each stated once)."""
    p = Parser(prog="python -m nngk_lab.train",
               description="Train an embedding with the nearest-neighbour Gaussian kernel loss (Meyer et al. "
                           "2018). Without --data_dir it trains the small CNN on the embedded digits; with it, "
                           "ResNet18 with the original's defaults unless --model says otherwise.",
               argument_default=None)
    for f in dataclasses.fields(TrainConfig):
        if not f.metadata.get("cli", True):
            continue
        help_text = f.metadata["help"]
        if f.name in _SWITCHES:
            p.add_argument(f"--{f.name}", action="store_true", help=help_text)
            continue
        kind = str(f.type).split(" |")[0]
        convert = {"int": int, "float": float, "bool": parse_bool}.get(kind, str)
        p.add_argument(f"--{f.name}", type=convert, choices=f.metadata.get("choices"),
                       required=f.name == "save_dir",
                       help=help_text + ("" if f.name == "save_dir" else default_text(f.name)))
    p.add_argument("--resume", action="store_true", help="continue the run in --save_dir from its checkpoint, "
                                                          "with its settings (start one if there is none)")
    p.add_argument("--no_progress", action="store_true", help="no progress bars")
    return p


def print_evaluation(evaluation: dict) -> None:
    for key, value in evaluation.items():
        print(f"  {key:28s} {value:.4f}" if isinstance(value, float) else f"  {key:28s} {value}")


def resume_args(args: dict) -> dict:
    """Flags for ``--resume`` of the run in ``--save_dir``: refuse those it would ignore (it
    keeps its settings) unless they equal the run's own values, and take ``--max_epochs``,
    ``--max_time`` and ``--data_dir`` from its last session unless given, so that a plain
    ``--resume`` finishes the run as planned, and its loss and sampler, which the other
    flags are checked against."""
    save_dir = Path(args["save_dir"])
    try:
        saved = json.loads((save_dir / "config.json").read_text()) if (save_dir / CHECKPOINT_NAME).exists() else {}
    except (OSError, ValueError):  # no readable config.json: train() still checks the checkpoint itself
        return args
    if not saved:
        return args
    effective = dataclasses.asdict(config_from_dict(saved))
    for name, value in args.items():
        if value is not None and name in effective and name not in RESUME_OVERRIDES and name != "data_dir" \
                and value != effective[name]:
            raise ConfigError(f"--{name} {value} differs from the run in {save_dir} ({name} {effective[name]}); "
                              "a resumed run keeps its settings: leave the flag out, or start a new run in "
                              "another --save_dir")
    planned = {name: saved[name] for name in ("max_epochs", "max_time", "data_dir", "loss", "sampler")
               if args.get(name) is None and name in saved}
    return {**args, **planned}


def _stopped_after(result) -> str:
    epochs = f"{len(result.history)} epoch{'s' * (len(result.history) != 1)}"
    steps = result.evaluation.get("partial_epoch_steps", 0)
    return f"{epochs} and {steps} steps of epoch {len(result.history) + 1}" if steps else epochs


def train_main(argv=None) -> int:
    """``python -m nngk_lab.train``."""
    args = vars(build_train_parser().parse_args(argv))
    resume = args.pop("resume")
    args["progress"] = not args.pop("no_progress")
    args["amp"] = args["amp"] or None
    try:
        if resume:
            args = resume_args(args)
        config = make_config(**args)
        result = train(config, resume=resume)
    except NNGKError as e:
        print(f"error{distributed.who()}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"error{distributed.who()}: stopped at once by a second Ctrl-C; the last checkpoint in "
              f"{args['save_dir']} was kept", file=sys.stderr)
        return 130
    if result.stop_reason == "interrupted":
        return 130
    if not distributed.is_writer():  # process 0 reports for all
        return 0
    print(f"Finished ({result.stop_reason}) after {_stopped_after(result)}; saved in {config.save_dir}")
    print_evaluation(result.evaluation)
    return 0


def _reported(work):
    """``work()``'s result, or None after printing its nngk_lab error as one line."""
    try:
        return work()
    except NNGKError as e:
        print(f"error: {e}", file=sys.stderr)
        return None


def evaluate_main(argv=None) -> int:
    """``python -m nngk_lab.evaluate``."""
    parser = Parser(
        prog="python -m nngk_lab.evaluate",
        description="Evaluate a trained run and its untrained starting point: classification accuracy on "
                    "test images of the trained classes, and Recall@K, MAP@R and NMI on the held-out "
                    f"classes. Prints a table and writes SAVE_DIR/{METRICS_NAME}. Under torchrun only process 0 "
                    "evaluates (the others exit at once), with the same numbers as a single process.")
    parser.add_argument("--save_dir", required=True, help="folder of a run written by python -m nngk_lab.train")
    parser.add_argument("--data_dir", help="the run's data folder, if it has moved (default: the one it "
                                           "was trained on; the embedded digits if none)")
    parser.add_argument("--device", help="cpu, cuda, cuda:N or auto (default cpu)")
    parser.add_argument("--gpu_id", type=int, help="evaluate on this GPU")
    parser.add_argument("--no_progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if not distributed.is_writer():
        return 0
    metrics = _reported(lambda: evaluate_run(args.save_dir, args.data_dir, resolve_device(args.device, args.gpu_id),
                                             progress=not args.no_progress))
    if metrics is None:
        return 2
    print(format_metrics(metrics))
    print(f"written to {Path(args.save_dir) / METRICS_NAME}")
    return 0


def compare_main(argv=None) -> int:
    """``python -m nngk_lab.compare``."""
    parser = Parser(
        prog="python -m nngk_lab.compare",
        description="Compare evaluated runs: print a table of accuracy, Recall@K, MAP@R and NMI for each run "
                    "and its untrained network, and optionally save a bar chart. Runs without an up-to-date "
                    f"{METRICS_NAME} are evaluated first.")
    parser.add_argument("runs", nargs="+", help=f"save directories of runs (or their {METRICS_NAME} files)")
    parser.add_argument("--out", help="save the bar chart to this file (png, pdf, svg)")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument("--device", help="cpu, cuda, cuda:N or auto: where runs that need evaluating are "
                                         "evaluated (default cpu)")
    parser.add_argument("--no_progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if args.out:  # checked before any evaluation, which can take minutes
        out = Path(args.out)
        formats = Figure().canvas.get_supported_filetypes()
        if not out.parent.is_dir() or out.suffix.lstrip(".").lower() not in formats:
            print(f"error: --out {out} must name a file in an existing folder, ending in one of "
                  f".{', .'.join(sorted(formats))}", file=sys.stderr)
            return 2
    def load_all() -> list[dict]:
        device = resolve_device(args.device)
        return [load_metrics(path, device, progress=not args.no_progress) for path in args.runs]

    runs = _reported(load_all)
    if runs is None:
        return 2
    print(comparison_table(runs, markdown=args.markdown))
    if args.out:
        comparison_figure(runs).savefig(args.out, dpi=120)
        print(f"figure written to {args.out}")
    return 0
