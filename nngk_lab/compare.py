"""Putting several evaluated runs side by side: a table and a bar chart.

Each run is its save directory (or its ``metrics.json``). A run whose ``metrics.json``
is missing, or older than its checkpoint, is evaluated first with
:func:`nngk_lab.evaluate.evaluate_run`, so ``python -m nngk_lab.compare runs/nngk
runs/softmax --out comparison.png`` works straight after training.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Mapping, Sequence

from matplotlib.figure import Figure

from .errors import CheckpointError
from .evaluate import METRICS_NAME, evaluate_run
from .runs import CHECKPOINT_NAME

# (key in metrics.json, column title); accuracy is each method's own classifier.
COLUMNS = (("accuracy", "accuracy"), ("recall@1", "R@1"), ("recall@2", "R@2"), ("recall@4", "R@4"),
           ("recall@8", "R@8"), ("map@r", "MAP@R"), ("nmi", "NMI"))


def load_metrics(path, device="cpu", progress: bool = True) -> dict:
    """The metrics of one run: ``path`` is a run's save directory or a ``metrics.json``.

    A save directory whose ``metrics.json`` is missing or older than its checkpoint is
    evaluated first (which writes the file).
    """
    path = Path(path)
    if path.is_file():
        return _read(path)
    metrics_file, checkpoint = path / METRICS_NAME, path / CHECKPOINT_NAME
    if metrics_file.is_file() and not (checkpoint.is_file()
                                       and checkpoint.stat().st_mtime > metrics_file.stat().st_mtime):
        return _read(metrics_file)
    if not checkpoint.is_file():
        raise CheckpointError(f"{path} holds neither {METRICS_NAME} nor a trained run ({CHECKPOINT_NAME})")
    return evaluate_run(path, device=device, progress=progress)


def _read(path: Path) -> dict:
    try:
        metrics = json.loads(path.read_text())
        metrics["trained"], metrics["untrained"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path} is not a metrics file written by nngk_lab.evaluate ({e})") from e
    return metrics


def run_names(runs: Sequence[Mapping]) -> list[str]:
    """A short, unique name per run: its folder name, or the whole path where two clash."""
    short = [Path(m["save_dir"]).name for m in runs]
    return [s if short.count(s) == 1 else m["save_dir"] for s, m in zip(short, runs)]


def _as_named(runs) -> dict[str, dict]:
    return dict(runs) if isinstance(runs, Mapping) else dict(zip(run_names(runs), runs))


def comparison_rows(runs) -> list[list]:
    """One row per network: ``[name, loss, value per COLUMNS...]`` (None where a metric
    is missing), each run's trained network followed by its untrained one.

    ``runs`` is a list of metrics dicts (named by :func:`run_names`) or a dict name -> metrics.
    """
    rows = []
    for name, m in _as_named(runs).items():
        for network, label in (("trained", name), ("untrained", f"{name} (untrained)")):
            rows.append([label, m["loss"], *(m[network].get(key) for key, _ in COLUMNS)])
    return rows


def comparison_table(runs, markdown: bool = False) -> str:
    """The runs side by side as text, or as a Markdown table (``markdown=True``)."""
    header = ["run", "loss", *(title for _, title in COLUMNS)]
    body = [[name, loss, *("-" if v is None else f"{v:.4f}" for v in values)]
            for name, loss, *values in comparison_rows(runs)]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 2 + ["--:"] * len(COLUMNS)) + "|"]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in body])
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]

    def line(row: list[str]) -> str:  # names left-aligned, numbers right-aligned
        return "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))

    return "\n".join(line(row) for row in [header, *body])


def comparison_figure(runs, title: str | None = None) -> Figure:
    """Grouped bars, one group per metric and one bar per run's trained network; a black
    tick on each bar marks the untrained network's value, so the gain is visible."""
    named = _as_named(runs)
    keys = [(key, label) for key, label in COLUMNS
            if any(m["trained"].get(key) is not None for m in named.values())]
    fig = Figure(figsize=(3.0 + len(keys) * (0.6 + 0.3 * len(named)), 4.0))
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(named))
    for r, (name, m) in enumerate(named.items()):
        xs = [i - 0.4 + width * (r + 0.5) for i in range(len(keys))]
        trained = [_bar_value(m["trained"].get(key)) for key, _ in keys]
        untrained = [_bar_value(m["untrained"].get(key)) for key, _ in keys]
        ax.bar(xs, trained, width * 0.9, label=name if name == m["loss"] else f"{name} ({m['loss']})")
        ax.hlines(untrained, [x - width * 0.45 for x in xs], [x + width * 0.45 for x in xs],
                  colors="black", linewidth=2, label="untrained network" if r == 0 else None)
    ax.set_xticks(range(len(keys)), [label for _, label in keys])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("score")
    ax.set_title(title or "accuracy on trained classes, retrieval on held-out classes")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def _bar_value(value) -> float:
    return float("nan") if value is None else value


if __name__ == "__main__":
    from .cli import compare_main

    sys.exit(compare_main())
