"""``python -m nngk_lab.compare``: several evaluated runs side by side, as a table and
optionally a bar chart (:mod:`nngk_lab.evaluation.compare`, :mod:`nngk_lab.viz.compare`)."""

from __future__ import annotations

import sys
from pathlib import Path

from matplotlib.figure import Figure

from .device import resolve_device
from .evaluation.compare import comparison_table, load_metrics
from .evaluation.run import METRICS_NAME
from .training.flags import Parser, report_errors
from .viz.compare import comparison_figure


def main(argv=None) -> int:
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

    runs = report_errors(load_all)
    if runs is None:
        return 2
    print(comparison_table(runs, markdown=args.markdown))
    if args.out:
        comparison_figure(runs).savefig(args.out, dpi=120)
        print(f"figure written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
