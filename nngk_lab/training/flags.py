"""A run's settings as command-line flags: one flag per :class:`TrainConfig` field, read
back into a config by :func:`config_from_argv`. ``python -m nngk_lab.train`` and the
time-to-accuracy benchmark (which can train in its own process) share this parsing, and
every command line shares :class:`Parser` and :func:`report_errors`: a bad flag or an
nngk_lab error is one line, ``error: ...``, with exit status 2."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from ..errors import ConfigError, NNGKError
from .config import TrainConfig, config_from_dict, default_text, make_config
from .runs import CHECKPOINT_NAME, RESUME_OVERRIDES


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


def report_errors(work):
    """``work()``'s result, or None after printing its nngk_lab error as one line."""
    try:
        return work()
    except NNGKError as e:
        print(f"error: {e}", file=sys.stderr)
        return None


def config_from_argv(argv=None) -> tuple[TrainConfig, bool]:
    """The config that ``python -m nngk_lab.train ARGV`` trains, and whether it resumes."""
    args = vars(build_train_parser().parse_args(argv))
    resume = args.pop("resume")
    args["progress"] = not args.pop("no_progress")
    args["amp"] = args["amp"] or None
    if resume:
        args = resume_args(args)
    return make_config(**args), resume
