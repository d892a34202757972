"""Figures about trained runs: training curves, sigma/K sweeps, a setting chosen on
validation classes and the embedding's distance scale against sigma. Like :mod:`nngk_lab.viz` (which re-exports them), every
function returns a :class:`matplotlib.figure.Figure` built without pyplot.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..explore.distance_scale import NeighbourDistances


def _zoomed_accuracy_limits(values: Sequence[float]) -> tuple[float, float]:
    # Accuracies near 1 would all sit on the top edge of a 0-1 axis; the margin keeps
    # a curve that reaches 1 visible.
    low = min(values)
    margin = max(0.1 * (1.0 - low), 0.002)
    return max(0.0, low - margin), 1.0 + margin


def training_curves(history: Sequence[dict]) -> Figure:
    """Per-epoch training loss, and training / test accuracies where the history has
    them, on an accuracy axis zoomed to the values."""
    if not history:
        raise ValueError("the history is empty: train at least one epoch")
    epochs = [h["epoch"] for h in history]
    fig = Figure(figsize=(10, 3.4), layout="constrained")
    loss_ax, acc_ax = fig.subplots(1, 2)
    loss_ax.plot(epochs, [h["loss"] for h in history], "o-")
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("mean -log p(y | x)")
    loss_ax.set_title("training loss", fontsize=10)
    plotted = []
    for key, label, style in (("train_accuracy", "train (augmented, averaged over the epoch)", "o-"),
                              ("kernel_accuracy", "test (kernel classifier)", "s-"),
                              ("nearest_neighbour_accuracy", "test (1-nearest centre)", "^--")):
        points = [(h["epoch"], h[key]) for h in history if key in h]
        if points:
            acc_ax.plot(*zip(*points), style, markersize=4, label=label)
            plotted += [p[1] for p in points]
    acc_ax.set_xlabel("epoch")
    acc_ax.set_ylabel("accuracy")
    if plotted:
        acc_ax.set_ylim(*_zoomed_accuracy_limits(plotted))
    acc_ax.set_title("accuracy (axis zoomed to the values)", fontsize=10)
    acc_ax.legend(fontsize=8, loc="lower right")
    for ax in (loss_ax, acc_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return fig


def _k_label(k: int, num_centres: int) -> str:
    return f"K = all {num_centres}" if k >= num_centres else f"K = {k}"


def _errors_axis(ax, num_test: int) -> None:
    # symlog: 0, 1, 2 errors stay readable next to a hundred.
    ax.set_yscale("symlog", linthresh=10, linscale=1.5)
    ticks = [t for t in (0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000) if t < num_test] + [num_test]
    ax.set_yticks(ticks, [str(t) for t in ticks])
    ax.set_yticks([], minor=True)
    ax.set_ylim(-0.3, num_test * 1.1)
    ax.set_ylabel(f"test errors (of {num_test} images)")


def _test_time_panel(ax, sweep: dict, title: str) -> None:
    # Both top panels draw the same lines in the same colours; the right one carries the legend.
    for k, row in zip(sweep["ks"], sweep["errors"]):
        ax.plot(sweep["sigmas"], row, "o-", markersize=3, label=_k_label(k, sweep["num_centres"]))
    ax.axvline(sweep["train_sigma"], color="grey", linestyle=":", label=f"training sigma ({sweep['train_sigma']:g})")
    ax.axvline(sweep["median_nearest_distance"], color="black", linestyle="--", linewidth=1,
               label="distance to the nearest centre (median)")
    ax.set_xscale("log")
    ax.set_xlabel("sigma of the classifier at test time")
    _errors_axis(ax, sweep["num_test"])
    ax.set_title(title, fontsize=10)


def sigma_sweep_figure(test_sweep: dict, untrained_sweep: dict, training_sweep: dict | None = None) -> Figure:
    """Test errors of the kernel classifier against its sigma, one line per K, on the
    trained embedding and on the untrained network's (:func:`nngk_lab.explore.test_time_sweep`).

    With ``training_sweep`` (short trainings at several sigmas,
    :func:`nngk_lab.explore.training_sigma_sweep`) a second row shows their test errors,
    and their held-out Recall@1 next to the trained and untrained embeddings' (retrieval
    ranks by distance alone, so sigma and K at test time do not change it)."""
    rows = 1 if training_sweep is None else 2
    fig = Figure(figsize=(11, 4 * rows), layout="constrained")
    axes = np.atleast_2d(fig.subplots(rows, 2))
    trained_ax, untrained_ax = axes[0]
    _test_time_panel(trained_ax, test_sweep, "trained embedding (notebook 2's run)")
    _test_time_panel(untrained_ax, untrained_sweep, "untrained network, same classifier")
    untrained_ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5))
    if training_sweep is None:
        return fig

    train_ax, recall_ax = axes[1]
    sigmas = training_sweep["sigmas"]
    epochs = "/".join(map(str, sorted(set(training_sweep["epochs"]))))
    for ax in (train_ax, recall_ax):
        ax.set_xscale("log")
        ax.set_xticks(sigmas, [f"{s:g}" for s in sigmas])
        ax.set_xticks([], minor=True)
        ax.set_xlabel("sigma used in training (and testing)")
    train_ax.plot(sigmas, training_sweep["errors"], "o-")
    _errors_axis(train_ax, training_sweep["num_test"])
    train_ax.set_title(f"one short training per sigma ({epochs} epochs): test errors", fontsize=10)
    recall_ax.plot(sigmas, training_sweep["heldout_recall_at_1"], "s-", label=f"short training ({epochs} epochs)")
    for sweep, label, style in ((test_sweep, "notebook 2's run", "--"), (untrained_sweep, "untrained network", ":")):
        recall_ax.axhline(sweep["heldout_recall_at_1"], color="black", linestyle=style, label=label)
    recall_ax.set_ylabel("held-out Recall@1")
    recall_ax.set_title("held-out classes: retrieval (no classifier, no sigma)", fontsize=10)
    recall_ax.legend(fontsize=8, loc="lower left")
    return fig


def validation_figure(sweep: dict) -> Figure:
    """A validation sweep (:func:`nngk_lab.explore.validation_sweep`): MAP@R and Recall@1
    among the validation classes, one point per seed for each value of the setting (a
    bar at their mean), and the untrained network of each seed as a dotted line."""
    values, seeds = sweep["values"], sweep["seeds"]
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    axes = fig.subplots(1, 2)
    offsets = np.linspace(-0.12, 0.12, len(seeds)) if len(seeds) > 1 else np.zeros(1)
    positions = np.arange(len(values))
    for ax, score, title in zip(axes, ("map@r", "recall@1"), ("MAP@R", "Recall@1 (near its ceiling)")):
        for j, (seed, offset) in enumerate(zip(seeds, offsets)):
            colour = f"C{j}"
            ax.plot(positions + offset, [row[j] for row in sweep[score]], "o", color=colour,
                    label=f"trained, seed {seed}")
            untrained = float(np.mean([row[j] for row in sweep["untrained"][score]]))
            ax.axhline(untrained, color=colour, linestyle=":", label=f"untrained network, seed {seed}")
        ax.hlines([float(np.mean(row)) for row in sweep[score]], positions - 0.25, positions + 0.25, color="black",
                  label="mean over seeds")
        ax.set_xticks(positions, [str(v) for v in values])
        ax.set_xlim(-0.6, len(values) - 0.4)
        ax.set_xlabel(sweep["setting"])
        ax.set_ylabel(f"{title.split()[0]} among the validation classes")
        ax.set_title(title, fontsize=10)
    # Recall@1 sits near 1: a zoomed axis would blow differences of one image up into a trend.
    lowest = min(min(row) for rows in (sweep["recall@1"], sweep["untrained"]["recall@1"]) for row in rows)
    axes[1].set_ylim(min(0.9, lowest - 0.02), 1.005)
    axes[1].legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.suptitle(f"trained on {', '.join(sweep['trained_classes'])} ({sweep['epochs']} epochs); retrieval among "
                 f"the validation classes {', '.join(sweep['validation_classes'])}", fontsize=10)
    return fig


def distance_histograms(panels: Sequence[tuple[NeighbourDistances, str]], sigma: float, bins: int = 60) -> Figure:
    """Histograms of squared distances from each centre to its k nearest same-class and
    k nearest other-class centres, one panel per embedding (e.g. before and after
    training), on a shared log axis, with d = sigma and d = 2 sigma marked and the kernel
    value ``exp(-d^2 / (2 sigma^2))`` there."""
    values = np.concatenate([np.concatenate([d.same.numpy().ravel(), d.other.numpy().ravel()]) for d, _ in panels])
    positive = values[values > 0]
    low = min(positive.min(), sigma ** 2) / 2 if positive.size else sigma ** 2 / 100
    high = max(values.max(), 4 * sigma ** 2) * 2
    edges = np.logspace(math.log10(low), math.log10(high), bins + 1)
    fig = Figure(figsize=(5.2 * len(panels), 3.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(panels), sharex=True))
    for ax, (distances, title) in zip(axes, panels):
        for data, label, colour in ((distances.same, "same class", "tab:green"),
                                    (distances.other, "other classes", "tab:red")):
            ax.hist(data.numpy().ravel().clip(low), bins=edges, color=colour, alpha=0.55,
                    label=f"to its {distances.k} nearest centres of {label}")
        for multiple, name, style in ((1, "sigma", "-"), (2, "2 sigma", ":")):
            d2 = (multiple * sigma) ** 2
            ax.axvline(d2, color="black", linestyle=style,
                       label=f"d = {name} (d\u00b2 = {d2:g}): kernel {math.exp(-multiple ** 2 / 2):.2f}")
        ax.set_xscale("log")
        ax.set_xlabel("squared distance d\u00b2 (log scale)")
        ax.set_title(title, fontsize=10)
    axes[0].set_ylabel("pairs (centre, neighbour)")
    fig.legend(handles=axes[0].get_legend_handles_labels()[0], loc="outside lower center", ncols=2, fontsize=8)
    return fig
