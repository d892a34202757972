"""Figures of the learnt kernel weights (see :mod:`nngk_lab.weights_study`): their
distribution, and the label-noise experiment's result."""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.figure import Figure

from .style import CORRECT_COLOUR, WRONG_COLOUR


def _weight_histogram(ax, log_weights: torch.Tensor, flipped: torch.Tensor | None, share: float) -> None:
    values = log_weights.detach().double().cpu().numpy()
    bins = np.linspace(values.min(), values.max(), 41) if values.max() > values.min() else 41
    if flipped is None:
        ax.hist(values, bins=bins, color="tab:blue")
        ax.set_ylabel("training images")
    else:
        mask = flipped.cpu().numpy()
        # Densities: the flipped images are a few percent, so counts would hide their shape.
        ax.hist(values[~mask], bins=bins, density=True, color=CORRECT_COLOUR, alpha=0.6,
                label=f"label kept ({(~mask).sum()})")
        ax.hist(values[mask], bins=bins, density=True, color=WRONG_COLOUR, alpha=0.6,
                label=f"label flipped ({mask.sum()})")
        ax.set_ylabel("density")
        ax.legend(fontsize=8)
    cut = np.sort(values)[max(1, int(np.ceil(share * len(values)))) - 1]
    ax.axvline(cut, color="black", linestyle="--", linewidth=1)
    ax.text(cut, ax.get_ylim()[1] * 0.95, f" lowest {share:.0%}", fontsize=8, va="top")
    ax.set_xlabel("learnt log-weight v (weight w = exp v; starts at 0)")


def weight_distribution(log_weights: torch.Tensor, title: str, share: float = 0.05) -> Figure:
    """Histogram of a run's learnt log-weights, with the lowest ``share`` marked."""
    fig = Figure(figsize=(6, 3), layout="constrained")
    ax = fig.subplots()
    _weight_histogram(ax, log_weights, None, share)
    values = log_weights.detach().double()
    ax.set_title(f"{title}\nlog-weights from {float(values.min()):+.4f} to {float(values.max()):+.4f}", fontsize=10)
    return fig


def label_noise_figure(log_weights: torch.Tensor, flipped: torch.Tensor, result: dict) -> Figure:
    """Left: learnt log-weights of the images whose label was kept and of those whose
    label was flipped. Right: the flipped share among the lowest-weighted images against
    the share expected by chance."""
    fig = Figure(figsize=(10, 3.3), layout="constrained")
    ax, bar_ax = fig.subplots(1, 2, width_ratios=[2, 1])
    _weight_histogram(ax, log_weights, flipped, result["share"])
    ax.set_title(f"learnt weights, {result['fraction']:.0%} of the labels flipped "
                 f"(weight learning rate {result['weight_learning_rate']:g})", fontsize=10)
    bars = bar_ax.bar([0, 1], [result["chance_share"], result["observed_share"]], color=["lightgrey", WRONG_COLOUR])
    bar_ax.set_xticks([0, 1], ["by chance", f"lowest {result['share']:.0%}"])
    bar_ax.bar_label(bars, [f"{result['chance_share']:.1%}",
                            f"{result['flipped_in_lowest']} of {result['lowest']}"], fontsize=8)
    bar_ax.set_ylim(0, 1.05)
    bar_ax.set_ylabel("share of flipped images")
    bar_ax.set_title(f"p = {result['p_value']:.2g} (hypergeometric)", fontsize=10)
    return fig
