"""Time-to-accuracy: every loss (NNGK, softmax and pytorch-metric-learning's NCA,
ProxyNCA, Multi-Similarity and contrastive) trained for the same wall-clock budget on
the same data and model, for several seeds, each run in a fresh process, then one table.

The table gives, per loss, mean ± std over seeds of: epochs and training images per
second reached in the budget, accuracy on test images of the trained classes by the
kernel classifier and by 1-NN on the embedding, and retrieval on the held-out classes
(Recall@1, MAP@R); then the untrained network's rows. It is written next to the runs as
bench_quality.md and bench_quality.json, with the command, the machine and its load
(this machine is shared: the load says how much other work ran alongside).

    python -m bench.bench_quality --minutes 1 --seeds 3

Other flags go to every run's ``python -m nngk_lab.train`` (e.g. ``--model small_cnn
--input_size 64``). Finished runs in --out_dir are reused, so an interrupted benchmark continues where it
stopped; delete the folder to measure afresh.
"""

from __future__ import annotations

import os
import sys
import time

from bench.common import machine_summary
from nngk_lab.files import atomic_write_text
from nngk_lab.training.flags import Parser
from nngk_lab.training.config import LOSSES
from nngk_lab.errors import NNGKError
from nngk_lab.evaluation.time_to_accuracy import SUMMARY_NAME, benchmark, summary_table, write_summary


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.1f} / {five:.1f} / {fifteen:.1f}"


def main(argv=None) -> int:
    p = Parser(prog="python -m bench.bench_quality", description=__doc__.split("\n\n")[0])
    p.add_argument("--losses", nargs="+", default=list(LOSSES), choices=LOSSES, help="losses to train (default: all)")
    p.add_argument("--minutes", type=float, default=2.0, help="training budget per run (default 2)")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per loss (default 3)")
    p.add_argument("--data_dir", help="class-folder dataset (default: the embedded digits)")
    p.add_argument("--out_dir", default="runs/bench_quality", help="where the runs and tables go "
                                                                    "(default runs/bench_quality)")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    args, train_flags = p.parse_known_args(argv)
    command = "python -m bench.bench_quality " + " ".join(sys.argv[1:] if argv is None else argv)
    load_before, start = _load(), time.monotonic()
    try:
        summary = benchmark(args.losses, args.seeds, args.minutes, args.data_dir, args.out_dir,
                            progress=not args.no_progress, extra_args=train_flags)
    except NNGKError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    summary.update(command=command, machine=machine_summary(), load_before=load_before, load_after=_load(),
                   wall_minutes=(time.monotonic() - start) / 60)
    write_summary(summary, args.out_dir)
    setting = (f"`{command}`: {summary['wall_minutes']:.1f} min wall time on {summary['machine']}; "
               f"load average (1/5/15 min) {summary['load_before']} before, {summary['load_after']} after "
               "(the machine is shared with other developers' work)")
    markdown = os.path.join(args.out_dir, f"{SUMMARY_NAME}.md")
    with open(markdown, encoding="utf-8") as f:
        atomic_write_text(f"{setting}\n\n{f.read()}", markdown)
    print(setting)
    print(summary_table(summary))
    print(f"written to {markdown} and {SUMMARY_NAME}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
