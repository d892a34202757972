"""``python -m nngk_lab.train``: train a run (:func:`nngk_lab.training.train`) from the
command line and print its evaluation. ``--help`` explains every flag."""

from __future__ import annotations

import sys

from . import distributed
from .errors import NNGKError
from .training.flags import config_from_argv
from .training.loop import train


def print_evaluation(evaluation: dict) -> None:
    for key, value in evaluation.items():
        print(f"  {key:28s} {value:.4f}" if isinstance(value, float) else f"  {key:28s} {value}")


def _stopped_after(result) -> str:
    epochs = f"{len(result.history)} epoch{'s' * (len(result.history) != 1)}"
    steps = result.evaluation.get("partial_epoch_steps", 0)
    return f"{epochs} and {steps} steps of epoch {len(result.history) + 1}" if steps else epochs


def main(argv=None) -> int:
    """``python -m nngk_lab.train``."""
    config = None
    try:
        config, resume = config_from_argv(argv)
        result = train(config, resume=resume)
    except NNGKError as e:
        print(f"error{distributed.who()}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        kept = f"the last checkpoint in {config.save_dir} was kept" if config else "nothing was written"
        print(f"error{distributed.who()}: stopped at once by a second Ctrl-C; {kept}", file=sys.stderr)
        return 130
    if result.stop_reason == "interrupted":
        return 130
    if not distributed.is_writer():  # process 0 reports for all
        return 0
    print(f"Finished ({result.stop_reason}) after {_stopped_after(result)}; saved in {config.save_dir}")
    print_evaluation(result.evaluation)
    return 0


if __name__ == "__main__":
    sys.exit(main())
