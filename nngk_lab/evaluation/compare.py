"""Putting several evaluated runs side by side as a table (the bar chart is
:func:`nngk_lab.viz.comparison_figure`).

Each run is its save directory (or its ``metrics.json``). A run whose ``metrics.json``
is missing, or older than its checkpoint, is evaluated first with
:func:`nngk_lab.evaluation.evaluate_run`, so ``python -m nngk_lab.compare runs/nngk
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


def metric_columns(runs) -> list[tuple[str, str]]:
    """:data:`COLUMNS`, with a Recall@K column for every other K the runs were evaluated
    at (``evaluate --ks``), in order of K."""
    extra = {int(key.split("@")[1]) for m in named_runs(runs).values() for network in ("trained", "untrained")
             for key in m[network] if key.startswith("recall@")} - {int(k.split("@")[1]) for k, _ in COLUMNS
                                                                     if k.startswith("recall@")}
    last_recall = max(i for i, (key, _) in enumerate(COLUMNS) if key.startswith("recall@"))
    return [*COLUMNS[:last_recall + 1], *((f"recall@{k}", f"R@{k}") for k in sorted(extra)),
            *COLUMNS[last_recall + 1:]]


def comparison_rows(runs) -> list[list]:
    """One row per network: ``[name, loss, value per metric_columns(runs)...]`` (None where
    a metric is missing), each run's trained network followed by its untrained one.

    ``runs`` is a list of metrics dicts (named by :func:`run_names`) or a dict name -> metrics.
    """
    rows, columns = [], metric_columns(runs)
    for name, m in named_runs(runs).items():
        for network, label in (("trained", name), ("untrained", f"{name} (untrained)")):
            rows.append([label, m["loss"], *(m[network].get(key) for key, _ in columns)])
    return rows


def missing_notes(runs) -> list[str]:
    """Why a run's row has "-" cells: one line per such run."""
    notes = []
    for name, m in named_runs(runs).items():
        got = m["trained"]
        reasons = []
        if m.get("heldout_images") == 0:
            reasons.append("it was trained on every class, so no class was held out for retrieval (R@K, MAP@R, "
                           "NMI); train with a smaller --num_classes to measure them")
        elif any(key.startswith("recall@") for key in got):
            missing = [title for key, title in metric_columns(runs) if key.startswith("recall@") and key not in got]
            if missing:
                reasons.append(f"{', '.join(missing)} not measured (python -m nngk_lab.evaluate --ks chooses the K; "
                               "a K must be below the number of held-out images)")
            if "nmi" not in got:
                reasons.append("NMI skipped (python -m nngk_lab.evaluate --no_nmi)")
        if m.get("test_images") == 0:
            reasons.append("it kept no test images (--test_fraction 0), so no accuracy")
        if reasons:
            notes.append(f"- {name}: {'; '.join(reasons)}")
    return notes


def comparison_table(runs, markdown: bool = False) -> str:
    """The runs side by side as text, or as a Markdown table (``markdown=True``), with a
    line under it for each run with missing ("-") numbers, saying why."""
    columns = metric_columns(runs)
    header = ["run", "loss", *(title for _, title in columns)]
    body = [[name, loss, *("-" if v is None else f"{v:.4f}" for v in values)]
            for name, loss, *values in comparison_rows(runs)]
    notes = missing_notes(runs)
    notes = ["", *notes] if notes else []
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 2 + ["--:"] * len(columns)) + "|"]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in body] + notes)
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]

    def line(row: list[str]) -> str:  # names left-aligned, numbers right-aligned
        return "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))

    return "\n".join([line(row) for row in [header, *body]] + notes)
