"""Figures of several evaluated runs side by side: the comparison bar chart
(:func:`nngk_lab.evaluation.comparison_table` is its table) and the time-to-accuracy
benchmark's figure."""

from __future__ import annotations

import math

from matplotlib.figure import Figure

from ..evaluation.compare import COLUMNS, named_runs


def comparison_figure(runs, title: str | None = None) -> Figure:
    """Grouped bars, one group per metric and one bar per run's trained network; a black
    tick on each bar marks the untrained network's value, so the gain is visible."""
    named = named_runs(runs)
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


def quality_figure(summary: dict) -> Figure:
    """Bars (mean, with ± std error bars) of each loss's seen-class 1-NN and kernel
    accuracy and held-out Recall@1 and MAP@R; a dashed line per metric marks the
    untrained network (its raw embedding)."""
    keys = [("nearest_neighbour_accuracy", "1-NN accuracy\n(trained classes)"),
            ("kernel_accuracy", "kernel accuracy\n(trained classes)"),
            ("recall@1", "Recall@1\n(held-out classes)"), ("map@r", "MAP@R\n(held-out classes)")]
    trained = [row for row in summary["rows"] if not row["name"].startswith("untrained")]
    untrained = next((row for row in summary["rows"] if row["name"] == "untrained"), None)
    fig = Figure(figsize=(10, 4.2))
    axes = fig.subplots(1, len(keys))
    for ax, (key, title) in zip(axes, keys):
        means = [_nan(row[key]["mean"]) for row in trained]
        stds = [row[key]["std"] or 0.0 for row in trained]
        ax.bar(range(len(trained)), means, yerr=stds, capsize=3, color=[f"C{i}" for i in range(len(trained))])
        if untrained is not None and untrained[key]["mean"] is not None:
            ax.axhline(untrained[key]["mean"], color="black", linestyle="--", linewidth=1, label="untrained")
        finite = [m for m in means if not math.isnan(m)] + ([untrained[key]["mean"]] if untrained else [])
        low = min((m for m in finite if m is not None), default=0.0)
        ax.set_ylim(max(0.0, low - 0.1), 1.0)
        ax.set_xticks(range(len(trained)), [row["name"] for row in trained], rotation=45, ha="right")
        ax.set_title(title, fontsize="medium")
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(loc="lower left", fontsize="small")
    fig.suptitle(f"{summary['minutes']} min per run, mean ± std over {summary['seeds']} seed(s)")
    fig.tight_layout()
    return fig


def _nan(value) -> float:
    return float("nan") if value is None else value
