"""Putting several evaluated runs side by side: a table and a bar chart.

Each run is its save directory (or its ``metrics.json``). A run whose ``metrics.json``
is missing, or older than its checkpoint, is evaluated first with
:func:`nngk_lab.evaluate.evaluate_run`, so ``python -m nngk_lab.compare runs/nngk
runs/softmax --out comparison.png`` works straight after training."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Sequence

from ..errors import CheckpointError
from ..training.runs import CHECKPOINT_NAME
from .run import METRICS_NAME, evaluate_run

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


def named_runs(runs) -> dict[str, dict]:
    return dict(runs) if isinstance(runs, Mapping) else dict(zip(run_names(runs), runs))


def comparison_rows(runs) -> list[list]:
    """One row per network: ``[name, loss, value per COLUMNS...]`` (None where a metric
    is missing), each run's trained network followed by its untrained one.

    ``runs`` is a list of metrics dicts (named by :func:`run_names`) or a dict name -> metrics.
    """
    rows = []
    for name, m in named_runs(runs).items():
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
