"""``bench/bench_tune.py``'s table: one row per loss with its best setting, its validation
score (and the kit's default setting's, its first trial) and the held-out numbers of its
final runs as mean ± std over seeds (with ``--defaults``, a second row per loss for its
default setting); written as Markdown and JSON."""

from __future__ import annotations

import json
from pathlib import Path

from nngk_lab.evaluation.time_to_accuracy import mean_std, stat_cell
from nngk_lab.files import atomic_write_text

NAME = "bench_tune"
HEADER = ("loss", "trials", "setting", "val score", "val score of default", "held-out R@1", "held-out MAP@R",
          "seen accuracy")
# The final runs' metrics, in the table's order: held-out retrieval, then the method's own
# classifier on test images of the trained classes.
FINAL_KEYS = ("recall@1", "map@r", "accuracy")


def setting_text(params: dict) -> str:
    """A trial's parameters, short: floats to 3 significant digits."""
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def add_statistics(row: dict) -> dict:
    """The row with mean ± std over its runs of each of :data:`FINAL_KEYS`."""
    return {**row, **{key: mean_std([run[key] for run in row["runs"]]) for key in FINAL_KEYS}}


def table(summary: dict) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|---|--:|---|" + "--:|" * (len(HEADER) - 3)]
    for row in summary["rows"]:
        default = "-" if row["default_validation"] is None else f"{row['default_validation']:.4f}"
        name = row["loss"] + (" (default)" if row["setting"] == "default" else "")
        cells = [name, str(row["trials"]), setting_text(row["params"]), f"{row['validation']:.4f}",
                 default, *(stat_cell(row[key], 4) for key in FINAL_KEYS)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(summary: dict, out_dir: Path) -> str:
    """Write ``bench_tune.json`` and ``bench_tune.md`` in ``out_dir``; return the Markdown."""
    summary = {**summary, "rows": [add_statistics(row) for row in summary["rows"]]}
    budget = summary["budget"]
    per_run = " and ".join(part for part in (f"at most {budget['epochs']} epoch(s)",
                                             budget["minutes"] and f"{budget['minutes']} minutes") if part)
    folds = "; ".join(f"train {f['train_classes']}, validate {f['val_classes']}" for f in summary["folds"])
    setting = (f"`{summary['command']}`: {summary['wall_minutes']:.1f} min wall time on {summary['machine']}; "
               f"load average (1/5/15 min) {summary['load_before']} before, {summary['load_after']} after.\n\n"
               f"Data: {summary['data_dir'] or 'the embedded digits'}; trained classes {summary['trained_classes']}, "
               f"held-out classes {summary['heldout_classes']} (never in the search). "
               f"{budget['trials']} trials per loss, each one run per fold on {budget['folds']} validation fold(s) "
               f"({folds}), "
               f"scored by the mean validation {budget['objective']}; every run {per_run}. "
               f"The best setting of each loss{' (and its default)' if budget.get('defaults') else ''} then trained with seeds 0..{budget['seeds'] - 1} on all trained "
               "classes; held-out Recall@1 and MAP@R and the accuracy of the loss's own classifier on test images "
               "of the trained classes, mean ± std over seeds.")
    markdown = f"{setting}\n\n{table(summary)}\n"
    atomic_write_text(json.dumps(summary, indent=2), out_dir / f"{NAME}.json")
    atomic_write_text(markdown, out_dir / f"{NAME}.md")
    return markdown


def merge(paths: list[Path], out: Path) -> str:
    """One table of the rows of several ``bench_tune.json`` (e.g. the losses searched by
    two processes side by side, one core each); writes their summaries to ``out`` as JSON
    and returns the Markdown: each search's command and wall time, then the table."""
    summaries = [json.loads(Path(path).read_text()) for path in paths]
    commands = "\n".join(f"- `{s['command']}`: {s['wall_minutes']:.1f} min; load average {s['load_before']} before, "
                         f"{s['load_after']} after" for s in summaries)
    rows = {"rows": [row for s in summaries for row in s["rows"]]}
    atomic_write_text(json.dumps({"searches": summaries}, indent=2), out)
    return f"{commands}\n\n{table(rows)}\n"


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bench.tune_report",
                                     description="One table of several bench_tune.json files.")
    parser.add_argument("summaries", nargs="+", type=Path, help="bench_tune.json files")
    parser.add_argument("--out", type=Path, required=True, help="the merged JSON to write")
    args = parser.parse_args()
    print(merge(args.summaries, args.out))
