"""``python -m nngk_lab.evaluate``: measure a saved run
(:func:`nngk_lab.evaluation.evaluate_run`), print the table and write ``metrics.json``."""

from __future__ import annotations

import sys
from pathlib import Path

from . import distributed
from .device import resolve_device
from .evaluation.metrics import RECALL_KS
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
    parser.add_argument("--ks", type=int, nargs="+", default=list(RECALL_KS), metavar="K",
                        help="the K of Recall@K, e.g. --ks 1 10 100 1000 for Stanford Online Products (default: "
                             f"{' '.join(map(str, RECALL_KS))}; those not below the number of held-out images are "
                             "left out)")
    parser.add_argument("--no_nmi", action="store_true",
                        help="skip NMI, whose k-means into as many clusters as held-out classes takes long on "
                             "thousands of classes (SOP's 11,316)")
    parser.add_argument("--no_progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if min(args.ks) < 1:
        parser.error(f"argument --ks: each K must be at least 1, got {min(args.ks)}")
    if not distributed.is_writer():
        return 0
    metrics = report_errors(lambda: evaluate_run(args.save_dir, args.data_dir, resolve_device(args.device, args.gpu_id),
                                             progress=not args.no_progress, ks=args.ks, with_nmi=not args.no_nmi))
    if metrics is None:
        return 2
    print(format_metrics(metrics))
    print(f"written to {Path(args.save_dir) / METRICS_NAME}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
