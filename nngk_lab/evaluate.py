"""``python -m nngk_lab.evaluate``: measure a saved run
(:func:`nngk_lab.evaluation.evaluate_run`), print the table and write ``metrics.json``."""

from __future__ import annotations

import sys
from pathlib import Path

from . import distributed
from .device import resolve_device
from .evaluation.run import METRICS_NAME, evaluate_run, format_metrics
from .training.flags import Parser, report_errors


def main(argv=None) -> int:
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
    metrics = report_errors(lambda: evaluate_run(args.save_dir, args.data_dir, resolve_device(args.device, args.gpu_id),
                                             progress=not args.no_progress))
    if metrics is None:
        return 2
    print(format_metrics(metrics))
    print(f"written to {Path(args.save_dir) / METRICS_NAME}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
